"""A small asyncio MQTT 3.1.1 and 5 client: one asyncio protocol per connection, thousands on one event loop.

Not paho: driven from asyncio, paho-mqtt cost the fleet simulator ~200 µs of CPU per QoS 1 message (a message-info
object, a condition variable, a reason code and a properties object per PUBACK, byte-by-byte reads). This client, with
a callback instead of a future per publish and one transport write per loop turn, lets one process sustain ~10x the
rate (bench/fleet.py, part b). MQTT 5 adds little per message: a success PUBACK is the same four bytes, a publish's
property block can be handed over already encoded, and topic aliases replace repeated topics on the wire.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.client_state import MAX_INFLIGHT, ClientState
from mqttwire.client_types import (
    ConnectError,
    Done,
    Message,
    MqttError,
    PublishError,
    property_bytes,
    publish_properties,
)
from mqttwire.connection import Connection
from mqttwire.frame import encode_varint
from mqttwire.packets import Connect, Disconnect, Subscribe, SubscribeFilter, Unsubscribe
from mqttwire.properties import Properties
from mqttwire.websocket import WebSocketConnection

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

MAX_QUEUED = 10_000  # every pending publish holds a packet id: far below 65,535, so ids never collide
_U16 = struct.Struct("!H")
_EMPTY_TOPIC = b"\x00\x00"


class AsyncMqttClient(ClientState):
    """One MQTT connection served by the running loop (3.1.1, or 5 with `protocol=5`); connect() again to reconnect.

    MQTT 5 options: `session_expiry` (seconds; 0 ends the session with the connection), `receive_maximum`,
    `user_properties` on CONNECT, `topic_alias_maximum` (aliases the broker may use towards us) and `topic_aliases`
    (use the broker's Topic Alias Maximum for our publishes). `clean_start` is 3.1.1's clean session flag too.
    """

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
        if self._websocket_path is None:
            conn = Connection(self, loop, self._ssl, self._host)
        else:
            conn = WebSocketConnection(self, loop, self._ssl, self._host, self._websocket_path,
                                       f"{self._host}:{self._port}")  # fmt: skip
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
                                  username=self._username, password=self._password,
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
            head, block = encoded, property_bytes(properties)
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
