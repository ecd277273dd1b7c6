"""Kinesis shard iterators: signed tokens, tampering, 5-minute expiry and the five iterator types."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sinks.kinesis.exceptions import ExpiredIteratorException, InvalidArgumentException
from gateway.sinks.kinesis.iterators import (
    ITERATOR_MAX_AGE_MS,
    IteratorState,
    amz_utc_string,
    decode_iterator,
    encode_iterator,
    position_for,
)
from gateway.sinks.kinesis.shards import SequenceNumbers, Shard, ShardMap

SECRET = b"s" * 32
T0 = 1_700_000_000_000
STREAM, ACCOUNT = "telemetry", "123456789012"

# --- encode / decode --------------------------------------------------------------------------------


@given(
    st.from_regex(r"[a-zA-Z0-9_.-]{1,128}", fullmatch=True),
    st.integers(0, 10**12 - 1),
    st.integers(0, 10**60),
    st.integers(0, 10**14),
    st.integers(0, ITERATOR_MAX_AGE_MS),
)
def test_round_trip(stream: str, number: int, position: int, issued: int, age: int) -> None:
    sid = f"shardId-{number:012d}"
    text = encode_iterator(SECRET, stream, sid, position, issued)
    assert 0 < len(text) <= 512
    assert decode_iterator(SECRET, text, issued + age) == IteratorState(stream, sid, position, issued)


def test_expiry_boundary_exactly_five_minutes() -> None:
    text = encode_iterator(SECRET, STREAM, "shardId-000000000000", 5, T0)
    assert decode_iterator(SECRET, text, T0 + 300_000).position == 5
    with pytest.raises(ExpiredIteratorException) as info:
        decode_iterator(SECRET, text, T0 + 300_001)
    assert info.value.http_status == 400
    assert info.value.code == "ExpiredIteratorException"
    assert info.value.message == (
        f"Iterator expired. The iterator was created at time {amz_utc_string(T0)} while right now it is "
        f"{amz_utc_string(T0 + 300_001)} which is further in the future than the tolerated delay of "
        "300000 milliseconds."
    )


def test_custom_max_age() -> None:
    text = encode_iterator(SECRET, STREAM, "shardId-000000000000", 5, T0)
    with pytest.raises(ExpiredIteratorException):
        decode_iterator(SECRET, text, T0 + 11, max_age_ms=10)


def test_amz_utc_string() -> None:
    assert amz_utc_string(1_449_712_779_000) == "Thu Dec 10 01:59:39 UTC 2015"


@pytest.mark.parametrize("garbage", ["", "!!!!", "AAAA", "x" * 600, "bm90IGFuIGl0ZXJhdG9y", "é"])
def test_garbage_is_invalid(garbage: str) -> None:
    with pytest.raises(InvalidArgumentException) as info:
        decode_iterator(SECRET, garbage, T0)
    assert info.value.message == "Invalid ShardIterator."


def test_wrong_secret_rejected() -> None:
    text = encode_iterator(SECRET, STREAM, "shardId-000000000000", 5, T0)
    with pytest.raises(InvalidArgumentException, match="Invalid ShardIterator"):
        decode_iterator(b"other-secret", text, T0)


@given(st.data())
def test_any_bit_flip_rejected(data: st.DataObject) -> None:
    raw = bytearray(base64.b64decode(encode_iterator(SECRET, STREAM, "shardId-000000000001", 123, T0)))
    index = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[index] ^= 1 << bit
    with pytest.raises(InvalidArgumentException):
        decode_iterator(SECRET, base64.b64encode(bytes(raw)).decode(), T0)


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(InvalidArgumentException):
        encode_iterator(SECRET, "bad\nname", "shardId-000000000000", 0, T0)
    with pytest.raises(InvalidArgumentException):
        encode_iterator(SECRET, STREAM, "shard-0", 0, T0)
    with pytest.raises(InvalidArgumentException):
        encode_iterator(SECRET, STREAM, "shardId-000000000000", -1, T0)


# --- starting positions --------------------------------------------------------------------------------


def _shard_and_records(count: int = 5) -> tuple[Shard, list[tuple[int, float]]]:
    shard = ShardMap.create(STREAM, ACCOUNT, 2, T0).open_shards[1]
    records = [(SequenceNumbers.for_shard(shard, 10 * (i + 1)), float(T0 + 1000 * i)) for i in range(count)]
    return shard, records


def _pos(
    kind: str,
    seq: str | None = None,
    ts: float | None = None,
    records: list[tuple[int, float]] | None = None,
    shard: Shard | None = None,
) -> int:
    s, r = _shard_and_records()
    return position_for(
        kind,
        shard or s,
        seq,
        ts,
        r if records is None else records,
        now_ms=T0 + 10_000,
        stream_name=STREAM,
        account_id=ACCOUNT,
    )


def test_trim_horizon_and_latest() -> None:
    shard, records = _shard_and_records()
    assert _pos("TRIM_HORIZON") == records[0][0]
    assert _pos("LATEST") == records[-1][0] + 1
    assert _pos("TRIM_HORIZON", records=[]) == shard.starting_sequence
    assert _pos("LATEST", records=[]) == shard.starting_sequence


def test_at_and_after_sequence_number() -> None:
    _, records = _shard_and_records()
    seq = records[2][0]
    assert _pos("AT_SEQUENCE_NUMBER", str(seq)) == seq
    assert _pos("AFTER_SEQUENCE_NUMBER", str(seq)) == seq + 1


@pytest.mark.parametrize(
    ("ts_offset", "index"),
    [(-5000, 0), (0, 0), (1, 1), (1000, 1), (2500, 3), (4000, 4), (4001, None), (9000, None)],
)
def test_at_timestamp(ts_offset: int, index: int | None) -> None:
    _, records = _shard_and_records()
    expected = records[index][0] if index is not None else records[-1][0] + 1
    assert _pos("AT_TIMESTAMP", ts=T0 + ts_offset) == expected


def test_at_timestamp_errors() -> None:
    with pytest.raises(InvalidArgumentException) as info:
        _pos("AT_TIMESTAMP")
    assert info.value.message == (
        "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. "
        "Current request has no timestamp parameter."
    )
    with pytest.raises(InvalidArgumentException) as info:
        _pos("AT_TIMESTAMP", ts=T0 + 20_000)
    assert info.value.message == (
        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
        f"timestampInMillis: {T0 + 20_000}, currentTimestampInMillis: {T0 + 10_000}"
    )


@pytest.mark.parametrize("kind", ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"])
def test_sequence_required(kind: str) -> None:
    with pytest.raises(InvalidArgumentException) as info:
        _pos(kind)
    assert info.value.message.endswith(f"Request specified {kind} and no StartingSequenceNumber.")


@pytest.mark.parametrize("kind", ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])
def test_sequence_not_allowed(kind: str) -> None:
    _, records = _shard_and_records()
    with pytest.raises(InvalidArgumentException) as info:
        _pos(kind, str(records[0][0]), ts=T0)
    assert info.value.message.startswith("Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER")
    assert info.value.message.endswith(f"Request specified {kind} and also a StartingSequenceNumber.")


def test_unknown_type() -> None:
    with pytest.raises(InvalidArgumentException, match="enum value set"):
        _pos("OLDEST")


def test_sequence_from_other_shard() -> None:
    other = ShardMap.create(STREAM, ACCOUNT, 2, T0).open_shards[0]
    seq = SequenceNumbers.for_shard(other, 3)
    with pytest.raises(InvalidArgumentException) as info:
        _pos("AT_SEQUENCE_NUMBER", str(seq))
    assert info.value.message == (
        "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was used in a call to a shard "
        "with shardId-000000000001"
    )


def test_sequence_from_other_stream_incarnation() -> None:
    seq = SequenceNumbers.make(T0 - 1, 1, 3)
    with pytest.raises(InvalidArgumentException, match="did not come from this stream"):
        _pos("AT_SEQUENCE_NUMBER", str(seq))


@pytest.mark.parametrize("seq", ["12345", "0"])
def test_sequence_not_ours(seq: str) -> None:
    with pytest.raises(InvalidArgumentException) as info:
        _pos("AFTER_SEQUENCE_NUMBER", seq)
    assert info.value.message == (
        f"StartingSequenceNumber {seq} used in GetShardIterator on shard shardId-000000000001 in stream {STREAM} "
        f"under account {ACCOUNT} is invalid."
    )


def test_sequence_malformed() -> None:
    with pytest.raises(InvalidArgumentException, match="regular expression pattern"):
        _pos("AT_SEQUENCE_NUMBER", "abc")
