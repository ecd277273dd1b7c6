"""The rule path: trace ids, the collector's settings once a gateway is up, the action executor."""

from __future__ import annotations

import gc
import uuid

import pytest

from gateway.gcsettings import SWITCH_INTERVAL_S, THRESHOLDS, settle_after_startup
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
    import sys

    old, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        settle_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
        sys.setswitchinterval(interval)


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
    from gateway.rules.engine import RuleMetrics
    from gateway.rules.executor import Invocation, RuleExecutor

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
            inv = Invocation(runtime, message, EvalContext(payload=message.payload, topic="t"), 1)
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


def test_durable_actions_start_at_once_share_their_commit_and_fall_back_to_run_when_they_cannot() -> None:
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from gateway.messages import AckHold, Message
    from gateway.rules import EvalContext
    from gateway.rules.engine import RuleMetrics
    from gateway.rules.executor import Invocation, RuleExecutor

    class Sink:
        kind = "kinesis"
        failed_action_name = "KinesisAction"

        def __init__(self, commit: asyncio.Future[None]) -> None:
            self.commit = commit
            self.begun: list[bytes] = []
            self.ran: list[bytes] = []
            self.callbacks_before: int | None = None

        def resource(self, ctx: EvalContext) -> str:
            return "stream"

        def begin(self, ctx: EvalContext, output: Any, message: Message) -> asyncio.Future[None] | None:
            if message.payload == b"throttled":
                return None
            if message.payload == b"refused":
                raise ValueError("no such stream")
            self.begun.append(message.payload)
            return self.commit

        async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
            self.ran.append(message.payload)

    async def scenario() -> tuple[Sink, list[AckHold], int, dict[str, float]]:
        clock: Any = SimpleNamespace(wall_ms=lambda: 0)
        executor = RuleExecutor(clock)
        runtime: Any = SimpleNamespace(metrics=RuleMetrics(), rule=SimpleNamespace(name="r"), error_action=None)
        commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sink = Sink(commit)
        holds = []
        for payload in (b"a", b"b", b"throttled", b"refused", b"c"):
            message = Message(topic="t", payload=payload, qos=1, acknowledged=True)
            inv = Invocation(runtime, message, EvalContext(payload=payload, topic="t"), 1)
            inv.hold = hold = AckHold()
            hold.take()
            holds.append(hold)
            executor.begin(inv, sink, sink.begin, None)  # type: ignore[arg-type]
        callbacks = len(commit._callbacks or [])  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert [h.pending for h in holds] == [1, 1, 0, 0, 1]  # nothing durable is acknowledged before its commit
        commit.set_result(None)
        await asyncio.gather(*(h.settled() for h in holds))
        await executor.stop()
        return sink, holds, callbacks, executor.by_kind["kinesis"]

    sink, holds, callbacks, figures = asyncio.run(scenario())
    assert sink.begun == [b"a", b"b", b"c"] and sink.ran == [b"throttled"]
    assert callbacks == 1  # one callback on the shared commit, not one per record
    # A refused action is an errorAction entry (as on AWS, the message is still accepted); only a commit that
    # failed keeps the acknowledgement back (next test).
    assert [h.failed for h in holds] == [False] * 5
    assert figures["success"] == 4 and figures["failure"] == 1


def test_a_failed_shared_commit_fails_every_hold_that_waited_for_it() -> None:
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from gateway.messages import AckHold, Message
    from gateway.rules import EvalContext
    from gateway.rules.engine import RuleMetrics
    from gateway.rules.executor import Invocation, RuleExecutor

    async def scenario() -> list[bool]:
        clock: Any = SimpleNamespace(wall_ms=lambda: 0)
        executor = RuleExecutor(clock)
        runtime: Any = SimpleNamespace(metrics=RuleMetrics(), rule=SimpleNamespace(name="r"), error_action=None)
        commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        action: Any = SimpleNamespace(kind="sqs", failed_action_name="SqsAction", resource=lambda ctx: "q")
        holds = []
        for n in range(3):
            message = Message(topic="t", payload=b"%d" % n, qos=1, acknowledged=True)
            inv = Invocation(runtime, message, EvalContext(payload=message.payload, topic="t"), 1)
            inv.hold = hold = AckHold()
            hold.take()
            holds.append(hold)
            executor.begin(inv, action, lambda ctx, output, message: commit, None)
        commit.set_exception(OSError("disk full"))
        await asyncio.gather(*(h.settled() for h in holds))
        return [h.failed for h in holds]

    assert asyncio.run(scenario()) == [True, True, True]
