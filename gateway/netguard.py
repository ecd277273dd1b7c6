"""Descriptors and noise under hostile load: the process's file-descriptor budget, per-listener connection caps
that keep some in reserve, and accept errors logged once a second with a count instead of a traceback each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("edgesim.net")

# Descriptors no listener may take: the database and its WAL, log files, Lambda workers, outgoing sockets.
RESERVED_DESCRIPTORS = 64


def raise_descriptor_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (both kept as they are when that fails); returns the soft
    limit now in force."""
    if resource is None:
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return int(soft)


def descriptor_budget(soft_limit: int) -> int:
    """Connections every listener together may hold."""
    return max(16, soft_limit - max(RESERVED_DESCRIPTORS, soft_limit // 10))


class EveryOnceASecond:
    """Logs one line per second at most for a recurring event, with how many happened since the last line."""

    def __init__(self, logger: logging.Logger, level: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.clock = clock
        self.count = 0  # events since the last line
        self.total = 0
        self._last = float("-inf")

    def __call__(self, message: str, *args: Any) -> None:
        self.count += 1
        self.total += 1
        now = self.clock()
        if now - self._last >= 1.0:
            self._last = now
            self.logger.log(self.level, message + " (%d time(s) since the last report)", *args, self.count)
            self.count = 0


_ACCEPT_MESSAGES = ("socket.accept() out of system resource", "Error on transport creation for incoming connection")


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> EveryOnceASecond:
    """Accept failures (descriptors exhausted, a peer gone before its transport existed) become one WARNING line a
    second with a count; every other unhandled error still goes to the handler that was there before."""
    previous = loop.get_exception_handler()
    report = EveryOnceASecond(log, logging.WARNING)

    def handler(the_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message in _ACCEPT_MESSAGES:
            report("accepting a connection failed: %s", context.get("exception") or message)
            return
        if previous is not None:
            previous(the_loop, context)
        else:
            the_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return report
