"""Worker processes for Lambda handlers: a small warm pool per function, timeouts that really kill, crash recovery.

Each worker is `python worker.py <code dir> <handler>` speaking JSON lines over its stdin/stdout pipes. A handler that
hangs is killed at its timeout; one that exits (`os._exit`, a segfault) is noticed as EOF on the pipe. Either way the
worker is discarded and the next invocation starts a fresh one, so nothing a handler does reaches the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import EdgesimError

log = logging.getLogger("edgesim.lambda")

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
# Responses may be up to 6 MB of payload plus logs; one JSON line carries them.
PIPE_LIMIT = 32 * 1024 * 1024
# Environment variables passed through from the gateway so the interpreter works; everything else is the function's.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT", "VIRTUAL_ENV")


class WorkerGone(EdgesimError):
    """The worker exited before answering (crash, os._exit, killed)."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"worker exited with {returncode}")
        self.returncode = returncode


class WorkerTimedOut(EdgesimError):
    """The invocation ran past the function's timeout; the worker has been killed."""


@dataclass(eq=False)
class Worker:
    proc: asyncio.subprocess.Process
    revision: str
    log_stream: str = ""

    @classmethod
    async def spawn(
        cls, code_dir: Path, handler: str, env: Mapping[str, str], revision: str, script: Path = WORKER_SCRIPT
    ) -> Worker:
        """Start `python -u <script> <code dir> <handler>` (the edge core's components use their own script)."""
        full_env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        full_env.update(env)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            str(script),
            str(code_dir),
            handler,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=str(code_dir),
            limit=PIPE_LIMIT,
            start_new_session=True,  # a Ctrl-C to the gateway's terminal is the gateway's to handle, not the worker's
        )
        return cls(proc, revision)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def invoke(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerGone(await self._reap()) from exc
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError as exc:
            await self.kill()
            raise WorkerTimedOut() from exc
        except (ValueError, asyncio.LimitOverrunError) as exc:  # a line longer than the pipe limit
            await self.kill()
            raise WorkerGone(None) from exc
        if not line:
            raise WorkerGone(await self._reap())
        response: dict[str, Any] = json.loads(line)
        return response

    async def _reap(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        if self.proc.returncode is None:
            await self.kill()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the handler's own children go too
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    async def close(self) -> None:
        """Ask politely (EOF on stdin), then kill."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 1.0)
        await self.kill()


@dataclass
class Pool:
    """One function's workers: `busy` counts running invocations (the function's concurrency)."""

    idle: list[Worker] = field(default_factory=list)
    busy: int = 0

    async def close(self) -> None:
        workers, self.idle = self.idle, []
        for worker in workers:
            await worker.close()
