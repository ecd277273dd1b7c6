"""Stopping background tasks for sure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Self


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
    """`async with` a process part: `_start(stack)` starts its parts in order and registers each one's stop on the
    one AsyncExitStack as soon as that part is up, so leaving the block (or a start that fails half-way) stops
    exactly what started, in reverse order. The Gateway and the EdgeCore both run this way."""

    _stack: contextlib.AsyncExitStack | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


Job = Callable[[], Coroutine[Any, Any, None]]


def start_tasks(stack: contextlib.AsyncExitStack, jobs: dict[str, Job]) -> list[asyncio.Task[None]]:
    """Background loops, started together and cancelled together when the stack unwinds to this point."""
    tasks = [asyncio.create_task(job(), name=name) for name, job in jobs.items()]
    stack.push_async_callback(cancel_and_wait, tasks)
    return tasks
