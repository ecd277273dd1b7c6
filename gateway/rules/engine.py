"""The rules engine at runtime: per message, index lookup → compiled SQL → actions queued off the hot path."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from gateway.actions import cloudwatch as _cloudwatch  # noqa: F401 - registers the action types
from gateway.actions import dynamodb as _dynamodb  # noqa: F401 - registers the action type
from gateway.actions import firehose as _firehose  # noqa: F401 - registers the action type
from gateway.actions import http as _http  # noqa: F401 - registers the action type
from gateway.actions import kinesis as _kinesis  # noqa: F401 - registers the action type
from gateway.actions import lambda_ as _lambda  # noqa: F401 - registers the action type
from gateway.actions import republish as _republish  # noqa: F401 - registers the action type
from gateway.actions import s3 as _s3  # noqa: F401 - registers the action type
from gateway.actions import sqs as _sqs  # noqa: F401 - registers the action type
from gateway.actions.base import Action, StartsNow, make_action
from gateway.actions.sinks import ActionSinks
from gateway.clock import Clock
from gateway.messages import AckHold, Message
from gateway.rules import CompiledRule, EvalContext, compile_rule
from gateway.rules.index import RuleIndex
from gateway.rules.model import TopicRule
from gateway.rules.mqtt5 import sql_properties
from gateway.tasks import cancel_and_wait
from gateway.topics import split_basic_ingest

log = logging.getLogger("edgesim.rules")

# Actions whose result is not durable anyway (republish delivers like any publish): a QoS 1 PUBACK or an HTTP 200
# does not wait for them. Every other action (sinks) must commit, or fail into errorAction, before the acknowledgement.
ACK_WITHOUT_WAITING = frozenset({"republish"})
RECENT_ERRORS = 10
RECENT_INVOCATIONS = 20


class RecentInvocation:
    """One finished message through a rule; action resources are rendered only when someone asks."""

    __slots__ = ("ctx", "outcomes", "time_ms", "topic")

    def __init__(self, ctx: EvalContext, topic: str, time_ms: int, outcomes: list[tuple[Action, str | None]]) -> None:
        self.ctx = ctx
        self.topic = topic
        self.time_ms = time_ms
        self.outcomes = outcomes

    def to_json(self) -> dict[str, Any]:
        actions = []
        for action, error in self.outcomes:
            entry: dict[str, Any] = {
                "action": action.kind,
                "resource": _safe_resource(action, self.ctx),
                "ok": error is None,
            }
            if error is not None:
                entry["error"] = error
            actions.append(entry)
        return {"traceId": self.ctx.trace_id, "topic": self.topic, "timeMs": self.time_ms, "actions": actions}


@dataclass
class RuleMetrics:
    matched: int = 0
    fired: int = 0
    action_success: int = 0
    action_failure: int = 0
    error_actions: int = 0
    evaluation_errors: int = 0
    last_error: str | None = None
    last_error_ms: int | None = None
    # The dashboard's "last errors": newest last, each {timeMs, action, message, traceId}.
    recent_errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    # Each finished invocation's per-action outcome, newest last (`edgesim rules test --run` reads them).
    invocations: int = 0
    recent_invocations: deque[RecentInvocation] = field(default_factory=lambda: deque(maxlen=RECENT_INVOCATIONS))

    def record_error(self, now_ms: int, action: str, message: str, trace_id: str | None) -> None:
        self.last_error = f"{action}: {message}"
        self.last_error_ms = now_ms
        self.recent_errors.append({"timeMs": now_ms, "action": action, "message": message, "traceId": trace_id})

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["recent_errors"], out["recent_invocations"]
        return out


@dataclass
class RuleRuntime:
    rule: TopicRule
    compiled: CompiledRule
    actions: list[Action]
    error_action: Action | None
    metrics: RuleMetrics = field(default_factory=RuleMetrics)
    holds_ack: bool = False  # some action is durable: an acknowledged message waits for it (decided once, here)
    # Per action, its `begin` when it has one (StartsNow): looked up once here, not per message.
    starters: list[tuple[Action, Starter | None]] = field(default_factory=list)


class _Invocation:
    """One message through one rule: its actions' failures are gathered into a single errorAction message.

    A plain class with slots: one is made per matched message, so its construction is on the hot path."""

    __slots__ = ("ctx", "failures", "hold", "message", "outcomes", "pending", "runtime", "uncommitted")

    def __init__(self, runtime: RuleRuntime, message: Message, ctx: EvalContext, pending: int) -> None:
        self.runtime = runtime
        self.message = message
        self.ctx = ctx
        self.pending = pending
        self.failures: list[dict[str, str]] = []
        self.outcomes: list[tuple[Action, str | None]] = []  # (action, error or None), in finish order
        self.hold: AckHold | None = None  # the publisher's acknowledgement waits for this invocation's durable actions
        self.uncommitted = False  # a sink's commit failed: the publisher must not be acknowledged


Starter = Callable[[EvalContext, Any, Message], "asyncio.Future[None] | None"]

# One action to run for one invocation, with the rule's output: a plain tuple, made per action per message.
_Job = tuple[_Invocation, Action, Any]


class TraceIds:
    """UUID-shaped (version 4 layout) trace ids: a random prefix per engine and a counter.

    uuid4() per message costs an urandom call, a UUID object and its formatting; these only need to be unique
    per message and tie an errorAction document to the log lines, as AWS's cloudwatchTraceId does."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 10:
            raise ValueError("TraceIds needs 10 random bytes")
        h = seed[:10].hex()
        variant = "89ab"[int(h[15], 16) & 3]
        self._prefix = f"{h[0:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-"
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


def build_runtime(rule: TopicRule, sinks: ActionSinks) -> RuleRuntime:
    """Compile a rule's SQL and actions; SqlParseException and invalid actions surface here, before storing."""
    compiled = compile_rule(rule.sql, rule.sql_version)
    actions = [make_action(a.kind, a.fields, sinks) for a in rule.actions]
    error = make_action(rule.error_action.kind, rule.error_action.fields, sinks) if rule.error_action else None
    holds_ack = any(a.kind not in ACK_WITHOUT_WAITING for a in actions)
    starters: list[tuple[Action, Starter | None]] = [
        (a, cast(StartsNow, a).begin if hasattr(a, "begin") else None) for a in actions
    ]
    return RuleRuntime(rule, compiled, actions, error, holds_ack=holds_ack, starters=starters)


class RuleExecutor:
    """Runs one rule's actions for matched messages through bounded per-type queues and worker tasks."""

    def __init__(
        self, clock: Clock, queue_size: int = 50_000, workers_per_kind: int = 8192, action_timeout_s: float = 30.0
    ) -> None:
        self.clock = clock
        self.queue_size = queue_size
        self.workers_per_kind = workers_per_kind
        self.action_timeout_s = action_timeout_s
        self.queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: list[asyncio.Task[None]] = []
        # Per action type: workers started, and how many wait for a job. A durable action holds its worker until its
        # commit, so the workers bound the records in flight: started on demand, up to workers_per_kind.
        self._started: dict[str, int] = {}
        self._idle: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Actions started now and waiting for their sink's commit, per commit future.
        self._waiting: dict[asyncio.Future[None], list[tuple[_Invocation, Action, float]]] = {}
        self.dropped = 0
        # Per action type: successes, failures, and total run time, for /edgesim/actions/metrics.
        self.by_kind: dict[str, dict[str, float]] = {}

    def submit(self, inv: _Invocation, action: Action, output: Any) -> None:
        kind = action.kind
        queue = self.queues.get(kind)
        if queue is None:
            queue = self.queues[kind] = asyncio.Queue(self.queue_size)
            self._started[kind] = self._idle[kind] = 0
        try:
            queue.put_nowait((inv, action, output))
        except asyncio.QueueFull:
            self.dropped += 1
            inv.uncommitted = True  # not stored, so not acknowledged: the publisher sends it again
            self.finish(inv, action, f"the {kind} action queue is full ({self.queue_size}); message throttled", None)
            return
        if self._idle[kind] < queue.qsize() and self._started[kind] < self.workers_per_kind:
            self._started[kind] += 1
            self._workers.append(
                asyncio.get_running_loop().create_task(
                    self._work(kind, queue), name=f"rule-actions-{kind}-{self._started[kind]}"
                )
            )

    async def _work(self, kind: str, queue: asyncio.Queue[_Job]) -> None:
        idle = self._idle
        loop = asyncio.get_running_loop()
        while True:
            idle[kind] += 1
            try:
                inv, action, output = await queue.get()
            finally:
                idle[kind] -= 1
            error: str | None = None
            started = loop.time()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every action in a task of its own.
                async with asyncio.timeout(self.action_timeout_s):
                    await action.run(inv.ctx, output, inv.message)
            except Exception as exc:  # any failure of an action becomes an errorAction entry, never a crash
                error = str(exc) or exc.__class__.__name__
                if isinstance(exc, sqlite3.Error):
                    inv.uncommitted = True
            self.finish(inv, action, error, loop.time() - started)

    def begin(self, inv: _Invocation, action: Action, begin: Starter, output: Any) -> None:
        """The action's synchronous start; its commit's future finishes it. Queued for `run` when it cannot start
        now."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            committed = begin(inv.ctx, output, inv.message)
        except Exception as exc:  # a failure becomes an errorAction entry, never a crash
            if isinstance(exc, sqlite3.Error):
                inv.uncommitted = True
            self.finish(inv, action, str(exc) or exc.__class__.__name__, loop.time() - started)
            return
        if committed is None:
            self.submit(inv, action, output)
            return
        # One callback per commit, not per record: the records of a loop turn share their sink's commit future.
        waiting = self._waiting.get(committed)
        if waiting is None:
            waiting = self._waiting[committed] = []
            committed.add_done_callback(self._committed)
        waiting.append((inv, action, started))

    def _committed(self, done: asyncio.Future[None]) -> None:
        error = None
        exc: BaseException | None = asyncio.CancelledError() if done.cancelled() else done.exception()
        if exc is not None:
            error = str(exc) or exc.__class__.__name__
        now = done.get_loop().time()
        for inv, action, started in self._waiting.pop(done, ()):
            if exc is not None:
                inv.uncommitted = True  # the commit failed: nothing of it is durable
            self.finish(inv, action, error, now - started)

    def action_metrics(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for kind, figures in self.by_kind.items():
            runs = figures["success"] + figures["failure"]
            queue = self.queues.get(kind)
            out[kind] = {
                **figures,
                "mean_ms": 1000 * figures["seconds"] / runs if runs else 0.0,
                "queued": queue.qsize() if queue is not None else 0,
            }
        return out

    def finish(self, inv: _Invocation, action: Action, error: str | None, seconds: float | None) -> None:
        """One action of an invocation is over (after `seconds`; None: it never ran); the last one runs the
        errorAction (owned here, cancelled on stop()) and settles the publisher's acknowledgement."""
        if seconds is not None:
            figures = self.by_kind.get(action.kind)
            if figures is None:
                figures = self.by_kind[action.kind] = {"success": 0, "failure": 0, "seconds": 0.0}
            figures["success" if error is None else "failure"] += 1
            figures["seconds"] += seconds
        metrics = inv.runtime.metrics
        if error is None:
            metrics.action_success += 1
        else:
            metrics.action_failure += 1
            metrics.record_error(self.clock.wall_ms(), action.failed_action_name, error, inv.ctx.trace_id)
            log.warning(
                "rule %s: %s failed: %s",
                inv.runtime.rule.name,
                action.kind,
                error,
                extra=_log_fields(inv, action),
            )
            inv.failures.append(
                {
                    "failedAction": action.failed_action_name,
                    "failedResource": _safe_resource(action, inv.ctx),
                    "errorMessage": error,
                }
            )
        inv.outcomes.append((action, error))
        inv.pending -= 1
        if inv.pending:
            return
        metrics.invocations += 1
        metrics.recent_invocations.append(
            RecentInvocation(inv.ctx, inv.message.topic, self.clock.wall_ms(), inv.outcomes)
        )
        if inv.failures and inv.runtime.error_action is not None:
            task = asyncio.get_running_loop().create_task(self._error_then_settle(inv), name="rule-error-action")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            _settle(inv)

    async def _error_then_settle(self, inv: _Invocation) -> None:
        try:
            await self._run_error_action(inv)
        finally:
            _settle(inv)

    async def _run_error_action(self, inv: _Invocation) -> None:
        action = inv.runtime.error_action
        assert action is not None
        inv.runtime.metrics.error_actions += 1
        document = {
            "ruleName": inv.runtime.rule.name,
            "topic": inv.message.topic,
            "cloudwatchTraceId": inv.ctx.trace_id,
            "clientId": inv.message.client_id or "",
            "base64OriginalPayload": base64.b64encode(inv.message.payload).decode(),
            "failures": inv.failures,
        }
        try:
            async with asyncio.timeout(self.action_timeout_s):
                await action.run(inv.ctx, document, inv.message)
        except Exception as exc:  # AWS: a failing error action is only logged
            log.error(
                "rule %s: errorAction %s failed too: %s",
                inv.runtime.rule.name,
                action.kind,
                exc,
                extra=_log_fields(inv, action),
            )

    async def stop(self) -> None:
        await cancel_and_wait([*self._workers, *self._background])


def _settle(inv: _Invocation) -> None:
    if inv.hold is not None:
        if inv.uncommitted:
            inv.hold.fail()
        else:
            inv.hold.release()


def _log_fields(inv: _Invocation, action: Action) -> dict[str, Any]:
    """The fields that tie a log line to its message (and to the errorAction's cloudwatchTraceId); failures only."""
    return {
        "traceId": inv.ctx.trace_id,
        "rule": inv.runtime.rule.name,
        "action": action.kind,
        "topic": inv.message.topic,
        "clientId": inv.message.client_id,
    }


def _safe_resource(action: Action, ctx: EvalContext) -> str:
    try:
        return action.resource(ctx)
    except Exception:
        return action.kind


class ShadowReader(Protocol):
    """get_thing_shadow() in rule SQL reads the shadow service."""

    def get_thing_shadow(self, thing: str, shadow: str | None) -> bytes: ...


class RulesEngine:
    """Holds the live rules; the broker calls `on_message` for every message from every door."""

    def __init__(self, sinks: ActionSinks, shadows: ShadowReader, trace_seed: bytes | None = None) -> None:
        self.sinks = sinks  # what every installed rule's actions deliver to, chosen once at start-up
        self.clock = sinks.clock
        self.shadows = shadows
        self.trace_ids = TraceIds(trace_seed or os.urandom(10))
        self.index: RuleIndex[RuleRuntime] = RuleIndex()
        self.executor = RuleExecutor(sinks.clock)
        self.stats = {"messages": 0, "evaluation_errors": 0, "ingest_unknown_rule": 0}

    def install(self, runtime: RuleRuntime) -> None:
        if runtime.rule.disabled:
            self.index.put(runtime.rule.name, None, runtime)  # kept by name, never matched
        else:
            self.index.put(runtime.rule.name, runtime.compiled.topic_filter, runtime)

    def uninstall(self, name: str) -> None:
        self.index.remove(name)

    def on_message(self, message: Message) -> None:
        topic = message.topic
        if topic.startswith("$aws/rules/"):
            name, rest = split_basic_ingest(topic)
            runtime = self.index.get(name) if name else None
            if runtime is None or runtime.rule.disabled:
                self.stats["ingest_unknown_rule"] += 1
                return
            self._run(runtime, message, self._context(message, rest))
            return
        runtimes = self.index.match(topic)
        if not runtimes:
            return
        ctx = self._context(message, topic)
        for runtime in runtimes:
            self._run(runtime, message, ctx)

    def _context(self, message: Message, topic: str) -> EvalContext:
        named, pairs = sql_properties(message.properties)
        return EvalContext.for_message(
            payload=message.payload,
            topic=topic,
            client_id=message.client_id,
            principal=message.principal,
            timestamp_ms=message.received_ms,
            trace_id=self.trace_ids(),
            get_thing_shadow=self._get_thing_shadow,
            mqtt_properties=named,
            user_properties=pairs,
        )

    def _run(self, runtime: RuleRuntime, message: Message, ctx: EvalContext) -> None:
        self.stats["messages"] += 1
        metrics = runtime.metrics
        try:
            evaluation = runtime.compiled.evaluate(ctx)
        except Exception as exc:  # evaluation must never take the broker down
            self.stats["evaluation_errors"] += 1
            metrics.evaluation_errors += 1
            metrics.record_error(self.clock.wall_ms(), "evaluation", str(exc), ctx.trace_id)
            return
        if not evaluation.matched:
            return
        metrics.matched += 1
        if not runtime.actions:
            return
        metrics.fired += 1
        invocation = _Invocation(runtime, message, ctx, len(runtime.actions))
        if message.acknowledged and runtime.holds_ack:
            if message.hold is None:
                message.hold = AckHold()
            invocation.hold = message.hold
            message.hold.take()
        output = evaluation.output
        executor = self.executor
        for action, begin in runtime.starters:
            if begin is None:
                executor.submit(invocation, action, output)
            else:
                executor.begin(invocation, action, begin, output)

    def _get_thing_shadow(self, thing: str, shadow_name: str | None) -> Any:
        return json.loads(self.shadows.get_thing_shadow(thing, shadow_name))

    async def stop(self) -> None:
        await self.executor.stop()
