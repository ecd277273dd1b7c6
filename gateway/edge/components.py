"""Greengrass-style local functions on the edge core: component config, what they may ask of the core, the runner.

Reference §11.1 (Lambda functions as components). Each component's work items wait in a FIFO queue of at most
`max_queue_size`. A pinned component has one long-lived worker process, started with the component, taking items one
at a time; an on-demand one starts workers as items arrive, up to `max_instances` running items concurrently, and
stops a worker left idle for `idle_timeout_s`. A worker still busy with an item at `timeout_s` is killed.

The core never stops because of a component: a worker that dies (crash, `os._exit`, an exception while importing the
handler) is counted as a crash and the next worker starts only after a backoff (0.5 s, doubling up to 30 s, back to
0.5 s once a worker completes an item); items wait in the queue meanwhile. The item running when a worker crashed or
timed out is counted as failed and not retried. A handler that raises is an error, and its worker stays.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.edge.component_worker_proc import Outcome, WorkerLost, WorkerProcess, log
from gateway.errors import InvalidRequestException
from gateway.topics import validate_topic_filter

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
_COUNTERS = ("invocations", "succeeded", "failed", "errors", "timeouts", "crashes", "restarts", "dropped")
_FAILURE_COUNTERS = {"error": "errors", "timeout": "timeouts"}  # crashes are counted when the worker exits

State = Literal["running", "backoff", "stopped"]
# Where the runner is in its own life: set by start() and stop(), whatever its workers do meanwhile.
Phase = Literal["installed", "starting", "started", "stopping", "stopped"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventSource(_Model):
    """Where a component's work items come from: local pub/sub, IoT Core, or (edgesim) the core's local broker."""

    topic: str
    type: Literal["PUB_SUB", "IOT_CORE", "LOCAL_MQTT"] = "PUB_SUB"

    @model_validator(mode="after")
    def _check_topic(self) -> EventSource:
        try:
            validate_topic_filter(self.topic)
        except InvalidRequestException as exc:
            raise ValueError(exc.message) from exc
        if self.type == "PUB_SUB" and ("+" in self.topic or "#" in self.topic):
            raise ValueError(
                f"PUB_SUB event source topics take no wildcards ('+' or '#'): {self.topic!r}; "
                "use type IOT_CORE or LOCAL_MQTT to subscribe with a topic filter"
            )
        return self


class ComponentConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    version: str = Field(default="1.0.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$")  # reported only
    handler: str  # "module.function", the module relative to the components folder (may be dotted)
    pinned: bool = False
    max_instances: int = Field(default=100, ge=1)  # on-demand only: a pinned component runs exactly one
    idle_timeout_s: float = Field(default=60, gt=0)
    timeout_s: float = Field(default=3, gt=0)
    max_queue_size: int = Field(default=1000, ge=1)
    environment: dict[str, str] = Field(default_factory=dict)
    event_sources: list[EventSource] = Field(default_factory=list)
    input_encoding: Literal["json", "binary"] = "json"

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        module, _, function = value.rpartition(".")
        if not all(part.isidentifier() for part in [*module.split("."), function]):
            raise ValueError(f"handler must be 'module.function' (the module may be dotted), got {value!r}")
        return value


class EdgeOps(Protocol):
    """What a component may ask the core to do (Greengrass IPC). Refusals raise `EdgesimError`; shadow operations
    raise `AwsError` subclasses, whose code and message reach the handler as `EdgeError`."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Local pub/sub (PublishToTopic)."""

    async def publish_to_iot_core(self, topic: str, payload: bytes, qos: int) -> None:
        """To the cloud through the durable spool (PublishToIoTCore); raises when the spool refuses it."""

    async def get_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        """The shadow document (JSON)."""

    async def update_thing_shadow(self, thing: str, shadow: str | None, payload: bytes) -> bytes:
        """The update's accepted response (JSON)."""

    async def delete_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        """The delete's accepted response (JSON)."""


class _Item(NamedTuple):
    topic: str
    payload: bytes


class ComponentRunner:
    """Runs one component's work items in worker processes (see the module docstring for the semantics)."""

    def __init__(
        self, config: ComponentConfig, code_dir: Path, ops: EdgeOps, on_change: Callable[[], None] | None = None
    ) -> None:
        """`on_change()` is called whenever `phase` changes, a worker crashes, or a worker serves an item after one
        crashed (the core reports component health on these)."""
        self.config = config
        self.phase: Phase = "installed"
        self.consecutive_crashes = 0  # worker crashes since a worker last served an item
        self._code_dir = code_dir.resolve()  # workers chdir into it: a relative path would not survive that
        self._ops = ops
        self._capacity = 1 if config.pinned else config.max_instances
        self._queue: deque[_Item] = deque()
        self._workers: set[WorkerProcess] = set()  # live ones
        self._idle: dict[WorkerProcess, asyncio.TimerHandle | None] = {}  # with the timer that stops it
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # wakes the dispatcher: an item, a worker freed or gone
        self._dispatcher: asyncio.Task[None] | None = None
        self._running = False
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._busy = 0
        self._last_error: str | None = None
        self._backoff_s = BACKOFF_START_S
        self._not_before = 0.0  # monotonic time before which no worker starts
        self._recovering = False  # a worker crashed and none has completed an item since
        self._on_change = on_change

    # ---- public

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._set_phase("starting")
        if self.config.pinned:
            worker = await self._spawn()
            if worker is not None:
                self._release(worker)
        self._dispatcher = asyncio.create_task(self._dispatch())
        self._set_phase("started")

    def submit(self, topic: str, payload: bytes) -> bool:
        """Queue a work item; False (counted as dropped) when the queue is full or the runner is stopped."""
        if not self._running or len(self._queue) >= self.config.max_queue_size:
            self._counters["dropped"] += 1
            return False
        self._queue.append(_Item(topic, payload))
        self._changed.set()
        return True

    async def stop(self) -> None:
        """Kill every worker; queued items are dropped, running ones count as failed."""
        self._running = False
        self._set_phase("stopping")
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        self._counters["dropped"] += len(self._queue)
        self._queue.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(worker.kill() for worker in list(self._workers)))
        self._set_phase("stopped")

    @property
    def state(self) -> State:
        if not self._running:
            return "stopped"
        return "backoff" if time.monotonic() < self._not_before else "running"

    @property
    def stats(self) -> dict[str, int | str | None]:
        return {
            **self._counters,
            "queued": len(self._queue),
            "instances": len(self._workers),
            "busy": self._busy,
            "last_error": self._last_error,
            "state": self.state,
            "consecutive_crashes": self.consecutive_crashes,
        }

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self._changed_health()

    def _changed_health(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # ---- dispatching

    async def _dispatch(self) -> None:
        while True:
            await self._dispatch_one()

    async def _dispatch_one(self) -> None:
        if not self.config.pinned:  # a pinned component keeps its worker up even with nothing to do
            await self._wait_until(lambda: bool(self._queue))
        worker = await self._acquire()
        await self._wait_until(lambda: bool(self._queue) or worker.finished)
        if not worker.finished:
            self._launch(self._run(self._queue.popleft(), worker))

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    async def _acquire(self) -> WorkerProcess:
        """An idle worker (the most recently used, so the others can idle out), or a new one when there is room."""
        while True:
            if self._idle:
                worker, timer = self._idle.popitem()
                if timer is not None:
                    timer.cancel()
                return worker
            if len(self._workers) < self._capacity:
                spawned = await self._spawn()
                if spawned is not None:
                    return spawned
            else:
                await self._wait_until(lambda: bool(self._idle) or len(self._workers) < self._capacity)

    async def _spawn(self) -> WorkerProcess | None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._recovering:
            self._counters["restarts"] += 1
        try:
            worker = await WorkerProcess.start(self.config, self._code_dir, self._ops, self._worker_exited)
        except WorkerLost:
            return None  # counted as a crash when it exited
        except OSError as exc:
            self._crashed(f"cannot start a worker: {exc}")
            return None
        self._workers.add(worker)
        return worker

    def _launch(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, item: _Item, worker: WorkerProcess) -> None:
        self._counters["invocations"] += 1
        self._busy += 1
        try:
            outcome = await worker.run(item.topic, item.payload)
        except asyncio.CancelledError:
            self._counters["failed"] += 1
            raise
        finally:
            self._busy -= 1
        self._record(outcome)
        if not worker.finished:
            self._release(worker)

    def _record(self, outcome: Outcome) -> None:
        if outcome.status in ("succeeded", "error"):  # the worker served the item: it is healthy
            self._backoff_s = BACKOFF_START_S
            self._recovering = False
            if self.consecutive_crashes:
                self.consecutive_crashes = 0
                self._changed_health()
        if outcome.status == "succeeded":
            self._counters["succeeded"] += 1
            return
        self._counters["failed"] += 1
        self._last_error = outcome.detail
        if outcome.status in _FAILURE_COUNTERS:
            self._counters[_FAILURE_COUNTERS[outcome.status]] += 1
        if outcome.status == "timeout":
            log.warning("[%s] %s; worker killed", self.config.name, outcome.detail)

    # ---- worker lifecycle

    def _release(self, worker: WorkerProcess) -> None:
        timer = None
        if not self.config.pinned:
            timer = asyncio.get_running_loop().call_later(self.config.idle_timeout_s, self._expire, worker)
        self._idle[worker] = timer
        self._changed.set()

    def _expire(self, worker: WorkerProcess) -> None:
        del self._idle[worker]  # its timer is cancelled whenever it leaves the idle set another way
        self._launch(worker.close())

    def _worker_exited(self, worker: WorkerProcess) -> None:
        self._workers.discard(worker)
        timer = self._idle.pop(worker, None)
        if timer is not None:
            timer.cancel()
        if not worker.expected_exit:
            self._crashed(worker.exit_reason)
        self._changed.set()

    def _crashed(self, reason: str) -> None:
        self._counters["crashes"] += 1
        self._last_error = reason
        delay = self._backoff_s
        self._not_before = time.monotonic() + delay
        self._backoff_s = min(delay * 2, BACKOFF_MAX_S)
        self._recovering = True
        self.consecutive_crashes += 1
        self._changed_health()
        log.error("[%s] %s; next worker in %g s", self.config.name, reason, delay)
