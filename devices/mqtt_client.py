"""The fleet simulator's MQTT 3.1.1 client: one asyncio protocol per connection, thousands on one event loop.

Not paho: driven from asyncio, paho-mqtt cost this simulator ~200 µs of CPU per QoS 1 message (a message-info object,
a condition variable, a reason code and a properties object per PUBACK, byte-by-byte reads). This client, with a
callback instead of a future per publish and one transport write per loop turn, lets one process sustain ~10x the
rate (bench/fleet.py, part b).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from devices.mqtt_codec import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    Incoming,
    ProtocolError,
    ack_packet,
    connect_packet,
    encode_string,
    packet_id,
    parse_publish,
    publish_packet,
    split_packets,
    subscribe_packet,
)

__all__ = ["AsyncMqttClient", "ConnectError", "Done", "Message", "MqttError"]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 100  # QoS 1 publishes on the wire without a PUBACK; more wait in the client's queue
MAX_QUEUED = 10_000  # every pending publish holds a packet id: far below 65,535, so ids never collide
_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(Exception):
    """An MQTT operation failed: not connected, connection lost, or no answer in time."""


class ConnectError(MqttError):
    """The broker refused CONNECT; `rc` is the MQTT 3.1.1 CONNACK return code."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"Connection Refused: {_CONNACK_REASONS.get(rc, 'unknown reason')} (CONNACK rc={rc})")
        self.rc = rc


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


Done = Callable[["MqttError | None"], None]


def _call(done: Done, error: MqttError | None, client_id: str) -> None:
    try:
        done(error)
    except Exception:
        log.exception("%s: publish callback failed", client_id)


# Decrypted bytes land here first (one TLS record at most) and are copied on at once: no allocation per read.
_RECORD = 16 * 1024
_READ_BUFFER = bytearray(_RECORD)
_READ_VIEW = memoryview(_READ_BUFFER)


class _Connection(asyncio.Protocol):
    """One connection's bytes, with TLS done here over memory BIOs when the client has an SSLContext.

    asyncio's own TLS transport gives every connection a zero-filled 256 KiB read buffer and several layers of Python
    per record; an SSLObject fed from data_received costs ~20 KB and one read loop. A client opens a new connection
    per connect, so late events of an old one are told apart by identity."""

    def __init__(
        self, client: AsyncMqttClient, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None, host: str
    ) -> None:
        self.client, self.loop = client, loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.tls: ssl.SSLObject | None = None
        self.handshake: asyncio.Future[None] | None = None
        if tls is not None:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self._in, self._out, server_side=False, server_hostname=host)
            self.handshake = loop.create_future()

    def flush(self) -> None:
        out, self.out = self.out, []
        self.send(out[0] if len(out) == 1 else b"".join(out))
        self.client._last_out = self.loop.time()

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
            self.client._received(self)
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
            self.client._protocol_error(self, f"TLS: {exc}")
            return
        if closed:
            if self.buffer:
                self.client._received(self)
            self.close()
            return
        pending = self._out.read()  # a read can produce records to send (key updates, alerts)
        if pending and self.transport is not None:
            self.transport.write(pending)
        if self.buffer:
            self.client._received(self)

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

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"connection closed during the TLS handshake ({exc})"))
        self.client._lost(self, exc)


async def _tick(loop: asyncio.AbstractEventLoop, clients: set[AsyncMqttClient]) -> None:
    """Once a second: PINGREQ on a connection idle for its keep-alive, drop one whose PINGRESP did not come."""
    try:
        while clients:
            await asyncio.sleep(1.0)
            now = loop.time()
            for client in list(clients):
                client._keepalive_tick(now)
    finally:
        del _tickers[loop]


# One keep-alive task per event loop, not one per client: a fleet keeps thousands of connections on one loop.
_tickers: dict[asyncio.AbstractEventLoop, tuple[set[AsyncMqttClient], asyncio.Task[None]]] = {}


def _keepalive(loop: asyncio.AbstractEventLoop, client: AsyncMqttClient, live: bool) -> None:
    entry = _tickers.get(loop)
    if live:
        if entry is None:
            clients: set[AsyncMqttClient] = set()
            entry = _tickers[loop] = (clients, loop.create_task(_tick(loop, clients), name="mqtt-keepalive"))
        entry[0].add(client)
    elif entry is not None:
        entry[0].discard(client)


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
        self._host, self._port, self._ssl, self._keepalive = host, port, ssl_context, keepalive
        self._on_message = on_message
        self._on_connection_lost = on_connection_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None  # the current connection, from TCP connect until it is torn down
        self._connected = False
        self._connecting = False
        self._connack: asyncio.Future[None] | None = None
        self._disconnected: asyncio.Future[None] | None = None
        self._publishes: dict[int, Done] = {}
        self._subscribes: dict[int, asyncio.Future[list[int]]] = {}
        self._queued: deque[bytes] = deque()  # QoS 1 PUBLISH packets waiting for room in the in-flight window
        self._inflight = 0
        self._next_mid = 0
        self._topics: dict[str, bytes] = {}  # a device publishes to a handful of topics: encode each once
        self._last_out = 0.0
        self._ping_sent: float | None = None
        self._qos2_received: set[int] = set()
        self._room: asyncio.Future[None] | None = None  # set while a publisher waits for in-flight room
        self._room_limit = MAX_INFLIGHT

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """QoS 1 publishes not yet acknowledged."""
        return len(self._publishes)

    async def room(self, limit: int = MAX_INFLIGHT) -> None:
        """Wait until fewer than `limit` (at most MAX_INFLIGHT) QoS 1 publishes are unacknowledged, or the
        connection ended: a publisher that waits here never queues beyond the broker's pace."""
        self._room_limit = min(limit, MAX_INFLIGHT)
        if len(self._publishes) < self._room_limit or not self._connected:
            return
        if self._room is None:
            self._room = (self._loop or asyncio.get_running_loop()).create_future()
        await asyncio.shield(self._room)

    def _wake_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    async def __aenter__(self) -> AsyncMqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # ---- operations

    async def connect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - per-call deadlines are the API
        """Open TCP (+TLS), send CONNECT, await CONNACK: ConnectError if refused, MqttError on failure or timeout."""
        if self._connected or self._connecting:
            raise MqttError(f"{self.client_id}: already connected or connecting")
        loop = self._loop = asyncio.get_running_loop()
        conn = _Connection(self, loop, self._ssl, self._host)
        self._connack = connack = loop.create_future()
        self._connecting = True
        try:
            async with asyncio.timeout(timeout):
                try:
                    await loop.create_connection(lambda: conn, self._host, self._port)
                    if conn.handshake is not None:
                        await conn.handshake
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError, a certificate mismatch both
                    raise MqttError(f"{self.client_id}: cannot connect to {self._host}:{self._port}: {exc}") from exc
                self._conn = conn
                self._write(connect_packet(self.client_id, self._keepalive))
                await connack
            if not self._connected:
                raise MqttError(f"{self.client_id}: connection lost right after CONNACK")
        except BaseException as exc:
            if not connack.done():
                connack.cancel()
            if conn.transport is not None:
                conn.transport.abort()
            if self._conn is conn:
                self._teardown("connect failed", lost=False)
            if isinstance(exc, TimeoutError):
                raise MqttError(f"{self.client_id}: connect timed out after {timeout}s") from None
            raise
        finally:
            self._connecting = False

    async def disconnect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Send DISCONNECT (the broker then drops the will) and wait until the connection is closed."""
        conn = self._conn
        if not self._connected or conn is None or conn.transport is None:
            return
        self._connected = False
        self._disconnected = done = asyncio.get_running_loop().create_future()
        transport = conn.transport
        conn.out.append(DISCONNECT)
        conn.flush()
        conn.close()
        try:
            async with asyncio.timeout(timeout):
                await done
        except TimeoutError:
            transport.abort()
            if self._conn is conn:
                self._teardown("disconnected", lost=False)
        finally:
            self._disconnected = None

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (a simulated fault): pending publishes fail, no on_connection_lost.
        Safe inside on_message."""
        conn = self._conn
        if conn is None:
            return
        self._teardown("disconnected", lost=False)
        if conn.transport is not None:
            conn.transport.abort()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> asyncio.Future[None]:
        """Resolves on PUBACK (QoS 1) or once handed to the transport (QoS 0); fails with MqttError when not or no
        longer connected."""
        future: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()

        def settle(error: MqttError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.send(topic, payload, qos, settle, retain)
        return future

    def send(self, topic: str, payload: bytes, qos: int, on_done: Done, retain: bool = False) -> None:
        """publish() without a future: `on_done(None)` on PUBACK (QoS 1) or once written (QoS 0), `on_done(error)`
        when it cannot be sent or the connection ends first. Called directly, not scheduled: the fleet's hot path."""
        if not self._connected:
            on_done(MqttError(f"{self.client_id}: not connected"))
            return
        encoded = self._topics.get(topic)
        if encoded is None:
            if not topic or "+" in topic or "#" in topic:
                on_done(MqttError(f"{self.client_id}: publish to {topic!r}: not a valid topic name"))
                return
            encoded = encode_string(topic)
            if len(self._topics) < 64:
                self._topics[topic] = encoded
        if qos == 0:
            self._write(publish_packet(encoded, payload, 0, retain, 0))
            on_done(None)
            return
        if qos != 1:
            raise ValueError(f"qos {qos}: the simulator publishes at QoS 0 or 1")
        if len(self._publishes) >= MAX_QUEUED:
            on_done(MqttError(f"{self.client_id}: publish to {topic}: {MAX_QUEUED} publishes pending"))
            return
        mid = self._mid()
        self._publishes[mid] = on_done
        packet = publish_packet(encoded, payload, 1, retain, mid)
        if self._inflight < MAX_INFLIGHT:
            self._inflight += 1
            self._write(packet)
        else:
            self._queued.append(packet)

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:  # noqa: ASYNC109
        """Subscribe and return the granted QoS per filter as the broker sent it (128 = refused)."""
        if not self._connected:
            raise MqttError(f"{self.client_id}: not connected")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        mid = self._mid()
        self._subscribes[mid] = future
        self._write(subscribe_packet(mid, filters))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise MqttError(f"{self.client_id}: SUBACK timed out after {timeout}s") from None
        finally:
            if self._subscribes.get(mid) is future:
                del self._subscribes[mid]

    # ---- internals

    def _mid(self) -> int:
        mid = self._next_mid
        while True:
            mid = mid % 0xFFFF + 1
            if mid not in self._publishes and mid not in self._subscribes:
                self._next_mid = mid
                return mid

    def _write(self, packet: bytes) -> None:
        """Packets written in one loop turn leave in one transport write: one TLS record and one send() for a burst."""
        conn = self._conn
        if conn is None:
            return
        conn.out.append(packet)
        if len(conn.out) == 1:
            conn.loop.call_soon(conn.flush)

    def _received(self, conn: _Connection) -> None:
        buffer = conn.buffer
        if buffer[:2] == b"\x40\x02":
            self._pubacks(conn, buffer)
        try:
            packets = split_packets(buffer)
        except ProtocolError as exc:
            self._protocol_error(conn, str(exc))
            return
        for packet in packets:
            if self._conn is not conn:
                return  # torn down by a callback (abort() in on_message)
            try:
                self._handle(packet)
            except ProtocolError as exc:
                self._protocol_error(conn, str(exc))
                return

    def _pubacks(self, conn: _Connection, buffer: bytearray) -> None:
        """The common case, PUBACKs back to back, read straight off the buffer."""
        pos, end = 0, len(buffer) - 3
        publishes, queued = self._publishes, self._queued
        while pos < end and buffer[pos] == 0x40 and buffer[pos + 1] == 2:
            done = publishes.pop((buffer[pos + 2] << 8) | buffer[pos + 3], None)
            pos += 4
            if done is None:
                continue
            _call(done, None, self.client_id)
            if self._conn is not conn:
                break  # torn down by a callback
            if queued:
                self._write(queued.popleft())
            else:
                self._inflight -= 1
        del buffer[:pos]
        if self._room is not None and len(publishes) < self._room_limit:
            self._wake_room()

    def _handle(self, packet: Incoming) -> None:
        kind = packet.kind
        if kind == PUBACK:
            done = self._publishes.pop(packet_id(packet.body), None)
            if done is None:
                return
            _call(done, None, self.client_id)
            if self._queued:
                self._write(self._queued.popleft())
            else:
                self._inflight -= 1
            if self._room is not None and len(self._publishes) < self._room_limit:
                self._wake_room()
        elif kind == PUBLISH:
            self._deliver(packet)
        elif kind == SUBACK:
            subscribed = self._subscribes.pop(packet_id(packet.body), None)
            if subscribed is not None and not subscribed.done():
                subscribed.set_result(list(packet.body[2:]))
        elif kind == CONNACK:
            self._connack_received(packet.body)
        elif kind == PINGRESP:
            self._ping_sent = None
        elif kind == PUBREL:
            mid = packet_id(packet.body)
            self._qos2_received.discard(mid)
            self._write(ack_packet(PUBCOMP, mid))
        elif kind not in (UNSUBACK, PUBREC, PUBCOMP):
            raise ProtocolError(f"unexpected packet type {kind} from the broker")

    def _connack_received(self, body: bytes) -> None:
        connack = self._connack
        if len(body) != 2:
            raise ProtocolError("malformed CONNACK")
        if connack is None or connack.done():
            raise ProtocolError("CONNACK after the connection was accepted")
        rc = body[1]
        if rc:
            connack.set_exception(ConnectError(rc))
            return
        self._connected = True
        self._ping_sent = None
        assert self._loop is not None
        _keepalive(self._loop, self, True)
        connack.set_result(None)

    def _deliver(self, packet: Incoming) -> None:
        topic, payload, qos, retain, mid = parse_publish(packet.flags, packet.body)
        duplicate = qos == 2 and mid in self._qos2_received
        if self._on_message is not None and not duplicate:
            try:
                self._on_message(Message(topic, payload, qos, retain))
            except Exception:
                log.exception("%s: on_message callback failed", self.client_id)
        if qos == 1:
            self._write(ack_packet(PUBACK, mid))
        elif qos == 2:
            self._qos2_received.add(mid)
            self._write(ack_packet(PUBREC, mid))

    def _protocol_error(self, conn: _Connection, why: str) -> None:
        log.warning("%s: closing the connection: %s", self.client_id, why)
        lost = self._connected
        self._teardown(f"connection lost (protocol error: {why})", lost=lost)
        if conn.transport is not None:
            conn.transport.abort()

    def _keepalive_tick(self, now: float) -> None:
        if not self._connected or not self._keepalive:
            return
        if self._ping_sent is not None:
            if now - self._ping_sent >= self._keepalive:
                conn = self._conn
                self._teardown("connection lost (no PINGRESP within the keep-alive)", lost=True)
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
        elif now - self._last_out >= max(1, self._keepalive - 1):
            self._ping_sent = now
            self._write(PINGREQ)

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        if self._conn is not conn:
            return  # already torn down (abort, protocol error, timeout)
        if self._disconnected is not None:
            self._teardown("disconnected", lost=False)
        else:
            self._teardown(f"connection lost ({exc or 'closed by the broker'})", lost=self._connected)

    def _teardown(self, why: str, lost: bool) -> None:
        """Forget the current connection: fail what waits on it, and tell the owner if it was lost unexpectedly."""
        self._conn = None
        self._connected = False
        self._inflight = 0
        self._queued.clear()
        self._qos2_received.clear()
        self._wake_room()
        if self._loop is not None:
            _keepalive(self._loop, self, False)
        publishes, subscribes = list(self._publishes.values()), list(self._subscribes.values())
        self._publishes.clear()
        self._subscribes.clear()
        for done in publishes:
            _call(done, MqttError(f"{self.client_id}: {why}"), self.client_id)
        for future in subscribes:
            if not future.done():
                future.set_exception(MqttError(f"{self.client_id}: {why}"))
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"{self.client_id}: connection closed before CONNACK ({why})"))
        if lost and self._on_connection_lost is not None:
            try:
                self._on_connection_lost()
            except Exception:
                log.exception("%s: on_connection_lost callback failed", self.client_id)
