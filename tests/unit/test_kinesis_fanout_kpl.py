"""SubscribeToShard's lifetime, continuation, takeover and closed-shard end on a manual clock; KPL de-aggregation;
the event-stream framing as botocore decodes it."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from gateway.api import eventstream
from gateway.clock import ManualClock
from gateway.sinks.kinesis.exceptions import ResourceInUseException
from gateway.sinks.kinesis.extras import StreamExtras
from gateway.sinks.kinesis.fanout import Subscriptions
from gateway.sinks.kinesis.kpl import MAGIC, deaggregate, is_aggregated
from gateway.sinks.kinesis.service import KinesisService
from gateway.store import Store


@pytest.fixture
def setup() -> tuple[KinesisService, ManualClock, str]:
    clock = ManualClock()
    kinesis = KinesisService(Store(":memory:"), clock, "us-east-1", "123456789012", enforce_limits=False)
    kinesis.create_stream("s", 1)
    arn = kinesis.streams["s"].arn
    consumer = StreamExtras(kinesis).register_consumer(arn, "c")["Consumer"]["ConsumerARN"]
    return kinesis, clock, consumer


def collect(subscription: Any, clock: ManualClock, lifetime_ms: int, limit: int = 100) -> list[dict[str, Any]]:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    async def run() -> list[dict[str, Any]]:
        out = []
        async for event in subscription.events(clock.wall_ms, sleep, lifetime_ms):
            out.append(event)
            if len(out) >= limit:
                break
        return out

    return asyncio.run(run())


def test_subscription_ends_after_its_lifetime_with_heartbeats(setup: Any) -> None:
    kinesis, clock, consumer = setup
    subscription = Subscriptions(kinesis).open(consumer, "shardId-000000000000", {"Type": "LATEST"})
    events = collect(subscription, clock, lifetime_ms=12_000)
    # The first event at once, then an empty one every 5 s while nothing arrives; over at 12 s.
    assert len(events) == 3 and all(e["Records"] == [] for e in events)
    assert clock.wall_ms() - 1_700_000_000_000 >= 12_000


def test_continuation_numbers_resume_after_the_last_record(setup: Any) -> None:
    kinesis, clock, consumer = setup
    subs = Subscriptions(kinesis)
    sent = [kinesis.put_record("s", f"r{i}".encode(), "k")["SequenceNumber"] for i in range(3)]
    first = subs.open(consumer, "shardId-000000000000", {"Type": "TRIM_HORIZON"})
    events = collect(first, clock, lifetime_ms=1_000)
    assert [r["SequenceNumber"] for e in events for r in e["Records"]] == sent
    assert events[-1]["ContinuationSequenceNumber"] == sent[-1]
    subs.close(first)
    kinesis.put_record("s", b"r3", "k")
    clock.advance(5)
    again = subs.open(consumer, "shardId-000000000000", {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": sent[-1]})
    records = [r for e in collect(again, clock, lifetime_ms=1_000) for r in e["Records"]]
    assert len(records) == 1 and records[0]["SequenceNumber"] > sent[-1]


def test_a_second_subscription_within_5_s_is_refused_and_later_takes_over(setup: Any) -> None:
    kinesis, clock, consumer = setup
    subs = Subscriptions(kinesis)
    first = subs.open(consumer, "shardId-000000000000", {"Type": "LATEST"})
    clock.advance(4.9)
    with pytest.raises(ResourceInUseException):
        subs.open(consumer, "shardId-000000000000", {"Type": "LATEST"})
    clock.advance(0.1)
    second = subs.open(consumer, "shardId-000000000000", {"Type": "LATEST"})
    with pytest.raises(ResourceInUseException):
        collect(first, clock, lifetime_ms=60_000)
    assert collect(second, clock, lifetime_ms=1_000, limit=1)


def test_a_closed_shard_ends_with_its_children(setup: Any) -> None:
    kinesis, clock, consumer = setup
    kinesis.put_record("s", b"before", "k")
    kinesis.split_shard("s", "shardId-000000000000", str(2**127))
    subscription = Subscriptions(kinesis).open(consumer, "shardId-000000000000", {"Type": "TRIM_HORIZON"})
    events = collect(subscription, clock, lifetime_ms=60_000)
    assert [r["Data"] for e in events for r in e["Records"]] == ["YmVmb3Jl"]
    assert sorted(c["ShardId"] for c in events[-1]["ChildShards"]) == ["shardId-000000000001", "shardId-000000000002"]


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_kpl_aggregate_with_explicit_hash_keys() -> None:
    body = _field(1, b"pk-a") + _field(1, b"pk-b") + _field(2, b"12345")
    body += _field(3, _varint(8) + _varint(1) + _varint(16) + _varint(0) + _field(3, b"first"))
    body += _field(3, _varint(8) + _varint(0) + _field(3, b"second"))
    data = MAGIC + body + hashlib.md5(body).digest()
    assert is_aggregated(data)
    users = deaggregate(data, "outer")
    assert [(u.partition_key, u.explicit_hash_key, u.data, u.sub_sequence) for u in users] == [
        ("pk-b", "12345", b"first", 0),
        ("pk-a", None, b"second", 1),
    ]
    # A record index past the key table: not a valid aggregate, so the record comes back whole.
    bad = _field(1, b"k") + _field(3, _varint(8) + _varint(5) + _field(3, b"x"))
    whole = MAGIC + bad + hashlib.md5(bad).digest()
    assert [u.data for u in deaggregate(whole, "outer")] == [whole]


@given(st.binary(max_size=300))
def test_deaggregate_never_fails_on_arbitrary_bytes(noise: bytes) -> None:
    for data in (noise, MAGIC + noise + hashlib.md5(noise).digest()):
        users = deaggregate(data, "pk")
        assert users and all(isinstance(u.data, bytes) for u in users)


def test_event_stream_frames_decode_with_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(eventstream.event("SubscribeToShardEvent", {"Records": []}) + eventstream.exception("X", "boom"))
    first, second = list(buffer)
    assert first.headers[":event-type"] == "SubscribeToShardEvent" and first.payload == b'{"Records": []}'
    assert second.headers[":message-type"] == "exception" and second.headers[":exception-type"] == "X"
