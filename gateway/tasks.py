"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Self


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]] | Iterable[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until every one has finished.

    One `cancel()` is not always enough on Python 3.11: `asyncio.wait_for` swallows a cancellation that arrives as
    its inner awaitable completes (fixed in 3.12), and a worker loop then carries on to its next `await` for ever.
    So cancel again until they are all done.
    """
    every = list(tasks)
    pending = {task for task in every if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for task in every:
        if not task.cancelled():
            task.exception()  # retrieved, so a task that failed earlier does not warn at exit


class Lifecycle:
    """`async with` a process part: `_start()` it, and `_stop()` it on exit or when starting fails half-way
    (so `_stop` must cope with whatever `_start` got to)."""

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()
