"""Firehose buffering rules (size or interval, whichever first) and the S3 key layout, with fixed times."""

from __future__ import annotations

import gzip

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sinks.firehose.buffer import (
    MIB,
    BufferingHints,
    Pending,
    due_at,
    error_key,
    extension_for,
    object_key,
    plan_flush,
)
from gateway.sinks.firehose.writer import encode

T0 = 1_460_685_389_000  # 2016-04-15T01:56:29Z


def records(*sizes: int, start: int = T0, step_ms: int = 0) -> list[Pending]:
    return [Pending(i + 1, bytes([65 + i % 26]) * size, start + i * step_ms) for i, size in enumerate(sizes)]


def test_nothing_flushes_before_size_or_interval() -> None:
    hints = BufferingHints(1, 60)
    plan = plan_flush(records(10, 20), hints, T0 + 59_999)
    assert plan.batches == ()
    assert [r.seq for r in plan.remaining] == [1, 2]


def test_interval_flushes_everything_buffered() -> None:
    hints = BufferingHints(1, 60)
    pending = records(10, 20, step_ms=30_000)
    plan = plan_flush(pending, hints, T0 + 60_000)
    assert plan.batches == (tuple(pending),)
    assert plan.remaining == ()
    assert due_at(pending, hints) == T0 + 60_000
    assert due_at([], hints) is None


def test_interval_zero_flushes_at_once() -> None:
    pending = records(5)
    assert plan_flush(pending, BufferingHints(5, 0), T0).batches == (tuple(pending),)


def test_size_flushes_before_the_interval_and_never_overfills() -> None:
    hints = BufferingHints(1, 900)
    half = MIB // 2
    pending = records(half, half, half, 10)
    plan = plan_flush(pending, hints, T0)
    # First two reach exactly 1 MiB → one object; the rest waits for more data or the interval.
    assert [[r.seq for r in b] for b in plan.batches] == [[1, 2]]
    assert [r.seq for r in plan.remaining] == [3, 4]
    overfull = records(half + 1, half + 1, 1)
    plan = plan_flush(overfull, hints, T0)
    assert [[r.seq for r in b] for b in plan.batches] == [[1]]
    assert all(sum(len(r.data) for r in b) <= hints.size_bytes for b in plan.batches)


def test_force_flushes_the_tail() -> None:
    pending = records(1, 2)
    assert plan_flush(pending, BufferingHints(), T0, force=True).remaining == ()


def test_object_key_layout() -> None:
    key = object_key("logs/", "ds", 1, T0, "1234-uuid")
    assert key == "logs/2016/04/15/01/ds-1-2016-04-15-01-56-29-1234-uuid"
    assert object_key("", "ds", 3, T0, "u", ".gz") == "2016/04/15/01/ds-3-2016-04-15-01-56-29-u.gz"
    assert error_key("err/", "processing-failed", "ds", 1, T0, "u") == (
        "err/processing-failed/2016/04/15/01/ds-1-2016-04-15-01-56-29-u"
    )
    assert extension_for("GZIP") == ".gz"
    assert extension_for("UNCOMPRESSED") == ""
    assert extension_for("GZIP", ".json.gz") == ".json.gz"


def test_encode_concatenates_without_delimiter() -> None:
    pending = [Pending(1, b'{"a":1}', T0), Pending(2, b'{"b":2}', T0)]
    assert encode(pending, "UNCOMPRESSED") == b'{"a":1}{"b":2}'
    assert gzip.decompress(encode(pending, "GZIP")) == b'{"a":1}{"b":2}'


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 600 * 1024), max_size=30),
    steps=st.lists(st.integers(0, 120_000), min_size=1, max_size=8),
    size_mb=st.integers(1, 3),
    interval_s=st.integers(0, 300),
)
def test_no_record_lost_or_duplicated_across_flushes(
    sizes: list[int], steps: list[int], size_mb: int, interval_s: int
) -> None:
    hints = BufferingHints(size_mb, interval_s)
    incoming = records(*sizes, step_ms=1_000)
    now = T0
    buffer: list[Pending] = []
    delivered: list[Pending] = []
    fed = 0
    for step in steps:
        now += step
        while fed < len(incoming) and incoming[fed].arrival_ms <= now:
            buffer.append(incoming[fed])
            fed += 1
        plan = plan_flush(buffer, hints, now)
        for batch in plan.batches:
            assert batch, "an empty object is never written"
            assert len(batch) == 1 or sum(len(r.data) for r in batch) <= hints.size_bytes
            delivered.extend(batch)
        buffer = list(plan.remaining)
        assert sum(len(r.data) for r in buffer) < hints.size_bytes + 600 * 1024
        if interval_s == 0:
            assert buffer == []
    buffer.extend(incoming[fed:])
    delivered.extend(r for b in plan_flush(buffer, hints, now, force=True).batches for r in b)
    assert [r.seq for r in delivered] == [r.seq for r in incoming]
