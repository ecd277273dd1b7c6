"""HTTP listeners against slow and hostile clients: header and body deadlines, a connection cap that makes room by
closing connections that have not sent a whole request, and aiohttp's malformed-request tracebacks made one line."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway import limits
from gateway.errors import AwsError, RequestEntityTooLargeException
from gateway.netguard import EveryOnceASecond

log = logging.getLogger("edgesim.api")

MAX_BODY_BYTES = 16 * 1024 * 1024
HEADER_TIMEOUT_S = limits.HTTP_HEADER_TIMEOUT_S  # from connect (or the previous response) to a whole request head
BODY_TIMEOUT_S = limits.HTTP_BODY_TIMEOUT_S  # to read a whole request body
BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)


class RequestTimeoutException(AwsError):
    code = "RequestTimeoutException"
    http_status = 408


async def read_body(request: web.Request) -> bytes:
    """The request body, read within the listener's body deadline and size limit (AWS errors otherwise)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large()
    timeout = request.config_dict.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT_S)
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise RequestTimeoutException(f"The request body was not received within {timeout:g} seconds") from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None


def _too_large() -> RequestEntityTooLargeException:
    return RequestEntityTooLargeException(f"The request body exceeds the maximum size of {MAX_BODY_BYTES} bytes")


class _Refused(asyncio.Protocol):
    """Stands in for a connection the listener has no room for: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class CappedListener:
    """An aiohttp server's listening sockets with an accept loop of its own: at most `limit` connections, a few
    accepted per event-loop turn (so closing keeps pace with accepting and descriptors stay in reserve), and a
    connection over the limit first makes room by closing the oldest one that is not serving a request (a slow or
    idle client); when every one is busy it is refused. Accept failures are logged once a second with a count."""

    BURST = 16  # connections being set up at once
    RETRY_S = 0.1  # pause after running out of descriptors

    def __init__(self, server: web.Server, limit: int, name: str) -> None:
        self.server = server
        self.limit = limit
        self.name = name
        self.sockets: list[socket.socket] = []
        self.evicted = 0
        self.refused = 0
        self._report = EveryOnceASecond(log, logging.WARNING)
        self._pending: set[asyncio.Task[object]] = set()

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
            sock.bind(address)
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

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while len(self._pending) < self.BURST:  # the rest wait for these to be set up (or refused) first
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
            conn.setblocking(False)
            protocol = self._protocol()
            task = loop.create_task(loop.connect_accepted_socket(lambda p=protocol: p, conn))  # type: ignore[misc]
            self._pending.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _resume(self, sock: socket.socket) -> None:
        if sock in self.sockets:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _connected(self, conn: socket.socket, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._report("%s: setting up a connection failed: %s", self.name, task.exception())
            conn.close()

    def _protocol(self) -> asyncio.BaseProtocol:
        connections = [h for h in self.server.connections if h.transport is not None]  # not those closing
        if len(connections) >= self.limit:
            idle = next((h for h in connections if not getattr(h, "_request_in_progress", True)), None)
            if idle is None:
                self.refused += 1
                self._report("%s: %d connections, all busy: a new one was refused", self.name, len(connections))
                return _Refused()
            self.evicted += 1
            self._report("%s: %d connections: closed the oldest idle one for a new one", self.name, len(connections))
            idle.force_close()
        return self.server()


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs every unparsable request at ERROR with a traceback; a client's garbage is worth one INFO line
    (and at most one a second)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self._last = -1.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.seen += 1
        if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
            return False
        now = record.created
        if now - self._last < 1.0:
            return False
        self._last = now
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "malformed HTTP request refused with 400: %s", (exc.message or type(exc).__name__,)
        record.exc_info = record.exc_text = None
        return True


MALFORMED_REQUESTS = _MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if MALFORMED_REQUESTS not in logger.filters:
        logger.addFilter(MALFORMED_REQUESTS)
