"""The rules engine at runtime: per message, index lookup → compiled SQL → its actions started (rules/executor.py)."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import deque
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
from gateway.messages import AckHold, Message
from gateway.rules import CompiledRule, EvalContext, compile_rule
from gateway.rules.executor import Invocation, RecentInvocation, RuleExecutor, Starter
from gateway.rules.index import RuleIndex
from gateway.rules.model import TopicRule
from gateway.rules.mqtt5 import sql_properties
from gateway.topics import split_basic_ingest

log = logging.getLogger("edgesim.rules")

# Actions whose result is not durable anyway (republish delivers like any publish): a QoS 1 PUBACK or an HTTP 200
# does not wait for them. Every other action (sinks) must commit, or fail into errorAction, before the acknowledgement.
ACK_WITHOUT_WAITING = frozenset({"republish"})
RECENT_ERRORS = 10
RECENT_INVOCATIONS = 20


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
        invocation = Invocation(runtime, message, ctx, len(runtime.actions))
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
