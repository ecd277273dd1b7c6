"""TLS for the MQTT door, terminated by the protocol itself over memory BIOs instead of asyncio's SSLProtocol.

asyncio gives every TLS connection its own zero-filled read buffer (SSLProtocol.max_size); here every connection
decrypts into one buffer shared by all, so an idle mTLS connection costs little more than OpenSSL's own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from gateway.broker.connection import Connection

log = logging.getLogger("edgesim.broker")

HANDSHAKE_TIMEOUT_S = 10.0
# A TLS record carries at most 16 KiB of plaintext, so one read never needs more than this.
RECORD_BYTES = 16 * 1024
# Every connection decrypts here and hands a view of it to its Connection, which copies it before returning.
_plaintext = memoryview(bytearray(RECORD_BYTES))


class TlsServerProtocol(asyncio.Protocol):
    """The TCP side of one mTLS connection: handshake, decrypt into a Connection, encrypt what it writes."""

    __slots__ = (
        "_accepted",
        "_app",
        "_app_factory",
        "_handshake_timeout",
        "_incoming",
        "_outgoing",
        "_ssl",
        "_tcp",
        "_timer",
        "closing",
    )
    _tcp: asyncio.Transport  # set by connection_made

    def __init__(
        self, context: ssl.SSLContext, app_factory: Callable[[], Connection], handshake_timeout: float
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self._app: Connection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False

    # ---- asyncio.Protocol, for the TCP transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._accepted = loop.time()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        # A memory BIO keeps its largest allocation for life: feed it about a record at a time, not 256 KiB reads.
        if len(data) <= RECORD_BYTES:
            self._receive(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), RECORD_BYTES):
            if self.closing:
                return
            self._receive(view[start : start + RECORD_BYTES])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        app, self._app = self._app, None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # ---- inbound
    def _receive(self, ciphertext: bytes | memoryview) -> None:
        self._incoming.write(ciphertext)
        app = self._app or self._handshake()
        if app is not None:
            self._decrypt(app)

    def _handshake(self) -> Connection | None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return None
        except ssl.SSLError as exc:
            # No Connection is ever made; the alert tells the client why (e.g. "certificate required").
            log.debug("TLS handshake with %s failed: %s", self._tcp.get_extra_info("peername"), exc)
            self._close_tcp()
            return None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()  # the server's last flight and, in TLS 1.3, its session tickets
        self._app = app = self._app_factory()
        app.connection_made(TlsTransport(self, self._tcp, self._ssl))
        app.opened = self._accepted  # the CONNECT deadline counts from accept, the handshake included
        return app

    def _handshake_timed_out(self) -> None:
        self._timer = None
        log.debug("TLS handshake with %s timed out", self._tcp.get_extra_info("peername"))
        self.abort()

    def _decrypt(self, app: Connection) -> None:
        sslobj, incoming = self._ssl, self._incoming
        try:
            # Checking what is buffered first spares an SSLWantReadError per chunk on the common path.
            while incoming.pending or sslobj.pending():
                count = cast(int, sslobj.read(RECORD_BYTES, _plaintext))  # given a buffer, read returns a count
                if not count:  # the client's close_notify
                    self.shutdown()
                    return
                app.data_received(_plaintext[:count])
                if self.closing:
                    return
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            log.debug("TLS error from %s: %s", self._tcp.get_extra_info("peername"), exc)
            self._close_tcp()
            return
        self._flush()

    # ---- outbound, for TlsTransport
    def encrypt(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self._tcp.is_closing():
            return
        try:
            if len(data) <= RECORD_BYTES:
                self._ssl.write(data)
                self._tcp.write(self._outgoing.read())
                return
            view = memoryview(data)
            records = []
            for start in range(0, len(view), RECORD_BYTES):
                self._ssl.write(view[start : start + RECORD_BYTES])
                records.append(self._outgoing.read())  # drained per record: the BIO stays record-sized
            self._tcp.write(b"".join(records))
        except ssl.SSLError as exc:
            log.debug("TLS error writing to %s: %s", self._tcp.get_extra_info("peername"), exc)
            self._close_tcp()

    def shutdown(self) -> None:
        """Send close_notify and close TCP without waiting for the client's own close_notify."""
        if self.closing:
            return
        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the client's close_notify is not here yet
            self._ssl.unwrap()
        self._close_tcp()

    def abort(self) -> None:
        self.closing = True
        self._tcp.abort()

    def _close_tcp(self) -> None:
        self.closing = True
        if not self._tcp.is_closing():
            self._flush()
            self._tcp.close()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._tcp.write(self._outgoing.read())


class TlsTransport(asyncio.Transport):
    """The transport a Connection sees: plaintext in and out, flow control forwarded to the TCP transport."""

    __slots__ = ("_ssl", "_tcp", "_tls")

    def __init__(self, tls: TlsServerProtocol, tcp: asyncio.Transport, sslobj: ssl.SSLObject) -> None:
        super().__init__()
        self._tls = tls
        self._tcp = tcp
        self._ssl = sslobj

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        return self._tcp.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.encrypt(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._tls.encrypt(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._tls.closing or self._tcp.is_closing()

    def close(self) -> None:
        self._tls.shutdown()

    def abort(self) -> None:
        self._tls.abort()

    def pause_reading(self) -> None:
        self._tcp.pause_reading()

    def resume_reading(self) -> None:
        self._tcp.resume_reading()

    def is_reading(self) -> bool:
        return self._tcp.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)
