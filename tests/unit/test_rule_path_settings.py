"""Trace ids for rule invocations, and the collector's settings once a gateway is up."""

from __future__ import annotations

import gc
import uuid

import pytest

from gateway.gcsettings import THRESHOLDS, settle_after_startup
from gateway.rules.engine import TraceIds


def test_trace_ids_are_version_4_uuids_unique_per_message_and_per_seed() -> None:
    first = TraceIds(bytes(range(10)))
    ids = [first() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for text in ids[:3] + ids[-3:]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    other = TraceIds(bytes(range(1, 11)))
    assert other() not in ids


def test_trace_ids_refuse_a_short_seed() -> None:
    with pytest.raises(ValueError):
        TraceIds(b"short")


def test_settle_after_startup_freezes_survivors_and_sets_the_thresholds() -> None:
    old = gc.get_threshold()
    try:
        settle_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


def test_rule_index_matches_stay_true_across_puts_and_removes() -> None:
    from gateway.rules.index import CACHED_TOPICS, RuleIndex

    index: RuleIndex[str] = RuleIndex()
    index.put("a", "dt/+/temp", "A")
    assert index.match("dt/1/temp") == ["A"]
    index.put("b", "dt/#", "B")
    assert sorted(index.match("dt/1/temp")) == ["A", "B"]
    index.put("a", None, "A")  # disabled: kept by name, never matched
    assert index.match("dt/1/temp") == ["B"]
    index.remove("b")
    assert index.match("dt/1/temp") == []
    index.put("c", "#", "C")
    for n in range(CACHED_TOPICS + 10):  # more distinct topics than remembered: still right
        assert index.match(f"t/{n}") == ["C"]
    assert index.get("a") == "A" and len(index) == 2


def test_eval_context_for_message_is_the_same_context_as_the_constructor() -> None:
    from gateway.rules import EvalContext, compile_rule

    values = {"payload": b'{"n": 2}', "topic": "a/b", "client_id": "c", "timestamp_ms": 5, "trace_id": "t"}
    fast, slow = EvalContext.for_message(**values), EvalContext(**values)  # type: ignore[arg-type]
    assert fast == slow
    rule = compile_rule("SELECT n, clientid() AS c, traceid() AS t, topic(2) AS l FROM 'a/+'")
    assert rule.evaluate(fast) == rule.evaluate(slow)
    assert rule.evaluate(fast).output == {"n": 2, "c": "c", "t": "t", "l": "b"}
    with pytest.raises(TypeError):
        EvalContext.for_message(payload=b"", topic="t", nope=1)
    with pytest.raises(TypeError):
        EvalContext.for_message(payload=b"")


def test_an_action_queue_that_is_full_fails_the_hold_so_the_message_is_not_acknowledged() -> None:
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from gateway.messages import AckHold, Message
    from gateway.rules import EvalContext
    from gateway.rules.engine import RuleExecutor, RuleMetrics, _Invocation

    class SlowSink:
        kind = "kinesis"
        failed_action_name = "KinesisAction"

        def __init__(self) -> None:
            self.go = asyncio.Event()
            self.stored: list[bytes] = []

        def resource(self, ctx: EvalContext) -> str:
            return "stream"

        async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
            await self.go.wait()
            self.stored.append(message.payload)

    async def scenario() -> tuple[list[bool], list[bytes], int]:
        clock: Any = SimpleNamespace(wall_ms=lambda: 0)
        executor = RuleExecutor(clock, queue_size=2, workers_per_kind=1)
        runtime: Any = SimpleNamespace(metrics=RuleMetrics(), rule=SimpleNamespace(name="r"), error_action=None)
        sink = SlowSink()
        holds = []
        for n in range(4):
            message = Message(topic="t", payload=str(n).encode(), qos=1, acknowledged=True)
            inv = _Invocation(runtime, message, EvalContext(payload=message.payload, topic="t"), 1)
            inv.hold = hold = AckHold()
            hold.take()
            holds.append(hold)
            executor.submit(inv, sink, None)  # type: ignore[arg-type]
        sink.go.set()  # two jobs fit the queue; the other two were refused at once
        await asyncio.gather(*(h.settled() for h in holds))
        await executor.stop()
        return [h.failed for h in holds], sink.stored, executor.dropped

    failed, stored, dropped = asyncio.run(scenario())
    assert dropped == 2
    assert failed == [False, False, True, True]
    assert stored == [b"0", b"1"]
