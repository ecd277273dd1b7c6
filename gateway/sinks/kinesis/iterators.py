"""Kinesis shard iterators: signed self-describing tokens, 5-minute expiry and starting positions (pure)."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.sinks.kinesis.exceptions import ExpiredIteratorException, InvalidArgumentException
from gateway.sinks.kinesis.shards import SequenceNumbers, Shard, parse_sequence, shard_id

__all__ = [
    "ITERATOR_MAX_AGE_MS",
    "ITERATOR_TYPES",
    "IteratorState",
    "amz_utc_string",
    "decode_iterator",
    "encode_iterator",
    "position_for",
]

ITERATOR_MAX_AGE_MS = 300_000  # iterators expire after 5 minutes [D]
ITERATOR_TYPES = ("AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER", "AT_TIMESTAMP", "TRIM_HORIZON", "LATEST")

# Token = base64( version byte · "stream\nshardId\nposition\nissued_ms" · HMAC-SHA256(secret, version · payload) ).
# Stateless like AWS's (the server keeps nothing per iterator) but unforgeable: the MAC covers every field.
_VERSION = b"\x01"
_MAC_BYTES = 32
_MAX_ITERATOR_CHARS = 512  # ShardIterator is 1..512 characters in the API model [M]
_STREAM_RE = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_SHARD_RE = re.compile(r"shardId-\d{12}")
_INT_RE = re.compile(r"0|[1-9]\d{0,80}")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class IteratorState:
    """What an iterator says: read `shard_id` of `stream` from sequence number `position` on."""

    stream: str
    shard_id: str
    position: int
    issued_ms: int


def _invalid() -> InvalidArgumentException:
    return InvalidArgumentException("Invalid ShardIterator.")


def _mac(secret: bytes, blob: bytes) -> bytes:
    return hmac.new(secret, blob, hashlib.sha256).digest()


def encode_iterator(secret: bytes, stream: str, shard_id: str, position: int, issued_ms: int) -> str:
    """An opaque, tamper-evident iterator for a read position (a sequence number lower bound)."""
    if _STREAM_RE.fullmatch(stream) is None or _SHARD_RE.fullmatch(shard_id) is None:
        raise InvalidArgumentException(f"Cannot issue an iterator for stream {stream!r}, shard {shard_id!r}.")
    if position < 0 or issued_ms < 0:
        raise InvalidArgumentException("Iterator position and issue time must not be negative.")
    blob = _VERSION + f"{stream}\n{shard_id}\n{position}\n{issued_ms}".encode("ascii")
    return base64.b64encode(blob + _mac(secret, blob)).decode("ascii")


def decode_iterator(secret: bytes, text: str, now_ms: int, max_age_ms: int = ITERATOR_MAX_AGE_MS) -> IteratorState:
    """Verify and read an iterator: InvalidArgumentException if forged or garbled, ExpiredIteratorException if old.

    An iterator is still valid exactly max_age_ms after issue and expired one millisecond later (AWS: "further in the
    future than the tolerated delay").
    """
    if not isinstance(text, str) or not 0 < len(text) <= _MAX_ITERATOR_CHARS:
        raise _invalid()
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _invalid() from None
    if len(raw) <= len(_VERSION) + _MAC_BYTES:
        raise _invalid()
    blob, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, blob)) or not blob.startswith(_VERSION):
        raise _invalid()
    try:
        fields = blob[len(_VERSION) :].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise _invalid() from None
    if len(fields) != 4:
        raise _invalid()
    stream, shard, position, issued = fields
    if (
        _STREAM_RE.fullmatch(stream) is None
        or _SHARD_RE.fullmatch(shard) is None
        or _INT_RE.fullmatch(position) is None
        or _INT_RE.fullmatch(issued) is None
    ):
        raise _invalid()
    issued_ms = int(issued)
    if now_ms - issued_ms > max_age_ms:
        raise ExpiredIteratorException(
            f"Iterator expired. The iterator was created at time {amz_utc_string(issued_ms)} while right now it is "
            f"{amz_utc_string(now_ms)} which is further in the future than the tolerated delay of "
            f"{max_age_ms} milliseconds."
        )
    return IteratorState(stream, shard, int(position), issued_ms)


def amz_utc_string(epoch_ms: int) -> str:
    """Java's Date.toString in UTC, as AWS prints times in Kinesis messages: `Thu Dec 10 01:59:39 UTC 2015`."""
    t = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S} UTC {t.year}"


def position_for(
    iterator_type: str,
    shard: Shard,
    sequence_number: str | None,
    timestamp_ms: float | None,
    records: Sequence[tuple[int, float]],
    *,
    now_ms: int,
    stream_name: str,
    account_id: str,
) -> int:
    """GetShardIterator's starting position: the lowest sequence number the first GetRecords may return.

    `records` are the shard's retained records as (sequence number, arrival ms), ascending by sequence number with
    non-decreasing arrival times, so every lookup is a binary search.
    """
    if iterator_type not in ITERATOR_TYPES:
        raise InvalidArgumentException(
            f"1 validation error detected: Value '{iterator_type}' at 'shardIteratorType' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(ITERATOR_TYPES)}]"
        )
    by_sequence = iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
    if by_sequence and sequence_number is None:
        raise InvalidArgumentException(_sequence_rule(iterator_type, "no StartingSequenceNumber"))
    if not by_sequence and sequence_number is not None:
        raise InvalidArgumentException(_sequence_rule(iterator_type, "also a StartingSequenceNumber"))
    latest = records[-1][0] + 1 if records else shard.starting_sequence

    if iterator_type == "TRIM_HORIZON":
        return records[0][0] if records else shard.starting_sequence
    if iterator_type == "LATEST":
        return latest
    if iterator_type == "AT_TIMESTAMP":
        if timestamp_ms is None:
            raise InvalidArgumentException(
                "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. "
                "Current request has no timestamp parameter."
            )
        if timestamp_ms > now_ms:
            raise InvalidArgumentException(
                "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
                f"timestampInMillis: {int(timestamp_ms)}, currentTimestampInMillis: {now_ms}"
            )
        index = bisect.bisect_left(records, timestamp_ms, key=lambda r: r[1])
        return records[index][0] if index < len(records) else latest

    if sequence_number is None:  # unreachable (checked above); narrows the type without an assert
        raise InvalidArgumentException(_sequence_rule(iterator_type, "no StartingSequenceNumber"))
    value = _shard_sequence(sequence_number, shard, stream_name, account_id)
    return value if iterator_type == "AT_SEQUENCE_NUMBER" else value + 1


def _sequence_rule(iterator_type: str, what: str) -> str:
    return (
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or "
        "(2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
        f"Request specified {iterator_type} and {what}."
    )


def _shard_sequence(text: str, shard: Shard, stream_name: str, account_id: str) -> int:
    value = parse_sequence(text)
    prefix = f"StartingSequenceNumber {text} used in GetShardIterator on shard {shard.shard_id} in stream {stream_name}"
    try:
        parts = SequenceNumbers.parts(value)
    except InvalidArgumentException:
        raise InvalidArgumentException(f"{prefix} under account {account_id} is invalid.") from None
    if parts.shard_number != shard.number:
        raise InvalidArgumentException(
            f"Invalid StartingSequenceNumber. It encodes {shard_id(parts.shard_number)}, while it was used in a "
            f"call to a shard with {shard.shard_id}"
        )
    if parts.created_ms != shard.created_ms:
        raise InvalidArgumentException(
            f"{prefix} under account {account_id} is invalid because it did not come from this stream."
        )
    return value
