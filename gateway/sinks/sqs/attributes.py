"""Validation of SQS queue, message and batch attributes (pure); the errors are in exceptions.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from gateway.sinks.sqs.exceptions import (
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    EmptyBatchRequest,
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidBatchEntryId,
    InvalidMessageContents,
    InvalidParameterValue,
    SqsError,
    TooManyEntriesInBatchRequest,
)

# --- limits and defaults (reference §8) ------------------------------------------------------------------------------

MAX_MESSAGE_SIZE = 1_048_576
MAX_MESSAGE_ATTRIBUTES = 10
MAX_BATCH_ENTRIES = 10
MAX_VISIBILITY_TIMEOUT = 43_200
MAX_DELAY_SECONDS = 900
MAX_WAIT_TIME_SECONDS = 20
DEDUP_WINDOW_MS = 5 * 60 * 1000
PURGE_INTERVAL_MS = 60 * 1000

_INT_RANGES: dict[str, tuple[int, int, int]] = {  # name: (minimum, maximum, default)
    "DelaySeconds": (0, MAX_DELAY_SECONDS, 0),
    "MaximumMessageSize": (1024, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE),
    "MessageRetentionPeriod": (60, 1_209_600, 345_600),
    "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT_TIME_SECONDS, 0),
    "VisibilityTimeout": (0, MAX_VISIBILITY_TIMEOUT, 30),
}
_FIFO_ONLY = ("FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit")
_PASSTHROUGH = (
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "RedriveAllowPolicy",
)
READ_ONLY_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
)
SYSTEM_ATTRIBUTE_NAMES = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_FIFO_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ATTR_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[^\x00-\x1f]+)?")
# Characters SQS accepts in bodies and string values (reference §8).
_INVALID_CHARS = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_GROUP_OR_DEDUP_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True, slots=True)
class MessageAttribute:
    """One message attribute: `DataType` plus exactly one of `StringValue` / `BinaryValue` (already decoded)."""

    data_type: str
    string_value: str | None = None
    binary_value: bytes | None = None

    def wire_size(self, name: str) -> int:
        """Bytes counted toward the message size: name, type and value."""
        value = self.binary_value if self.binary_value is not None else (self.string_value or "").encode()
        return len(name.encode()) + len(self.data_type.encode()) + len(value)


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    dead_letter_target_arn: str
    max_receive_count: int

    def to_json(self) -> str:
        return json.dumps(
            {"deadLetterTargetArn": self.dead_letter_target_arn, "maxReceiveCount": self.max_receive_count}
        )


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """The settable attributes of a queue, typed, with AWS's defaults."""

    fifo_queue: bool = False
    delay_seconds: int = 0
    maximum_message_size: int = MAX_MESSAGE_SIZE
    message_retention_period: int = 345_600
    receive_message_wait_time_seconds: int = 0
    visibility_timeout: int = 30
    redrive_policy: RedrivePolicy | None = None
    content_based_deduplication: bool = False
    deduplication_scope: str = "queue"
    fifo_throughput_limit: str = "perQueue"
    other: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, str]:
        """The attributes as GetQueueAttributes returns them (strings)."""
        out = {
            "DelaySeconds": str(self.delay_seconds),
            "MaximumMessageSize": str(self.maximum_message_size),
            "MessageRetentionPeriod": str(self.message_retention_period),
            "ReceiveMessageWaitTimeSeconds": str(self.receive_message_wait_time_seconds),
            "VisibilityTimeout": str(self.visibility_timeout),
            **self.other,
        }
        if self.redrive_policy is not None:
            out["RedrivePolicy"] = self.redrive_policy.to_json()
        if self.fifo_queue:
            out["FifoQueue"] = "true"
            out["ContentBasedDeduplication"] = str(self.content_based_deduplication).lower()
            out["DeduplicationScope"] = self.deduplication_scope
            out["FifoThroughputLimit"] = self.fifo_throughput_limit
        return out

    def updated(self, attrs: Mapping[str, str]) -> QueueAttributes:
        """SetQueueAttributes: validate `attrs` and return the new attributes (FifoQueue cannot change)."""
        if "FifoQueue" in attrs and _parse_bool("FifoQueue", attrs["FifoQueue"]) != self.fifo_queue:
            raise InvalidAttributeValue(
                "Invalid value for the parameter FifoQueue. Reason: Modifying queue type is not supported."
            )
        return _apply(self, attrs)


def _invalid(name: str, reason: str = "") -> SqsError:
    return InvalidAttributeValue(f"Invalid value for the parameter {name}." + (f" Reason: {reason}" if reason else ""))


def _parse_bool(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise _invalid(name)
    return value.lower() == "true"


def _parse_int(name: str, value: str) -> int:
    low, high, _ = _INT_RANGES[name]
    try:
        number = int(value)
    except ValueError:
        raise _invalid(name) from None
    if not low <= number <= high:
        raise _invalid(name)
    return number


def parse_redrive_policy(value: str, *, fifo: bool) -> RedrivePolicy:
    try:
        doc = json.loads(value)
    except ValueError:
        raise _invalid("RedrivePolicy", "Redrive policy is not a valid JSON map.") from None
    if not isinstance(doc, dict):
        raise _invalid("RedrivePolicy", "Redrive policy is not a valid JSON map.")
    for key in ("deadLetterTargetArn", "maxReceiveCount"):
        if key not in doc:
            raise _invalid("RedrivePolicy", f"Redrive policy does not contain mandatory attribute: {key}.")
    arn, count = doc["deadLetterTargetArn"], doc["maxReceiveCount"]
    try:
        count_int = int(count)
    except (TypeError, ValueError):
        count_int = 0
    if isinstance(count, bool) or not 1 <= count_int <= 1000:
        raise _invalid(
            "RedrivePolicy",
            f"Invalid value for maxReceiveCount: {count}, valid values are from 1 to 1000 both inclusive.",
        )
    if not isinstance(arn, str) or not arn.startswith("arn:") or arn.count(":") < 5:
        raise _invalid("RedrivePolicy", f"Invalid value for deadLetterTargetArn: {arn}.")
    if arn.endswith(".fifo") != fifo:
        raise _invalid("RedrivePolicy", "Dead-letter queue must be same type of queue as the source.")
    return RedrivePolicy(arn, count_int)


def _apply(base: QueueAttributes, attrs: Mapping[str, str]) -> QueueAttributes:
    changes: dict[str, object] = {}
    other = dict(base.other)
    for name, value in attrs.items():
        if name in _FIFO_ONLY and not base.fifo_queue:
            raise InvalidAttributeName(f"Unknown Attribute {name}.")
        if name in _INT_RANGES:
            changes[_snake(name)] = _parse_int(name, value)
        elif name == "RedrivePolicy":
            changes["redrive_policy"] = parse_redrive_policy(value, fifo=base.fifo_queue) if value else None
        elif name == "FifoQueue":
            pass  # checked by the caller
        elif name == "ContentBasedDeduplication":
            changes["content_based_deduplication"] = _parse_bool(name, value)
        elif name == "DeduplicationScope":
            if value not in ("queue", "messageGroup"):
                raise _invalid(name)
            changes["deduplication_scope"] = value
        elif name == "FifoThroughputLimit":
            if value not in ("perQueue", "perMessageGroupId"):
                raise _invalid(name)
            changes["fifo_throughput_limit"] = value
        elif name in _PASSTHROUGH:
            other[name] = value
        else:
            raise InvalidAttributeName(f"Unknown Attribute {name}.")
    result = replace(base, other=other, **changes)  # type: ignore[arg-type]
    if result.fifo_throughput_limit == "perMessageGroupId" and result.deduplication_scope == "queue":
        # High-throughput FIFO requires message-group deduplication scope.
        raise _invalid(
            "FifoThroughputLimit", "FifoThroughputLimit perMessageGroupId requires DeduplicationScope messageGroup."
        )
    return result


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def validate_queue_name(name: str, *, fifo: bool) -> None:
    if fifo and not _FIFO_QUEUE_NAME.fullmatch(name):
        raise InvalidParameterValue(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, "
            "must end with .fifo suffix and be 1 to 80 in length."
        )
    if not fifo and not _QUEUE_NAME.fullmatch(name):
        raise InvalidParameterValue(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
        )


def parse_queue_attributes(name: str, attrs: Mapping[str, str]) -> QueueAttributes:
    """CreateQueue: validate the queue name against `FifoQueue` and all attributes; return them with defaults."""
    fifo = _parse_bool("FifoQueue", attrs["FifoQueue"]) if "FifoQueue" in attrs else False
    if name.endswith(".fifo") and not fifo:
        raise InvalidParameterValue(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
        )
    validate_queue_name(name, fifo=fifo)
    return _apply(QueueAttributes(fifo_queue=fifo), attrs)


def validate_attribute_names(names: Iterable[str], *, queue: bool) -> None:
    """AttributeNames of GetQueueAttributes (`queue`) or ReceiveMessage (system attribute names)."""
    known: tuple[str, ...] = (
        (*_INT_RANGES, *_FIFO_ONLY, *_PASSTHROUGH, *READ_ONLY_ATTRIBUTES, "RedrivePolicy")
        if queue
        else SYSTEM_ATTRIBUTE_NAMES
    )
    for name in names:
        if name != "All" and name not in known:
            raise InvalidAttributeName(f"Unknown Attribute {name}.")


# --- message bodies and attributes ---------------------------------------------------------------------------------


def validate_text(value: str) -> None:
    if _INVALID_CHARS.search(value):
        raise InvalidMessageContents(
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | "
            "#xE000 to #xFFFD | #x10000 to #x10FFFF"
        )


def validate_message_attributes(attrs: Mapping[str, MessageAttribute], *, system: bool = False) -> int:
    """Check names, types and values of message (or system) attributes; return their size in bytes."""
    if len(attrs) > MAX_MESSAGE_ATTRIBUTES:
        raise InvalidParameterValue(
            f"Number of message attributes [{len(attrs)}] exceeds the allowed maximum [{MAX_MESSAGE_ATTRIBUTES}]."
        )
    size = 0
    for name, attr in attrs.items():
        if system:
            if name != "AWSTraceHeader":
                raise InvalidParameterValue(f"Message system attribute name '{name}' is invalid.")
            if attr.data_type != "String":
                raise InvalidParameterValue("The message system attribute AWSTraceHeader must be of type String.")
        else:
            _validate_attribute_name(name)
        _validate_attribute_value(name, attr)
        size += attr.wire_size(name)
    return size


def _validate_attribute_name(name: str) -> None:
    lowered = name.lower()
    if lowered.startswith(("aws.", "amazon.")):
        raise InvalidParameterValue(
            f"Message (user) attribute '{name}' is invalid. Reason: The message attribute name cannot start with "
            "'AWS.' or 'Amazon.' (case-insensitive)."
        )
    if not _ATTR_NAME.fullmatch(name) or name.startswith(".") or name.endswith(".") or ".." in name:
        raise InvalidParameterValue(
            f"Message (user) attribute name '{name}' is invalid. Reason: names may contain only alphanumeric "
            "characters, hyphens, underscores and periods, must not start or end with a period, "
            "must not contain consecutive periods and must be 1 to 256 characters long."
        )


def _validate_attribute_value(name: str, attr: MessageAttribute) -> None:
    match = _DATA_TYPE.fullmatch(attr.data_type)
    if not attr.data_type:
        raise InvalidParameterValue(f"The message attribute '{name}' must contain non-empty message attribute type.")
    if match is None or len(attr.data_type) > 256:
        raise InvalidParameterValue(
            f"The type of message (user) attribute '{name}' is invalid. You must use only the following supported "
            "type prefixes: Binary, Number, String."
        )
    base = match.group(1)
    if base == "Binary":
        if not attr.binary_value or attr.string_value is not None:
            raise InvalidParameterValue(
                f"The message attribute '{name}' with type 'Binary' must use field 'Binary'."
                if attr.string_value is not None
                else f"The message attribute '{name}' must contain non-empty message attribute value for "
                f"message attribute type '{attr.data_type}'."
            )
        return
    if attr.binary_value is not None:
        raise InvalidParameterValue(f"The message attribute '{name}' with type '{base}' must use field 'String'.")
    if not attr.string_value:
        raise InvalidParameterValue(
            f"The message attribute '{name}' must contain non-empty message attribute value for message attribute "
            f"type '{attr.data_type}'."
        )
    validate_text(attr.string_value)
    if base == "Number":
        try:
            number = Decimal(attr.string_value.strip())
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or len(number.as_tuple().digits) > 38:
            raise InvalidParameterValue(f"Can't cast the value of message (user) attribute '{name}' to a number.")


def validate_group_or_dedup_id(parameter: str, value: str) -> None:
    if not _GROUP_OR_DEDUP_ID.fullmatch(value):
        raise InvalidParameterValue(
            f"Value {value} for parameter {parameter} is invalid. Reason: {parameter} can only include alphanumeric "
            "and punctuation characters. 1 to 128 in length."
        )


# --- batches ---------------------------------------------------------------------------------------------------------


def validate_batch_ids(ids: Iterable[str], entry: str = "SendMessageBatchRequestEntry") -> None:
    """The checks every *Batch action makes on its entries' `Id`s, in AWS's order; `entry` names the action's
    entry shape in the empty-batch message (`DeleteMessageBatchRequestEntry`, ...)."""
    ids = list(ids)
    if not ids:
        raise EmptyBatchRequest(f"There should be at least one {entry} in the request.")
    if len(ids) > MAX_BATCH_ENTRIES:
        raise TooManyEntriesInBatchRequest(
            f"Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {len(ids)}."
        )
    for entry_id in ids:
        if not _BATCH_ID.fullmatch(entry_id):
            raise InvalidBatchEntryId(
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long."
            )
    seen: set[str] = set()
    for entry_id in ids:
        if entry_id in seen:
            raise BatchEntryIdsNotDistinct(f"Id {entry_id} repeated.")
        seen.add(entry_id)


def validate_batch_size(total_bytes: int, maximum: int = MAX_MESSAGE_SIZE) -> None:
    if total_bytes > maximum:
        raise BatchRequestTooLong(
            f"Batch requests cannot be longer than {maximum} bytes. You have sent {total_bytes} bytes."
        )
