"""Asynchronous invocation settings (EventInvokeConfig): validation, retry/age decisions and the invocation record.

Pure: plain data in and out, the time passed in. The Lambda service persists the config inside the function's JSON
config, checks that destinations exist, and sends the records this module builds.

AWS behaviour followed (docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html,
invocation-async-retain-records.html, API_PutFunctionEventInvokeConfig.html): a function error is retried
MaximumRetryAttempts times (0-2, default 2); an event older than MaximumEventAgeInSeconds (60-21600, default 6 h) is
discarded; a discarded or failed event goes to the OnFailure destination *and* the dead-letter queue when both are set
("You can configure destinations in addition to or instead of a dead-letter queue"); a successful one to OnSuccess.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import EdgesimError

DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_MAX_EVENT_AGE_S = 6 * 3600
RETRY_RANGE = (0, 2)
EVENT_AGE_RANGE = (60, 21600)
LATEST = "$LATEST"

Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]
DestinationKind = Literal["sqs", "lambda"]

_SQS_ARN = re.compile(r"arn:aws[a-zA-Z-]*:sqs:([a-z0-9-]+):(\d{12}):([a-zA-Z0-9_-]{1,80}(\.fifo)?)")
_LAMBDA_ARN = re.compile(r"arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([a-zA-Z0-9_-]{1,64})(:\$LATEST)?")
_ANY_ARN = re.compile(r"arn:aws[a-zA-Z-]*:([a-zA-Z0-9-]+):[^:]*:\d{0,12}:.+")


class EventInvokeConfigError(EdgesimError):
    """A bad PutFunctionEventInvokeConfig/UpdateFunctionEventInvokeConfig request (InvalidParameterValueException)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    arn: str
    name: str  # queue name or function name


@dataclass(frozen=True, slots=True)
class EventInvokeConfig:
    """One function's asynchronous invocation settings; unset members fall back to AWS's defaults."""

    last_modified_ms: int
    maximum_retry_attempts: int | None = None
    maximum_event_age_s: int | None = None
    on_success: str | None = None
    on_failure: str | None = None

    @property
    def retry_attempts(self) -> int:
        return DEFAULT_RETRY_ATTEMPTS if self.maximum_retry_attempts is None else self.maximum_retry_attempts

    @property
    def max_event_age_ms(self) -> int:
        age = DEFAULT_MAX_EVENT_AGE_S if self.maximum_event_age_s is None else self.maximum_event_age_s
        return age * 1000

    def to_wire(self, function_arn: str) -> dict[str, Any]:
        """The FunctionEventInvokeConfig shape; LastModified in epoch seconds, as the REST-JSON protocol sends it."""
        out: dict[str, Any] = {
            "LastModified": self.last_modified_ms / 1000,
            "FunctionArn": f"{function_arn}:{LATEST}",
            "DestinationConfig": {
                "OnSuccess": {"Destination": self.on_success} if self.on_success else {},
                "OnFailure": {"Destination": self.on_failure} if self.on_failure else {},
            },
        }
        if self.maximum_retry_attempts is not None:
            out["MaximumRetryAttempts"] = self.maximum_retry_attempts
        if self.maximum_event_age_s is not None:
            out["MaximumEventAgeInSeconds"] = self.maximum_event_age_s
        return out

    def destinations(self) -> list[str]:
        return [arn for arn in (self.on_success, self.on_failure) if arn]


DEFAULTS = EventInvokeConfig(last_modified_ms=0)  # a function without a config: 2 retries, 6 h maximum age


def parse_destination(arn: str, function_name: str) -> Destination:
    """An SQS queue or Lambda function ARN → Destination; anything else is refused with the reason."""
    if match := _SQS_ARN.fullmatch(arn):
        return Destination("sqs", arn, match.group(3))
    if match := _LAMBDA_ARN.fullmatch(arn):
        if match.group(3) == function_name:
            raise EventInvokeConfigError(
                f"edgesim does not accept a function as its own destination ({arn}): the records would loop"
            )
        return Destination("lambda", arn, match.group(3))
    if _ANY_ARN.fullmatch(arn):
        raise EventInvokeConfigError(
            f"edgesim supports only SQS queue and Lambda function destinations (arn:aws:sqs:... or "
            f"arn:aws:lambda:...:function:...); {arn} is not one"
        )
    raise EventInvokeConfigError(
        f"1 validation error detected: Value '{arn}' at 'destinationConfig.destination' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:.*"
    )


def _bounded(params: dict[str, Any], key: str, wire: str, bounds: tuple[int, int]) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventInvokeConfigError(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy constraint: "
            "Member must be of type integer"
        )
    if value < low:
        raise EventInvokeConfigError(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {low}"
        )
    if value > high:
        raise EventInvokeConfigError(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy constraint: "
            f"Member must have value less than or equal to {high}"
        )
    return value


def _destination(config: Any, side: str, function_name: str) -> tuple[bool, str | None]:
    """(given, arn) for OnSuccess/OnFailure; an empty or missing Destination clears that side."""
    if not isinstance(config, dict) or side not in config:
        return False, None
    entry = config[side]
    if entry is None:
        return True, None
    if not isinstance(entry, dict):
        raise EventInvokeConfigError(f"DestinationConfig.{side} must be an object with a Destination")
    arn = entry.get("Destination")
    if arn is None or arn == "":
        return True, None
    if not isinstance(arn, str):
        raise EventInvokeConfigError(f"DestinationConfig.{side}.Destination must be a string")
    parse_destination(arn, function_name)
    return True, arn


def put_event_invoke_config(params: dict[str, Any], function_name: str, now_ms: int) -> EventInvokeConfig:
    """PutFunctionEventInvokeConfig: the whole config is replaced; settings left out are removed (AWS API doc)."""
    destination_config = params.get("DestinationConfig")
    return EventInvokeConfig(
        last_modified_ms=now_ms,
        maximum_retry_attempts=_bounded(params, "MaximumRetryAttempts", "maximumRetryAttempts", RETRY_RANGE),
        maximum_event_age_s=_bounded(params, "MaximumEventAgeInSeconds", "maximumEventAgeInSeconds", EVENT_AGE_RANGE),
        on_success=_destination(destination_config, "OnSuccess", function_name)[1],
        on_failure=_destination(destination_config, "OnFailure", function_name)[1],
    )


def update_event_invoke_config(
    existing: EventInvokeConfig, params: dict[str, Any], function_name: str, now_ms: int
) -> EventInvokeConfig:
    """UpdateFunctionEventInvokeConfig: only the settings given change (OnSuccess and OnFailure each on its own)."""
    retries = _bounded(params, "MaximumRetryAttempts", "maximumRetryAttempts", RETRY_RANGE)
    age = _bounded(params, "MaximumEventAgeInSeconds", "maximumEventAgeInSeconds", EVENT_AGE_RANGE)
    destination_config = params.get("DestinationConfig")
    success_given, on_success = _destination(destination_config, "OnSuccess", function_name)
    failure_given, on_failure = _destination(destination_config, "OnFailure", function_name)
    return EventInvokeConfig(
        last_modified_ms=now_ms,
        maximum_retry_attempts=existing.maximum_retry_attempts if retries is None else retries,
        maximum_event_age_s=existing.maximum_event_age_s if age is None else age,
        on_success=on_success if success_given else existing.on_success,
        on_failure=on_failure if failure_given else existing.on_failure,
    )


def event_invoke_config_from_dict(data: dict[str, Any] | None) -> EventInvokeConfig | None:
    """The stored form (dataclasses.asdict of EventInvokeConfig inside the function's JSON config) → the config."""
    return None if data is None else EventInvokeConfig(**data)


# ---- retry and age decisions
def expired(created_ms: int, now_ms: int, max_event_age_ms: int) -> bool:
    """An event older than the maximum event age is discarded instead of run (condition EventAgeExceeded)."""
    return now_ms - created_ms > max_event_age_ms


def after_function_error(
    *, invocations: int, retry_attempts: int, created_ms: int, now_ms: int, delay_ms: int, max_event_age_ms: int
) -> Condition | None:
    """None → retry after `delay_ms`; otherwise the condition that ends the event.

    `invocations` counts the attempt that just failed. A retry that would only start after the event has passed its
    maximum age is not scheduled: the event ends now as EventAgeExceeded (AWS would drop it when the age is reached;
    deciding here keeps the last response for the record).
    """
    if invocations > retry_attempts:
        return "RetriesExhausted"
    if expired(created_ms, now_ms + delay_ms, max_event_age_ms):
        return "EventAgeExceeded"
    return None


# ---- the invocation record
@dataclass(frozen=True, slots=True)
class Outcome:
    """How an asynchronous event ended, for its invocation record."""

    request_id: str
    function_arn: str  # unqualified
    condition: Condition
    invocations: int
    event_text: str
    response_payload: bytes | None = None  # None: the function never ran (the event expired in the queue)
    function_error: str | None = None


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def invocation_record(outcome: Outcome, now_ms: int) -> dict[str, Any]:
    """The JSON AWS sends to a destination (invocation-async-retain-records.html, aws-cdk lambda-destinations README).

    A record for an event that was never run carries no responseContext/responsePayload (unconfirmed: AWS documents
    only records of events that ran).
    """
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": _iso_ms(now_ms),
        "requestContext": {
            "requestId": outcome.request_id,
            "functionArn": f"{outcome.function_arn}:{LATEST}",
            "condition": outcome.condition,
            "approximateInvokeCount": outcome.invocations,
        },
        "requestPayload": _json_or_text(outcome.event_text),
    }
    if outcome.response_payload is not None:
        context: dict[str, Any] = {"statusCode": 200, "executedVersion": LATEST}
        if outcome.function_error:
            context["functionError"] = outcome.function_error
        record["responseContext"] = context
        record["responsePayload"] = _json_or_text(outcome.response_payload.decode("utf-8", "replace"))
    return record
