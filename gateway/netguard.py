"""Descriptors and noise under hostile load: the process's file-descriptor budget, per-listener connection caps
that keep some in reserve, and accept errors logged once a second with a count instead of a traceback each."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
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


def soft_descriptor_limit() -> int:
    if resource is None:
        return 1 << 20
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


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


_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

# How willing a listener is to close one of its connections to make room for a new one: lower goes first, None never.
Rank = Callable[[asyncio.BaseProtocol], int | None]


class CappedAccept:
    """Listening sockets with an accept loop of their own (asyncio's retries a failed accept up to its backlog times
    per turn, logging a traceback each): at most `limit` connections; a few set up at a time, so closing keeps pace
    with accepting and descriptors stay in reserve; a connection over the limit first makes room by closing the
    oldest connection of the lowest `rank` (a client that has not sent a whole request yet); when none may be
    closed it is refused. Accept failures are logged once a second with a count."""

    BURST = 16  # connections being set up at once
    RETRY_S = 0.1  # pause after running out of descriptors

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], limit: int, name: str, rank: Rank) -> None:
        self.factory = factory
        self.limit = limit
        self.name = name
        self.rank = rank
        self.sockets: list[socket.socket] = []
        self.evicted = 0
        self.refused = 0
        self._live: dict[asyncio.BaseTransport, asyncio.BaseProtocol] = {}  # in connect order
        self._pending: set[asyncio.Task[Any]] = set()
        self._next_prune = 64
        self._report = EveryOnceASecond(log, logging.WARNING)

    async def start(self, host: str, port: int, backlog: int = 4096) -> int:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, given in dict.fromkeys((i[0], i[1], i[2], "", i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            address = given
            if port == 0 and self.sockets:  # every address on the port the first one was given
                address = (given[0], self.sockets[0].getsockname()[1], *given[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                # Worded as asyncio words it, so the CLI can name the port and its flag.
                why = f"error while attempting to bind on address {address!r}: {exc.strerror}"
                raise OSError(exc.errno, why) from None
            sock.listen(backlog)
            sock.setblocking(False)
            self.sockets.append(sock)
            loop.add_reader(sock.fileno(), self._accept, sock)
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()

    @property
    def connections(self) -> int:
        self._prune()
        return len(self._live)

    def _prune(self) -> None:
        for transport in [t for t in self._live if t.is_closing()]:
            del self._live[transport]

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        made = 0
        while len(self._pending) + made < self.BURST:  # the rest wait for the next turn
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._report("%s: accepting a connection failed: %s", self.name, exc)
                if exc.errno in _OUT_OF_RESOURCES:
                    loop.remove_reader(sock.fileno())
                    loop.call_later(self.RETRY_S, self._resume, sock)
                return
            if not self._make_room():
                conn.close()
                continue
            conn.setblocking(False)
            make_transport = getattr(loop, "_make_socket_transport", None)
            if make_transport is not None:
                # The selector loop's own step, without connect_accepted_socket's task and future per connection
                # (a few percent of a connect storm's CPU); other loops take the public path below.
                try:
                    protocol = self.factory()
                    self._register(make_transport(conn, protocol), protocol)
                    made += 1
                except Exception as exc:  # a failed set-up costs that connection only
                    self._report("%s: setting up a connection failed: %s", self.name, exc)
                    conn.close()
                continue
            task = loop.create_task(loop.connect_accepted_socket(self.factory, conn))
            self._pending.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _make_room(self) -> bool:
        if len(self._live) + len(self._pending) < self.limit:
            return True
        self._prune()
        if len(self._live) + len(self._pending) < self.limit:
            return True
        best: tuple[int, asyncio.BaseTransport] | None = None
        for transport, protocol in self._live.items():  # oldest first: the first of the lowest rank wins
            rank = self.rank(protocol)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, transport)
                if rank == 0:
                    break
        if best is None:
            self.refused += 1
            self._report("%s: %d connections, none idle: a new one was refused", self.name, len(self._live))
            return False
        self.evicted += 1
        self._report(
            "%s: %d connections: closed an idle one (rank %d) for a new one", self.name, len(self._live), best[0]
        )
        del self._live[best[1]]
        best[1].abort()  # type: ignore[attr-defined]
        return True

    def _resume(self, sock: socket.socket) -> None:
        if sock in self.sockets:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _connected(self, conn: socket.socket, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            conn.close()
        elif task.exception() is not None:
            self._report("%s: setting up a connection failed: %s", self.name, task.exception())
            conn.close()
        else:
            self._register(*task.result())

    def _register(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol) -> None:
        self._live[transport] = protocol
        if len(self._live) >= self._next_prune:  # closed ones go in amortised O(1), not only at the limit
            self._prune()
            self._next_prune = max(64, 2 * len(self._live))
