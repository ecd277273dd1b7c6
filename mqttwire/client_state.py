"""The receiving half of mqttwire.client: a connection's state, and what the client does with each packet the broker
sends (acknowledgements, messages, CONNACK, the broker's DISCONNECT), keep-alive and teardown."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Sequence

from mqttwire import codec, reasons
from mqttwire import properties as mp
from mqttwire.client_types import ConnectError, Done, Message, MqttError, PublishError, call_done
from mqttwire.connection import Connection, keepalive
from mqttwire.errors import MalformedPacket, ProtocolViolation
from mqttwire.frame import MAX_VARINT, split_frame
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
    Disconnect,
    PingResp,
    Suback,
    Unsuback,
)
from mqttwire.properties import Properties

log = logging.getLogger("mqttwire.client")

MAX_INFLIGHT = 100  # QoS 1 publishes on the wire without a PUBACK; more wait in the client's queue
_UNEXPECTED = frozenset({CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, AUTH})  # packets only a client sends (or AUTH,
# which only follows an Authentication Method this client never sends)


class ClientState:
    """A client's options and connection state, and its reactions to the broker; AsyncMqttClient adds the calls."""

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
        username: str | None = None,
        password: bytes | None = None,
        websocket_path: str | None = None,
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
        self._username, self._password = username, password
        self._websocket_path = websocket_path  # MQTT over a WebSocket at this path (e.g. a presigned /mqtt?X-Amz-...)
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

    def _wake_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

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
            call_done(done, None, self.client_id)
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
        call_done(done, error, self.client_id)
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
            call_done(done, MqttError(f"{self.client_id}: {why}", reason_code), self.client_id)
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
