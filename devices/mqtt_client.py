"""The fleet simulator's only paho wrapper: MQTT 3.1.1 clients served by one asyncio event loop, without threads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["AsyncMqttClient", "ConnectError", "Message", "MqttError"]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 100
# Every queued QoS 1 message holds a packet id; far below 65,535 so a wrapped id never meets a live one.
MAX_QUEUED = 10_000
# paho hands MQTT 3.1.1 CONNACK codes to on_connect as MQTT 5 reason codes; these are the codes the broker sent.
_V3_CONNACK = {132: 1, 133: 2, 136: 3, 134: 4, 135: 5}

T = TypeVar("T")


class MqttError(Exception):
    """An MQTT operation failed: not connected, connection lost, or no answer in time."""


class ConnectError(MqttError):
    """The broker refused CONNECT; `rc` is the MQTT 3.1.1 CONNACK return code."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"{mqtt.connack_string(rc)} (CONNACK rc={rc})")
        self.rc = rc


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH, without paho types."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho 2.2 drops that socket unclosed (a ResourceWarning each time)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


async def _tick(loop: asyncio.AbstractEventLoop, clients: set[mqtt.Client]) -> None:
    """loop_misc() once a second: PINGREQ on an idle connection, drop one whose PINGRESP did not come."""
    try:
        while clients:
            await asyncio.sleep(1.0)
            for client in list(clients):
                client.loop_misc()
    finally:
        del _tickers[loop]


# One keep-alive task per event loop, not one per client: a fleet keeps thousands of connections on one loop.
_tickers: dict[asyncio.AbstractEventLoop, tuple[set[mqtt.Client], asyncio.Task[None]]] = {}


def _keepalive(loop: asyncio.AbstractEventLoop, client: mqtt.Client, live: bool) -> None:
    entry = _tickers.get(loop)
    if live:
        if entry is None:
            clients: set[mqtt.Client] = set()
            entry = _tickers[loop] = (clients, loop.create_task(_tick(loop, clients), name="mqtt-keepalive"))
        entry[0].add(client)
    elif entry is not None:
        entry[0].discard(client)


def _forget(table: dict[int, asyncio.Future[T]], mid: int, future: asyncio.Future[T]) -> None:
    if table.get(mid) is future:
        del table[mid]


class AsyncMqttClient:
    """One MQTT 3.1.1 clean-session connection served by the running loop; connect() again to reconnect."""

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: int = 60,
        on_message: Callable[[Message], None] | None = None,
        on_connection_lost: Callable[[], None] | None = None,
    ) -> None:
        self.client_id = client_id
        self._host, self._port, self._keepalive = host, port, keepalive
        self._on_message = on_message
        self._on_connection_lost = on_connection_lost
        # reconnect_on_failure=False: no blocking reconnect (paho's protocol downgrade) on the loop thread.
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        if ssl_context is not None:
            if ssl_context.sslsocket_class is ssl.SSLSocket:  # the documented hook; a caller's own class is kept
                ssl_context.sslsocket_class = _ClosingSSLSocket
            client.tls_set_context(ssl_context)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        client.on_socket_open = self._handle_socket_open
        client.on_socket_close = self._handle_socket_close
        client.on_socket_register_write = self._handle_register_write
        client.on_socket_unregister_write = self._handle_unregister_write
        self._client = client
        self._loop: asyncio.AbstractEventLoop  # set by connect(); paho calls back only after that
        self._loop_thread = 0
        self._connected = False
        self._closing = False  # our own disconnect()/abort(): not a lost connection
        self._opening: asyncio.Future[SocketLike | None] | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._disconnecting: asyncio.Future[None] | None = None
        self._publishes: dict[int, asyncio.Future[None]] = {}
        self._subscribes: dict[int, asyncio.Future[list[int]]] = {}
        self._flush_scheduled = False
        self._writer_added = False

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Publishes not yet acknowledged (QoS 1) or not yet written (QoS 0)."""
        return len(self._publishes)

    async def __aenter__(self) -> AsyncMqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def connect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - per-call deadlines are the API
        """Open TCP (+TLS), send CONNECT, await CONNACK: ConnectError if refused, MqttError on failure or timeout."""
        if self._connected or self._connecting is not None:
            raise MqttError(f"{self.client_id}: already connected or connecting")
        if self._opening is not None and not self._opening.done():
            raise MqttError(f"{self.client_id}: an abandoned connect is still running")
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        # A socket left by abort() must leave the selector here, before paho closes it in the worker thread.
        self._drop()
        self._closing = False
        self._connecting = connack = loop.create_future()
        # paho's connect blocks (TCP connect, TLS handshake), so it runs in the default executor, as in aiomqtt.
        self._opening = opening = loop.run_in_executor(None, self._open)
        try:
            async with asyncio.timeout(timeout):
                try:
                    await asyncio.shield(opening)
                except (OSError, ValueError) as exc:  # ssl.SSLError and socket timeouts are OSErrors
                    raise MqttError(f"{self.client_id}: cannot connect to {self._host}:{self._port}: {exc}") from exc
                await connack
            if not self._connected:
                raise MqttError(f"{self.client_id}: connection lost right after CONNACK")
        except BaseException as exc:
            if not connack.done():
                connack.cancel()  # a CONNACK or failure arriving later has nobody to tell
            if opening.done():
                self._drop()
            else:
                # The worker thread cannot be stopped (paho's socket timeout ends it): close what it opens.
                opening.add_done_callback(self._abandoned)
            if isinstance(exc, TimeoutError):
                raise MqttError(f"{self.client_id}: connect timed out after {timeout}s") from None
            raise
        finally:
            self._connecting = None

    def _open(self) -> SocketLike | None:
        self._client.connect(self._host, self._port, self._keepalive)
        return self._client.socket()

    def _abandoned(self, opening: asyncio.Future[SocketLike | None]) -> None:
        sock = None if opening.cancelled() or opening.exception() else opening.result()
        if sock is not None:
            self._drop(sock)  # only that socket: a newer connect() may own the client by now

    async def disconnect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Send DISCONNECT (the broker then drops the will) and wait until the socket is closed."""
        if not self._connected:
            return
        self._closing, self._connected = True, False
        self._disconnecting = done = asyncio.get_running_loop().create_future()
        self._client.disconnect()
        try:
            async with asyncio.timeout(timeout):
                await done
        except TimeoutError:
            self._drop()
        finally:
            self._disconnecting = None

    def abort(self) -> None:
        """Drop the socket without DISCONNECT (a simulated fault); no on_connection_lost, pending publishes fail."""
        sock = self._client.socket()
        if sock is None:
            return
        self._closing, self._connected = True, False
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # paho's own cleanup runs later, so abort() is safe inside on_message (paho is mid-read there).
        self._loop.call_soon(self._drop, sock)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> asyncio.Future[None]:
        """Resolves on PUBACK (QoS 1) or once written (QoS 0); fails with MqttError when not or no longer connected."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._connected:
            future.set_exception(MqttError(f"{self.client_id}: not connected"))
            return future
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            future.set_exception(MqttError(f"{self.client_id}: publish to {topic}: {mqtt.error_string(info.rc)}"))
        elif info.is_published():
            # on_publish ran before publish() returned the mid (possible when paho writes at once): already done.
            future.set_result(None)
        else:
            self._publishes[info.mid] = future
            future.add_done_callback(functools.partial(_forget, self._publishes, info.mid))
        return future

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:  # noqa: ASYNC109
        """Subscribe and return the granted QoS per filter as the broker sent it (128 = refused)."""
        if not self._connected:
            raise MqttError(f"{self.client_id}: not connected")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        rc, mid = self._client.subscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"{self.client_id}: subscribe: {mqtt.error_string(rc)}")
        self._subscribes[mid] = future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise MqttError(f"{self.client_id}: SUBACK timed out after {timeout}s") from None
        finally:
            _forget(self._subscribes, mid, future)

    def _drop(self, only: SocketLike | None = None) -> None:
        """Close the socket (or only `only`) without DISCONNECT; paho reports it through on_disconnect as usual."""
        sock = self._client.socket()
        if sock is None or (only is not None and sock is not only):
            return
        self._closing = True
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # After shutdown every read ends in EOF, so paho closes the socket through its usual path.
        while self._client.socket() is not None:
            self._client.loop_read()

    # ---- paho callbacks: they complete futures and touch the selector, nothing else

    def _handle_connect(self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, *_: object) -> None:
        future = self._connecting
        if future is None or future.done():
            return
        if reason.is_failure:
            future.set_exception(ConnectError(_V3_CONNACK.get(reason.value, reason.value)))
            return
        self._connected = True
        _keepalive(self._loop, client, True)
        future.set_result(None)

    def _handle_disconnect(self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, *_: object) -> None:
        lost = self._connected and not self._closing
        self._connected = False
        _keepalive(self._loop, client, False)
        # Clean session: paho would resend these after the next CONNACK, behind futures that already failed.
        client.drop_out_messages()
        why = "disconnected" if self._closing else f"connection lost ({reason})"
        for table in (self._publishes, self._subscribes):
            for future in table.values():
                if not future.done():
                    future.set_exception(MqttError(f"{self.client_id}: {why}"))
            table.clear()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.set_exception(MqttError(f"{self.client_id}: connection closed before CONNACK ({reason})"))
        if self._disconnecting is not None and not self._disconnecting.done():
            self._disconnecting.set_result(None)
        if lost and self._on_connection_lost is not None:
            try:
                self._on_connection_lost()
            except Exception:
                log.exception("%s: on_connection_lost callback failed", self.client_id)

    def _handle_publish(self, _c: mqtt.Client, _u: object, mid: int, *_: object) -> None:
        future = self._publishes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _handle_subscribe(self, _c: mqtt.Client, _u: object, mid: int, reasons: list[ReasonCode], *_: object) -> None:
        future = self._subscribes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result([reason.value for reason in reasons])

    def _handle_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(Message(message.topic, bytes(message.payload), message.qos, bool(message.retain)))
        except Exception:
            # Raised into paho, it would skip the PUBACK and leave paho's half-read packet state behind.
            log.exception("%s: on_message callback failed", self.client_id)

    def _handle_socket_open(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_loop(sock, lambda loop: loop.add_reader(sock, self._read))

    def _handle_register_write(self, client: mqtt.Client, _u: object, sock: SocketLike) -> None:
        if threading.get_ident() != self._loop_thread:
            self._writer_added = True
            self._on_loop(sock, lambda loop: loop.add_writer(sock, client.loop_write))
            return
        # On the loop thread (every publish): write once per loop turn for everything queued meanwhile, instead of an
        # epoll registration and a wakeup per packet; fall back to a writer only if the socket's buffer is full.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush, sock)

    def _flush(self, sock: SocketLike) -> None:
        self._flush_scheduled = False
        client = self._client
        if client.socket() is not sock:
            return
        client.loop_write()
        if client.want_write() and client.socket() is sock:
            self._writer_added = True
            self._loop.add_writer(sock, client.loop_write)

    def _handle_unregister_write(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        if not self._writer_added:
            return  # the per-turn flush wrote everything: there is no writer to remove (this runs per publish)
        self._writer_added = False
        self._on_loop(sock, lambda loop: loop.remove_writer(sock))

    def _handle_socket_close(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        self._on_loop(sock, lambda loop: loop.remove_reader(sock))

    def _on_loop(self, sock: SocketLike, action: Callable[[asyncio.AbstractEventLoop], object]) -> None:
        loop = self._loop
        if threading.get_ident() == self._loop_thread:
            action(loop)
            return

        # paho opens the socket inside connect(), on the executor thread; the selector belongs to the loop thread.
        def later() -> None:
            if self._client.socket() is sock:
                action(loop)

        loop.call_soon_threadsafe(later)

    def _read(self) -> None:
        self._client.loop_read()
        # TLS decrypts whole records: packets already inside the SSL object leave the fd quiet, so drain them now.
        sock = self._client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._client.loop_read()
            sock = self._client.socket()
