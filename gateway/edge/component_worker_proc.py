"""The core's side of one component worker process: spawning it, the JSON-lines conversation, the calls it serves.

One JSON object per line, bytes as base64. Core -> worker (its stdin): ``invoke`` (one work item, with a deadline) and
``reply`` (the answer to a call: ``payload``, or ``error`` ``{code, message}``). Worker -> core (its stdout): ``ready``
(handler imported), ``fatal`` (it could not be, sent just before exiting), ``log`` (a line of handler output),
``call`` (an `EdgeOps` operation the handler waits on) and ``done`` (the item finished; ``error`` if the handler
raised). EOF on the worker's stdout means it exited. The process is spawned and killed (process group) with the Lambda
runner's `Worker`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway.errors import AwsError, EdgesimError, InvalidRequestException
from gateway.sinks.lambda_.runner import Worker

if TYPE_CHECKING:
    from gateway.edge.components import ComponentConfig, EdgeOps

log = logging.getLogger("edgesim.edge.components")

WORKER_SCRIPT = Path(__file__).with_name("component_worker.py")
STARTUP_TIMEOUT_S = 30.0  # importing a handler's dependencies may be slow; a hung import still counts as a crash

Message = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """How one work item ended; `detail` says why when it did not succeed."""

    status: Literal["succeeded", "error", "timeout", "crashed"]
    detail: str | None = None


class WorkerLost(EdgesimError):
    """The worker exited (or was killed) before it was ready."""


class WorkerProcess:
    """One live worker. `on_exit` is called once when the process has gone, whatever the reason."""

    def __init__(
        self, worker: Worker, config: ComponentConfig, ops: EdgeOps, on_exit: Callable[[WorkerProcess], None]
    ) -> None:
        self._worker = worker
        self._config = config
        self._ops = ops
        self._on_exit = on_exit
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[bool] = loop.create_future()
        self._pending: asyncio.Future[Message | None] | None = None  # the running item's `done`; None if lost
        self._calls: set[asyncio.Task[None]] = set()
        self._fatal: str | None = None
        self.expected_exit = False  # stopped by the core (idle, timeout, shutdown): not a crash
        self.finished = False
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def start(
        cls, config: ComponentConfig, code_dir: Path, ops: EdgeOps, on_exit: Callable[[WorkerProcess], None]
    ) -> WorkerProcess:
        """Spawn a worker and wait until its handler is imported; `WorkerLost` if it dies first."""
        worker = await Worker.spawn(code_dir, config.handler, config.environment, "", script=WORKER_SCRIPT)
        proc = cls(worker, config, ops, on_exit)
        try:
            ready = await asyncio.wait_for(proc._ready, STARTUP_TIMEOUT_S)
        except TimeoutError:
            await proc._stop(f"worker not ready within {STARTUP_TIMEOUT_S:g} s")
            ready = False
        except asyncio.CancelledError:
            await proc.kill()
            raise
        if not ready:
            raise WorkerLost(proc.exit_reason)
        return proc

    @property
    def pid(self) -> int:
        return self._worker.proc.pid

    @property
    def exit_reason(self) -> str:
        if self._fatal is not None:
            return self._fatal
        code = self._worker.proc.returncode
        if code is not None and code < 0:
            return f"worker killed by {signal.Signals(-code).name}"
        return f"worker exited with code {code}"

    async def run(self, topic: str, payload: bytes) -> Outcome:
        """Run one work item; past the component's timeout the worker is killed."""
        if self.finished:
            return Outcome("crashed", self.exit_reason)
        pending = self._pending = asyncio.get_running_loop().create_future()
        timeout_s = self._config.timeout_s
        request_id = str(uuid.uuid4())
        await self._send(
            {
                "type": "invoke",
                "id": request_id,
                "topic": topic,
                "payload": base64.b64encode(payload).decode("ascii"),
                "encoding": self._config.input_encoding,
                "function_name": self._config.name,
                "deadline_ms": int((time.time() + timeout_s) * 1000),
            }
        )
        try:
            done = await asyncio.wait_for(pending, timeout_s)
        except TimeoutError:
            await self.kill()
            return Outcome("timeout", f"work item {request_id} timed out after {timeout_s:g} s")
        if done is None:
            return Outcome("crashed", self.exit_reason)
        error = done.get("error")
        if error is None:
            return Outcome("succeeded")
        detail = f"{error['type']}: {error['message']}"
        log.error("[%s] handler raised %s\n%s", self._config.name, detail, error["trace"].rstrip("\n"))
        return Outcome("error", detail)

    async def kill(self) -> None:
        """Kill the worker (process group) now; not a crash."""
        self.expected_exit = True
        await self._stop(None)

    async def close(self) -> None:
        """Let an idle worker exit (EOF on its stdin), killing it if it lingers; not a crash."""
        self.expected_exit = True
        await self._worker.close()
        await asyncio.shield(self._reader)

    async def _stop(self, reason: str | None) -> None:
        if reason is not None:
            self._fatal = reason
        await self._worker.kill()
        await asyncio.shield(self._reader)  # a cancelled caller must not cancel the reader: it reports the exit

    async def _read_loop(self) -> None:
        stdout = self._worker.proc.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                self._handle(json.loads(line))
        except (ValueError, KeyError, TypeError, asyncio.LimitOverrunError) as exc:  # not our protocol, or too long
            self._fatal = f"worker broke the protocol: {exc!r}"
            await self._worker.kill()
        await self._worker.close()  # stdout is at EOF: reap the process (and kill it if it lingers)
        self._finish()

    def _handle(self, message: Message) -> None:
        kind = message["type"]
        if kind == "log":
            level = logging.getLevelNamesMapping().get(message["level"], logging.INFO)
            log.log(level, "[%s] %s", self._config.name, message["text"])
        elif kind == "ready":
            if not self._ready.done():
                self._ready.set_result(True)
        elif kind == "fatal":
            self._fatal = message["message"]
        elif kind == "call":
            task = asyncio.create_task(self._serve(message))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        elif kind == "done" and self._pending is not None and not self._pending.done():
            self._pending.set_result(message)

    def _finish(self) -> None:
        self.finished = True
        for call in list(self._calls):
            call.cancel()
        if not self._ready.done():
            self._ready.set_result(False)
        if self._pending is not None and not self._pending.done():
            self._pending.set_result(None)
        self._on_exit(self)

    async def _serve(self, call: Message) -> None:
        reply: Message = {"type": "reply", "id": call["id"]}
        try:
            result = await _perform(self._ops, call["op"], call["args"])
            reply["payload"] = base64.b64encode(result).decode("ascii")
        except AwsError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except EdgesimError as exc:
            reply["error"] = {"code": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # a failing operation must fail the handler's call, not the conversation
            log.exception("[%s] edge call %s failed", self._config.name, call["op"])
            reply["error"] = {"code": "InternalFailureException", "message": str(exc)}
        await self._send(reply)

    async def _send(self, message: Message) -> None:
        stdin = self._worker.proc.stdin
        assert stdin is not None
        if stdin.is_closing():
            return  # the worker has gone: the reader reports it
        stdin.write(json.dumps(message).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await stdin.drain()


async def _perform(ops: EdgeOps, op: str, args: Message) -> bytes:
    """Run one `EdgeOps` call the worker asked for; publishes answer with no bytes."""
    shadow: str | None = args.get("shadow")
    match op:
        case "publish":
            await ops.publish(args["topic"], base64.b64decode(args["payload"]))
            return b""
        case "publish_to_iot_core":
            await ops.publish_to_iot_core(args["topic"], base64.b64decode(args["payload"]), int(args["qos"]))
            return b""
        case "get_thing_shadow":
            return await ops.get_thing_shadow(args["thing"], shadow)
        case "update_thing_shadow":
            return await ops.update_thing_shadow(args["thing"], shadow, base64.b64decode(args["payload"]))
        case "delete_thing_shadow":
            return await ops.delete_thing_shadow(args["thing"], shadow)
    raise InvalidRequestException(f"Unknown edge operation {op!r}")
