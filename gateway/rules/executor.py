"""Rule actions at runtime: durable local sinks start at once and wait for their commit; the others run on
bounded per-type queues with workers. The last action of an invocation runs the errorAction and settles the
publisher's acknowledgement."""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.actions.base import Action
from gateway.clock import Clock
from gateway.messages import AckHold, Message
from gateway.rules import EvalContext
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.rules.engine import RuleRuntime

log = logging.getLogger("edgesim.rules")


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


class Invocation:
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
_Job = tuple[Invocation, Action, Any]


class RuleExecutor:
    """Runs the rules' actions for matched messages: a durable local action starts at once and finishes with its
    sink's commit; the others (and a durable one that cannot start now) go through bounded per-type queues and
    worker tasks."""

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
        self._waiting: dict[asyncio.Future[None], list[tuple[Invocation, Action, float]]] = {}
        self.dropped = 0
        # Per action type: successes, failures, and total run time, for /edgesim/actions/metrics.
        self.by_kind: dict[str, dict[str, float]] = {}

    def submit(self, inv: Invocation, action: Action, output: Any) -> None:
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

    def begin(self, inv: Invocation, action: Action, begin: Starter, output: Any) -> None:
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

    def finish(self, inv: Invocation, action: Action, error: str | None, seconds: float | None) -> None:
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

    async def _error_then_settle(self, inv: Invocation) -> None:
        try:
            await self._run_error_action(inv)
        finally:
            _settle(inv)

    async def _run_error_action(self, inv: Invocation) -> None:
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


def _settle(inv: Invocation) -> None:
    if inv.hold is not None:
        if inv.uncommitted:
            inv.hold.fail()
        else:
            inv.hold.release()


def _log_fields(inv: Invocation, action: Action) -> dict[str, Any]:
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
