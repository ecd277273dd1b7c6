"""A small asyncio MQTT 3.1.1 and 5 client: one asyncio protocol per connection, thousands on one event loop.

Not paho: driven from asyncio, paho-mqtt cost the fleet simulator ~200 µs of CPU per QoS 1 message (a message-info
object, a condition variable, a reason code and a properties object per PUBACK, byte-by-byte reads). This client, with
a callback instead of a future per publish and one transport write per loop turn, lets one process sustain ~10x the
rate (bench/fleet.py, part b). MQTT 5 adds little per message: a success PUBACK is the same four bytes, a publish's
property block can be handed over already encoded, and topic aliases replace repeated topics on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mqttwire import codec, reasons
from mqttwire import properties as mp
from mqttwire.connection import Connection, keepalive
from mqttwire.errors import MalformedPacket, ProtocolViolation
from mqttwire.frame import MAX_VARINT, decode_varint, encode_varint, split_frame
from mqttwire.packets import (
    AUTH,
    CONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    V5,
    V311,
    Ack,
    Connack,
    Connect,
    Disconnect,
    PingResp,
    Suback,
    Subscribe,
    SubscribeFilter,
    Unsuback,
    Unsubscribe,
)
from mqttwire.properties import Properties

__all__ = [
    "MAX_INFLIGHT",
    "AsyncMqttClient",
    "ConnectError",
    "Done",
    "Message",
    "MqttError",
    "PublishError",
    "publish_properties",
]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 100  # QoS 1 publishes on the wire without a PUBACK; more wait in the client's queue
MAX_QUEUED = 10_000  # every pending publish holds a packet id: far below 65,535, so ids never collide
_U16 = struct.Struct("!H")
_EMPTY_TOPIC = b"\x00\x00"
_UNEXPECTED = frozenset({CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, AUTH})  # packets only a client sends (or AUTH,
# which only follows an Authentication Method this client never sends)


class MqttError(Exception):
    """An MQTT operation failed: not connected, connection lost, refused, or no answer in time. `reason_code` is the
    MQTT 5 reason the broker gave, when it gave one (a refused PUBLISH, a server DISCONNECT)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectError(MqttError):
    """The broker refused CONNECT; `rc` is the CONNACK's return code (3.1.1) or reason code (5)."""

    def __init__(self, rc: int, version: int = V311, reason_string: str | None = None) -> None:
        if version == V5:
            text = f"Connection Refused: {reasons.name(rc)} (CONNACK reason 0x{rc:02X})"
        else:
            text = f"Connection Refused: {reasons.V3_NAMES.get(rc, 'unknown reason')} (CONNACK rc={rc})"
        super().__init__(f"{text}: {reason_string}" if reason_string else text, rc)
        self.rc = rc


class PublishError(MqttError):
    """The broker refused a QoS 1 PUBLISH: an MQTT 5 PUBACK with a reason code of 0x80 or above."""


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH; `properties` (MQTT 5) keyed by mqttwire.properties identifiers, topic alias resolved."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = None

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return list(self.properties.get(mp.USER_PROPERTY, ())) if self.properties else []


Done = Callable[["MqttError | None"], None]


def publish_properties(
    *,
    user_properties: Sequence[tuple[str, str]] = (),
    content_type: str | None = None,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry: int | None = None,
    payload_format: int | None = None,
) -> Properties:
    """An MQTT 5 PUBLISH's properties by name; `mp.encode_properties` of it can be handed to publish() as bytes, to
    encode once for many messages."""
    props: Properties = {}
    if payload_format is not None:
        props[mp.PAYLOAD_FORMAT_INDICATOR] = payload_format
    if message_expiry is not None:
        props[mp.MESSAGE_EXPIRY_INTERVAL] = message_expiry
    if content_type is not None:
        props[mp.CONTENT_TYPE] = content_type
    if response_topic is not None:
        props[mp.RESPONSE_TOPIC] = response_topic
    if correlation_data is not None:
        props[mp.CORRELATION_DATA] = correlation_data
    if user_properties:
        props[mp.USER_PROPERTY] = list(user_properties)
    return props


def _property_bytes(properties: Properties | bytes | None) -> bytes:
    """The properties themselves, without the block's length."""
    if properties is None:
        return b""
    if not isinstance(properties, bytes):
        if mp.TOPIC_ALIAS in properties:
            raise ValueError("the client assigns topic aliases itself (topic_aliases=True)")
        properties = mp.encode_properties(properties)
    _, start = decode_varint(properties, 0, len(properties))
    return properties[start:]


def _call(done: Done, error: MqttError | None, client_id: str) -> None:
    try:
        done(error)
    except Exception:
        log.exception("%s: publish callback failed", client_id)


class AsyncMqttClient:
    """One MQTT connection served by the running loop (3.1.1, or 5 with `protocol=5`); connect() again to reconnect.

    MQTT 5 options: `session_expiry` (seconds; 0 ends the session with the connection), `receive_maximum`,
    `user_properties` on CONNECT, `topic_alias_maximum` (aliases the broker may use towards us) and `topic_aliases`
    (use the broker's Topic Alias Maximum for our publishes). `clean_start` is 3.1.1's clean session flag too.
    """

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
        protocol: int = V311,
        clean_start: bool = True,
        session_expiry: int = 0,
        receive_maximum: int | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        topic_alias_maximum: int = 0,
        topic_aliases: bool = True,
    ) -> None:
        if protocol not in (V311, V5):
            raise ValueError(f"protocol {protocol}: expected 4 (MQTT 3.1.1) or 5 (MQTT 5)")
        self.client_id = client_id
        self.protocol = protocol
        self._v5 = protocol == V5
        self._host, self._port, self._ssl, self._keepalive = host, port, ssl_context, keepalive
        self._on_message = on_message
        self._on_connection_lost = on_connection_lost
        self._clean_start, self._session_expiry = clean_start, session_expiry
        self._connect_props: Properties = {}
        if session_expiry:
            self._connect_props[mp.SESSION_EXPIRY_INTERVAL] = session_expiry
        if receive_maximum is not None:
            self._connect_props[mp.RECEIVE_MAXIMUM] = receive_maximum
        if topic_alias_maximum:
            self._connect_props[mp.TOPIC_ALIAS_MAXIMUM] = topic_alias_maximum
        if user_properties:
            self._connect_props[mp.USER_PROPERTY] = list(user_properties)
        self._alias_max_in = topic_alias_maximum
        self._use_aliases = topic_aliases
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None  # the current connection, from TCP connect until it is torn down
        self._connected = False
        self._connecting = False
        self._connack: asyncio.Future[None] | None = None
        self._disconnected: asyncio.Future[None] | None = None
        self._publishes: dict[int, Done] = {}
        self._subscribes: dict[int, asyncio.Future[list[int]]] = {}  # SUBACKs and UNSUBACKs awaited
        self._queued: deque[bytes] = deque()  # QoS 1 PUBLISH packets waiting for room in the in-flight window
        self._inflight = 0
        self._window = MAX_INFLIGHT
        self._next_mid = 0
        self._topics: dict[str, bytes] = {}  # a device publishes to a handful of topics: encode each once
        self._aliases: dict[str, bytes] = {}  # topic -> its Topic Alias property, on this connection
        self._alias_max_out = 0
        self._aliases_in: dict[int, str] = {}
        self._max_packet = 0
        self._effective_keepalive = keepalive
        self.last_out = 0.0
        self._ping_sent: float | None = None
        self._qos2_received: set[int] = set()
        self._room: asyncio.Future[None] | None = None  # set while a publisher waits for in-flight room
        self._room_limit = MAX_INFLIGHT
        self.session_present = False
        self.connack_properties: Properties = {}
        self.disconnect_reason: int | None = None  # the reason code of the broker's last DISCONNECT (MQTT 5)
        self.disconnect_reason_string: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """QoS 1 publishes not yet acknowledged."""
        return len(self._publishes)

    @property
    def topic_alias_maximum(self) -> int:
        """How many topic aliases this connection may set up towards the broker (its CONNACK's maximum)."""
        return self._alias_max_out

    async def room(self, limit: int = MAX_INFLIGHT) -> None:
        """Wait until fewer than `limit` (at most the in-flight window) QoS 1 publishes are unacknowledged, or the
        connection ended: a publisher that waits here never queues beyond the broker's pace."""
        self._room_limit = min(limit, self._window)
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
        conn = Connection(self, loop, self._ssl, self._host)
        self._connack = connack = loop.create_future()
        self._connecting = True
        self.disconnect_reason = self.disconnect_reason_string = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    await loop.create_connection(lambda: conn, self._host, self._port)
                    if conn.handshake is not None:
                        await conn.handshake
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError, a certificate mismatch both
                    raise MqttError(f"{self.client_id}: cannot connect to {self._host}:{self._port}: {exc}") from exc
                self._conn = conn
                request = Connect(self.client_id, self.protocol, self._clean_start, self._keepalive,
                                  properties=self._connect_props or None)  # fmt: skip
                conn.write(codec.encode(request, self.protocol))
                await connack
            if not self._connected:
                raise MqttError(f"{self.client_id}: connection lost right after CONNACK")
        except BaseException as exc:
            if not connack.done():
                connack.cancel()
            conn.abort()
            if self._conn is conn:
                self._teardown("connect failed", lost=False)
            if isinstance(exc, TimeoutError):
                raise MqttError(f"{self.client_id}: connect timed out after {timeout}s") from None
            raise
        finally:
            self._connecting = False

    async def disconnect(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109
        *,
        reason_code: int = 0,
        session_expiry: int | None = None,
    ) -> None:
        """Send DISCONNECT (the broker then drops the will; MQTT 5: with `reason_code`, and `session_expiry` changing
        the session's) and wait until the connection is closed."""
        conn = self._conn
        if not self._connected or conn is None or conn.transport is None:
            return
        self._connected = False
        self._disconnected = done = asyncio.get_running_loop().create_future()
        transport = conn.transport
        props = {mp.SESSION_EXPIRY_INTERVAL: session_expiry} if session_expiry is not None else None
        conn.out.append(codec.encode(Disconnect(reason_code, props), self.protocol))
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
        conn.abort()

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | bytes | None = None,
    ) -> asyncio.Future[None]:
        """Resolves on PUBACK (QoS 1) or once handed to the transport (QoS 0); fails with MqttError when not or no
        longer connected, PublishError (with its `reason_code`) when an MQTT 5 broker refuses it."""
        future: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()

        def settle(error: MqttError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.send(topic, payload, qos, settle, retain, properties)
        return future

    def send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        on_done: Done,
        retain: bool = False,
        properties: Properties | bytes | None = None,
    ) -> None:
        """publish() without a future: `on_done(None)` on PUBACK (QoS 1) or once written (QoS 0), `on_done(error)`
        when it cannot be sent, is refused, or the connection ends first. Called directly, not scheduled: the fleet's
        hot path. `properties` (MQTT 5; ignored for 3.1.1) may be an encoded property block, to encode it once."""
        if not self._connected:
            on_done(MqttError(f"{self.client_id}: not connected"))
            return
        encoded = self._topics.get(topic)
        if encoded is None:
            if not topic or "+" in topic or "#" in topic:
                on_done(MqttError(f"{self.client_id}: publish to {topic!r}: not a valid topic name"))
                return
            encoded = mp.encode_string(topic)
            if len(self._topics) < 64:
                self._topics[topic] = encoded
        if qos not in (0, 1):
            raise ValueError(f"qos {qos}: this client publishes at QoS 0 or 1")
        if qos and len(self._publishes) >= MAX_QUEUED:
            on_done(MqttError(f"{self.client_id}: publish to {topic}: {MAX_QUEUED} publishes pending"))
            return
        mid = self._mid() if qos else 0
        alias = b""
        now = qos == 0 or self._inflight < self._window  # written at once, so it may use or set up an alias
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        if not self._v5:
            head, block = encoded, b""
        else:
            head, block = encoded, _property_bytes(properties)
            if now and self._alias_max_out:
                alias = self._aliases.get(topic, b"")
                if alias:
                    head = _EMPTY_TOPIC
                elif len(self._aliases) < self._alias_max_out:
                    alias = b"\x23" + _U16.pack(len(self._aliases) + 1)
            block = encode_varint(len(alias) + len(block)) + alias + block
        remaining = len(head) + len(block) + len(payload) + (2 if qos else 0)
        parts = (bytes((first,)), encode_varint(remaining), head, _U16.pack(mid) if qos else b"", block, payload)
        packet = b"".join(parts)
        if self._max_packet and len(packet) > self._max_packet:
            on_done(MqttError(f"{self.client_id}: publish to {topic}: {len(packet)} bytes exceed the broker's "
                              f"Maximum Packet Size of {self._max_packet}"))  # fmt: skip
            return
        if alias and head is encoded:
            self._aliases[topic] = alias
        if qos == 0:
            self._write(packet)
            on_done(None)
            return
        self._publishes[mid] = on_done
        if now:
            self._inflight += 1
            self._write(packet)
        else:
            self._queued.append(packet)

    async def subscribe(
        self,
        filters: Sequence[tuple[str, int] | SubscribeFilter],
        timeout: float = 10.0,  # noqa: ASYNC109
        *,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> list[int]:
        """Subscribe and return the SUBACK's code per filter: the granted QoS, or a failure (0x80 in 3.1.1, an MQTT 5
        reason code of 0x80 or above). MQTT 5 subscription options come with a SubscribeFilter."""
        wanted = [f if isinstance(f, SubscribeFilter) else SubscribeFilter(f[0], f[1]) for f in filters]
        props = {mp.USER_PROPERTY: list(user_properties)} if user_properties else None
        return await self._request(lambda mid: Subscribe(mid, wanted, props), "SUBACK", timeout)

    async def unsubscribe(self, filters: Sequence[str], timeout: float = 10.0) -> list[int]:  # noqa: ASYNC109
        """Unsubscribe; MQTT 5 returns a reason code per filter (0x11: there was no such subscription), 3.1.1 none."""
        return await self._request(lambda mid: Unsubscribe(mid, list(filters)), "UNSUBACK", timeout)

    async def _request(
        self,
        build: Callable[[int], Subscribe | Unsubscribe],
        answer: str,
        timeout: float,  # noqa: ASYNC109
    ) -> list[int]:
        if not self._connected:
            raise MqttError(f"{self.client_id}: not connected")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        mid = self._mid()
        self._subscribes[mid] = future
        self._write(codec.encode(build(mid), self.protocol))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise MqttError(f"{self.client_id}: {answer} timed out after {timeout}s") from None
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
        conn = self._conn
        if conn is not None:
            conn.write(packet)

    def _received(self, conn: Connection) -> None:
        buffer = conn.buffer
        if buffer[:2] == b"\x40\x02":
            self._pubacks(conn, buffer)
        pos = 0
        try:
            while (frame := split_frame(buffer, pos, MAX_VARINT)) is not None:
                first, start, pos = frame
                self._handle(conn, first, buffer, start, pos)
                if self._conn is not conn:
                    return  # torn down by a callback (abort() in on_message) or by the broker's DISCONNECT
        except MalformedPacket as exc:
            self._protocol_error(conn, str(exc))
            return
        finally:
            del buffer[:pos]

    def _pubacks(self, conn: Connection, buffer: bytearray) -> None:
        """The common case, success PUBACKs back to back, read straight off the buffer."""
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

    def _handle(self, conn: Connection, first: int, buffer: bytearray, start: int, end: int) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            self._deliver(first, buffer, start, end)
            return
        if kind in _UNEXPECTED:
            raise ProtocolViolation(f"unexpected packet type {kind} from the broker")
        packet = codec.decode(first, bytes(buffer[start:end]), self.protocol)
        if isinstance(packet, Ack):
            if packet.kind == PUBACK:
                self._acked(packet)
            elif packet.kind == PUBREL:
                self._qos2_received.discard(packet.packet_id)
                self._write(codec.encode(Ack(PUBCOMP, packet.packet_id), self.protocol))
        elif isinstance(packet, Suback | Unsuback):
            waiting = self._subscribes.pop(packet.packet_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(packet.reason_codes)
        elif isinstance(packet, PingResp):
            self._ping_sent = None
        elif isinstance(packet, Connack):
            self._connack_received(packet)
        elif isinstance(packet, Disconnect):
            self._server_disconnect(conn, packet)

    def _acked(self, ack: Ack) -> None:
        done = self._publishes.pop(ack.packet_id, None)
        if done is None:
            return
        error = None
        if ack.reason_code >= 0x80:
            code = ack.reason_code
            detail = (ack.properties or {}).get(mp.REASON_STRING)
            text = f"{self.client_id}: PUBLISH refused: {reasons.name(code)} (0x{code:02X})"
            error = PublishError(f"{text}: {detail}" if detail else text, code)
        conn = self._conn
        _call(done, error, self.client_id)
        if self._conn is not conn:
            return
        if self._queued:
            self._write(self._queued.popleft())
        else:
            self._inflight -= 1
        if self._room is not None and len(self._publishes) < self._room_limit:
            self._wake_room()

    def _connack_received(self, packet: Connack) -> None:
        connack = self._connack
        if connack is None or connack.done():
            raise ProtocolViolation("CONNACK after the connection was accepted")
        props = packet.properties or {}
        if packet.reason_code:
            connack.set_exception(ConnectError(packet.reason_code, self.protocol, props.get(mp.REASON_STRING)))
            return
        self.session_present = packet.session_present
        self.connack_properties = props
        self._window = min(MAX_INFLIGHT, props.get(mp.RECEIVE_MAXIMUM, MAX_INFLIGHT))
        self._alias_max_out = props.get(mp.TOPIC_ALIAS_MAXIMUM, 0) if self._use_aliases else 0
        self._max_packet = props.get(mp.MAXIMUM_PACKET_SIZE, 0)
        self._effective_keepalive = props.get(mp.SERVER_KEEP_ALIVE, self._keepalive)
        assigned = props.get(mp.ASSIGNED_CLIENT_IDENTIFIER)
        if assigned:
            self.client_id = assigned
        self._connected = True
        self._ping_sent = None
        assert self._loop is not None
        keepalive(self._loop, self, True)
        connack.set_result(None)

    def _deliver(self, first: int, buffer: bytearray, start: int, end: int) -> None:
        topic, mid, payload, props = codec.parse_publish(first, buffer, start, end, self._v5)
        if props is not None and mp.TOPIC_ALIAS in props:
            alias = props.pop(mp.TOPIC_ALIAS)
            if alias > self._alias_max_in:
                raise ProtocolViolation(f"topic alias {alias} above our Topic Alias Maximum", "MQTT-3.3.2-10", 0x94)
            if topic:
                self._aliases_in[alias] = topic
            elif (known := self._aliases_in.get(alias)) is not None:
                topic = known
            else:
                raise ProtocolViolation(f"topic alias {alias} was never set", "MQTT-3.3.4", 0x82)
            props = props or None
        elif not topic:
            raise ProtocolViolation("PUBLISH with an empty topic and no topic alias", "MQTT-3.3.2-1", 0x82)
        qos = (first >> 1) & 3
        duplicate = qos == 2 and mid in self._qos2_received
        if self._on_message is not None and not duplicate:
            try:
                self._on_message(Message(topic, payload, qos, bool(first & 1), props))
            except Exception:
                log.exception("%s: on_message callback failed", self.client_id)
        if qos == 1:
            self._write(codec.puback(mid))
        elif qos == 2:
            self._qos2_received.add(mid)
            self._write(codec.encode(Ack(PUBREC, mid), self.protocol))

    def _server_disconnect(self, conn: Connection, packet: Disconnect) -> None:
        code = packet.reason_code
        detail = (packet.properties or {}).get(mp.REASON_STRING)
        self.disconnect_reason, self.disconnect_reason_string = code, detail
        why = f"disconnected by the broker: {reasons.name(code)} (0x{code:02X})" + (f": {detail}" if detail else "")
        log.info("%s: %s", self.client_id, why)
        self._teardown(why, lost=self._connected, reason_code=code)
        conn.close()

    def _protocol_error(self, conn: Connection, why: str) -> None:
        log.warning("%s: closing the connection: %s", self.client_id, why)
        lost = self._connected
        self._teardown(f"connection lost (protocol error: {why})", lost=lost)
        conn.abort()

    def _keepalive_tick(self, now: float) -> None:
        period = self._effective_keepalive
        if not self._connected or not period:
            return
        if self._ping_sent is not None:
            if now - self._ping_sent >= period:
                conn = self._conn
                self._teardown("connection lost (no PINGRESP within the keep-alive)", lost=True)
                if conn is not None:
                    conn.abort()
        elif now - self.last_out >= max(1, period - 1):
            self._ping_sent = now
            self._write(codec.PINGREQ_BYTES)

    def _lost(self, conn: Connection, exc: Exception | None) -> None:
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        if self._conn is not conn:
            return  # already torn down (abort, protocol error, timeout, the broker's DISCONNECT)
        if self._disconnected is not None:
            self._teardown("disconnected", lost=False)
        else:
            self._teardown(f"connection lost ({exc or 'closed by the broker'})", lost=self._connected)

    def _teardown(self, why: str, lost: bool, reason_code: int | None = None) -> None:
        """Forget the current connection: fail what waits on it, and tell the owner if it was lost unexpectedly."""
        self._conn = None
        self._connected = False
        self._inflight = 0
        self._queued.clear()
        self._qos2_received.clear()
        self._aliases.clear()
        self._aliases_in.clear()
        self._wake_room()
        if self._loop is not None:
            keepalive(self._loop, self, False)
        publishes, subscribes = list(self._publishes.values()), list(self._subscribes.values())
        self._publishes.clear()
        self._subscribes.clear()
        for done in publishes:
            _call(done, MqttError(f"{self.client_id}: {why}", reason_code), self.client_id)
        for future in subscribes:
            if not future.done():
                future.set_exception(MqttError(f"{self.client_id}: {why}", reason_code))
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"{self.client_id}: connection closed before CONNACK ({why})"))
        if lost and self._on_connection_lost is not None:
            try:
                self._on_connection_lost()
            except Exception:
                log.exception("%s: on_connection_lost callback failed", self.client_id)
