"""The client's transport: one asyncio protocol per connection with TLS done over memory BIOs, and one keep-alive
ticker per event loop. Kept apart from the MQTT logic in mqttwire/client.py."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol, cast

__all__ = ["Connection", "Owner", "Ticking", "keepalive"]


class Owner(Protocol):
    """What a connection reports to: the client that opened it."""

    last_out: float

    def _received(self, conn: Connection) -> None: ...

    def _protocol_error(self, conn: Connection, why: str) -> None: ...

    def _lost(self, conn: Connection, exc: Exception | None) -> None: ...


class Ticking(Protocol):
    def _keepalive_tick(self, now: float) -> None: ...


# Decrypted bytes land here first (one TLS record at most) and are copied on at once: no allocation per read.
_RECORD = 16 * 1024
_READ_BUFFER = bytearray(_RECORD)
_READ_VIEW = memoryview(_READ_BUFFER)


class Connection(asyncio.Protocol):
    """One connection's bytes, with TLS done here over memory BIOs when the client has an SSLContext.

    asyncio's own TLS transport gives every connection a zero-filled 256 KiB read buffer and several layers of Python
    per record; an SSLObject fed from data_received costs ~20 KB and one read loop. A client opens a new connection
    per connect, so late events of an old one are told apart by identity."""

    def __init__(self, owner: Owner, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None, host: str) -> None:
        self.owner, self.loop = owner, loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.tls: ssl.SSLObject | None = None
        self.handshake: asyncio.Future[None] | None = None
        if tls is not None:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self._in, self._out, server_side=False, server_hostname=host)
            self.handshake = loop.create_future()

    def write(self, packet: bytes) -> None:
        """Packets written in one loop turn leave in one transport write: one TLS record and one send() for a burst."""
        out = self.out
        out.append(packet)
        if len(out) == 1:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        out, self.out = self.out, []
        if not out:
            return
        self.send(out[0] if len(out) == 1 else b"".join(out))
        self.owner.last_out = self.loop.time()

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is None:
            transport.write(data)
            return
        self.tls.write(data)
        transport.write(self._out.read())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.tls is not None:
            self._shake()

    def _shake(self) -> None:
        assert self.tls is not None and self.handshake is not None and self.transport is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ssl.CertificateError) as exc:
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            self.transport.abort()
            return
        else:
            self.handshake.set_result(None)
        pending = self._out.read()
        if pending:
            self.transport.write(pending)

    def data_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is None:
            self.buffer += data
            self.owner._received(self)
            return
        self._in.write(data)
        if self.handshake is not None and not self.handshake.done():
            self._shake()
            if not self.handshake.done() or self.handshake.exception() is not None:
                return
        closed = False
        incoming = self._in
        try:
            while True:
                n = cast(int, tls.read(_RECORD, _READ_BUFFER))  # typeshed: read into a buffer gives a count
                if not n:  # the peer's close_notify: answer with ours, as its TLS shutdown waits for it
                    closed = True
                    break
                self.buffer += _READ_VIEW[:n]
                if not incoming.pending and not tls.pending():
                    break  # all read: spare the SSLWantReadError the next read would raise
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.owner._protocol_error(self, f"TLS: {exc}")
            return
        if closed:
            if self.buffer:
                self.owner._received(self)
            self.close()
            return
        pending = self._out.read()  # a read can produce records to send (key updates, alerts)
        if pending and self.transport is not None:
            self.transport.write(pending)
        if self.buffer:
            self.owner._received(self)

    def close(self) -> None:
        """Close cleanly: our TLS close_notify, then the socket once what is buffered has been sent."""
        if self.transport is None:
            return
        if self.tls is not None and self.handshake is not None and self.handshake.done():
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()  # raises SSLWantReadError waiting for the peer's: ours is written anyway
            pending = self._out.read()
            if pending:
                self.transport.write(pending)
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"connection closed during the TLS handshake ({exc})"))
        self.owner._lost(self, exc)


async def _tick(loop: asyncio.AbstractEventLoop, clients: set[Ticking]) -> None:
    """Once a second: each client sends PINGREQ when idle for its keep-alive, or drops a connection whose PINGRESP
    did not come."""
    try:
        while clients:
            await asyncio.sleep(1.0)
            now = loop.time()
            for client in list(clients):
                client._keepalive_tick(now)
    finally:
        del _tickers[loop]


# One keep-alive task per event loop, not one per client: a fleet keeps thousands of connections on one loop.
_tickers: dict[asyncio.AbstractEventLoop, tuple[set[Ticking], asyncio.Task[None]]] = {}


def keepalive(loop: asyncio.AbstractEventLoop, client: Ticking, live: bool) -> None:
    """Add `client` to (live) or drop it from its loop's keep-alive ticker."""
    entry = _tickers.get(loop)
    if live:
        if entry is None:
            clients: set[Ticking] = set()
            entry = _tickers[loop] = (clients, loop.create_task(_tick(loop, clients), name="mqtt-keepalive"))
        entry[0].add(client)
    elif entry is not None:
        entry[0].discard(client)
