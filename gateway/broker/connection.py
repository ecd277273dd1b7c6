"""One MQTT 3.1.1 or 5 client connection: framing, the per-packet state machine, quotas and flow control."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from gateway.messages import AckHold, Message
from mqttwire import codec, reasons
from mqttwire.errors import MalformedPacket, ProtocolViolation
from mqttwire.frame import split_frame
from mqttwire.packets import (
    AUTH,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBLISH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    V5,
    V311,
    Disconnect,
    Subscribe,
    Unsubscribe,
    Will,
)
from mqttwire.properties import REASON_STRING, Properties

if TYPE_CHECKING:
    from gateway.broker.core import Broker, Subscription
    from gateway.identity.authn import Authentication
    from gateway.identity.authorizer import Authorizer

log = logging.getLogger("edgesim.broker")

# PUBLISH packets one connection has routed per event-loop turn at most: one flooding client cannot hold the loop.
PUBLISH_BUDGET = 256


class Connection(asyncio.Protocol):
    """Parses packets synchronously in data_received: no task per message, no await on the hot path."""

    __slots__ = (
        "_out",
        "_out_bytes",
        "acks",
        "acks_paused",
        "aliases",
        "authorizer",
        "broker",
        "buf",
        "cert_der",
        "clean_disconnect",
        "client_id",
        "closed",
        "connected",
        "connected_ms",
        "disconnect_reason",
        "door",
        "dropped_qos0",
        "generation",
        "identity",
        "inflight",
        "keep_alive",
        "last_message",
        "last_rx",
        "max_out",
        "next_pid",
        "opened",
        "peer_ip",
        "pending",
        "persistent",
        "principal",
        "problem_info",
        "quota_count",
        "quota_window",
        "read_blocks",
        "resume_after",
        "seen_properties",
        "session_expiry",
        "session_id",
        "stored",
        "subscriptions",
        "transport",
        "version",
        "waiting",
        "will",
        "window",
    )

    def __init__(self, broker: Broker, door: str) -> None:
        self.broker = broker
        self.door = door
        self.transport: Any = None
        self.buf = bytearray()
        self.connected = False
        self.closed = False
        self.clean_disconnect = False
        self.version = V311
        self.persistent = False  # the session outlives the connection: the broker parks it when it goes
        self.session_expiry = 0  # seconds the session outlives the connection
        self.session_id = ""  # the lifecycle events' sessionIdentifier
        self.client_id = ""
        self.principal: str | None = None
        self.cert_der: bytes | None = None
        self.peer_ip: str | None = None
        self.authorizer: Authorizer | None = None
        self.identity: Authentication | None = None  # set when it authenticated without a certificate
        self.generation = -1
        self.keep_alive = 0.0
        self.last_rx = 0.0
        self.opened = 0.0
        self.connected_ms = 0
        self.disconnect_reason: str | None = None  # for the disconnected lifecycle event
        self.last_message: Message | None = None  # the dashboard shows it
        self.subscriptions: dict[str, Subscription] = {}
        self.will: Will | None = None
        self.aliases: dict[int, str] = {}  # MQTT 5 topic aliases the client set up
        self.seen_properties: tuple[bytes, Properties] | None = None  # the last PUBLISH's block, decoded
        self.problem_info = True  # MQTT 5 Request Problem Information
        self.window = broker.inflight_window  # QoS 1 deliveries in flight at most (the client's Receive Maximum)
        self.max_out = 0  # the client's Maximum Packet Size (0: no limit of its own)
        self.inflight: dict[int, bytes] = {}
        # Waiting for room in the in-flight window: (head, tail, store seq or 0 for a live message).
        self.pending: deque[tuple[bytes, bytes, int]] = deque()
        # Packet id -> store seq, for in-flight messages a persistent session had queued: the store keeps each
        # until its PUBACK, so a crash or a drop loses none of them.
        self.stored: dict[int, int] = {}
        self.resume_after = 0  # the last store seq handed to this connection while draining its session
        # PUBACKs waiting for durable work, in PUBLISH order [MQTT-4.6.0-2]: (packet id, hold or None when ready,
        # the PUBACK with a reason code of a refused MQTT 5 PUBLISH or None).
        self.acks: deque[tuple[int, AckHold | None, bytes | None]] = deque()
        self.next_pid = 1
        self.quota_window = 0.0
        self.quota_count = 0
        # Reasons reading is paused (the publish quota, each backed-up subscriber); reading resumes at zero.
        self.read_blocks = 0
        self.acks_paused = False  # not read until the PUBACKs held for durable work catch up (Broker.acks_high)
        # Publishers paused because this subscriber's QoS 1 queue is full.
        self.waiting: set[Connection] = set()
        self.dropped_qos0 = 0
        self._out: list[bytes] = []
        self._out_bytes = 0

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle plus delayed ACKs would floor request/response round trips at ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.cert_der = ssl_object.getpeercert(binary_form=True)
        self.last_rx = self.opened = self.broker.loop.time()
        self.keep_alive = self.broker.connect_timeout
        self.broker.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.release_waiting()
        self.broker.connection_closed(self)

    def data_received(self, data: bytes | memoryview) -> None:
        # From the TLS door `data` is a view of a buffer every connection decrypts into: copy it, never keep it.
        self.last_rx = self.broker.loop.time()
        self.buf += data
        if not self.read_blocks:
            self.process()

    # ---- output
    def send(self, data: bytes) -> None:
        if not self._out:
            self.broker.mark_dirty(self)
        self._out.append(data)
        self._out_bytes += len(data)

    def flush(self) -> None:
        if self._out and not self.closed:
            self.transport.writelines(self._out)
        self._out.clear()
        self._out_bytes = 0

    def backlog(self) -> int:
        """Bytes waiting to go out: asked per QoS 0 delivery, so O(1) (a flood puts thousands in one turn's batch)."""
        return int(self.transport.get_write_buffer_size()) + self._out_bytes

    def close(self, reason: str, code: int | None = None) -> None:
        """Close the connection; an MQTT 5 client that got its CONNACK first hears `code` in a DISCONNECT."""
        if self.closed:
            return
        log.info("closing %s (%s): %s", self.client_id or "?", self.peer_ip, reason)
        if code is not None and self.version == V5 and self.connected:
            props = {REASON_STRING: reason[:200]} if self.problem_info else None
            self.send(codec.encode(Disconnect(code, props), V5))
        self.flush()
        self.closed = True
        self.transport.close()

    def reason_props(self, text: str) -> dict[int, Any] | None:
        """A Reason String for an MQTT 5 acknowledgement, unless the client asked for no problem information."""
        return {REASON_STRING: text[:200]} if self.problem_info else None

    # ---- input
    def process(self) -> None:
        buf = self.buf
        pos = 0
        limit = self.broker.max_packet_bytes
        budget = PUBLISH_BUDGET
        try:
            while not self.closed:
                if pos < len(buf) and not self.connected and buf[pos] != 0x10:
                    # Judge the first byte before waiting for a body that may never come.
                    raise ProtocolViolation("first packet must be CONNECT", "MQTT-3.1.0-1")
                frame = split_frame(buf, pos, limit)
                if frame is None:
                    break
                first, start, end = frame
                kind = first >> 4
                if kind == PUBLISH:
                    if not self.connected:
                        raise ProtocolViolation("PUBLISH before CONNECT", "MQTT-3.1.0-1")
                    if self.read_blocks:
                        break
                    if len(self.acks) >= self.broker.acks_high:  # before the quota counts this PUBLISH
                        self.acks_paused = True
                        self.broker.stats["paused_for_acks"] += 1
                        self.block_reading()
                        break
                    if not self._quota_ok():
                        break
                    if not budget:
                        # Fairness under a flood: let the other connections, writers and the API have the loop;
                        # until the next turn this connection is not read, so TCP holds its publisher back.
                        self.block_reading()
                        self.broker.loop.call_soon(self.unblock_reading)
                        break
                    budget -= 1
                    self.broker.on_publish(self, first, buf, start, end)
                elif not self.connected:
                    if kind != CONNECT:
                        raise ProtocolViolation("first packet must be CONNECT", "MQTT-3.1.0-1")
                    if first != 0x10:
                        raise MalformedPacket("CONNECT with reserved flags", "MQTT-2.1.3-1")
                    if not self.broker.on_connect(self, bytes(buf[start:end])):
                        pos = end
                        break
                elif kind == PUBACK:
                    self._on_puback(first, buf, start, end)
                elif kind == PINGREQ:
                    if first != 0xC0 or end != start:
                        raise MalformedPacket("malformed PINGREQ")
                    self.send(codec.PINGRESP_BYTES)
                elif kind == SUBSCRIBE:
                    packet = codec.decode(first, bytes(buf[start:end]), self.version)
                    assert isinstance(packet, Subscribe)
                    self.broker.on_subscribe(self, packet)
                elif kind == UNSUBSCRIBE:
                    packet = codec.decode(first, bytes(buf[start:end]), self.version)
                    assert isinstance(packet, Unsubscribe)
                    self.broker.on_unsubscribe(self, packet)
                elif kind == DISCONNECT:
                    packet = codec.decode(first, bytes(buf[start:end]), self.version)
                    assert isinstance(packet, Disconnect)
                    self.broker.on_disconnect(self, packet)
                elif kind == CONNECT:
                    raise ProtocolViolation("second CONNECT on one connection", "MQTT-3.1.0-2")
                elif kind == AUTH and self.version == V5:
                    codec.decode(first, bytes(buf[start:end]), self.version)  # malformed first, then refused
                    raise ProtocolViolation("AUTH without an Authentication Method in CONNECT", "MQTT-4.12.0-1")
                else:
                    codec.check_flags(first)
                    # PUBREC/PUBREL/PUBCOMP: AWS IoT has no QoS 2; anything else is not a client packet.
                    raise ProtocolViolation(f"unsupported packet type {kind}")
                pos = end
        except MalformedPacket as exc:
            self.close(f"protocol error: {exc}", exc.reason)
        except Exception:  # a bug must cost one connection, never the gateway
            log.exception("internal error handling a packet from %s", self.client_id or self.peer_ip)
            self.close("internal error", reasons.IMPLEMENTATION_SPECIFIC_ERROR)
        if pos:
            del buf[:pos]

    def _quota_ok(self) -> bool:
        per_second = self.broker.publishes_per_second
        if not per_second:
            return True
        now = self.broker.loop.time()
        if now - self.quota_window >= 1.0:
            self.quota_window = now
            self.quota_count = 0
        self.quota_count += 1
        if self.quota_count <= per_second:
            return True
        # Throttle with TCP backpressure: stop reading until the next one-second window.
        self.quota_count -= 1
        self.block_reading()
        self.broker.loop.call_at(self.quota_window + 1.0, self.unblock_reading)
        return False

    def block_reading(self) -> None:
        self.read_blocks += 1
        if self.read_blocks == 1 and not self.closed:
            self.transport.pause_reading()

    def unblock_reading(self) -> None:
        self.read_blocks -= 1
        if self.read_blocks == 0 and not self.closed:
            self.transport.resume_reading()
            self.process()

    def release_waiting(self) -> None:
        waiting, self.waiting = self.waiting, set()
        for publisher in waiting:
            publisher.unblock_reading()

    # ---- QoS 1 delivery with an in-flight window
    def deliver_qos1(self, head: bytes, tail: bytes, sender: Connection | None, seq: int = 0) -> bool:
        """Send now if the in-flight window allows, else queue; a long queue pauses the sender instead of dropping.
        `seq`: the message's row in the session store, deleted once the client acknowledges it."""
        if len(self.inflight) < self.window:
            self._send_qos1(head, tail, seq)
            return True
        if len(self.pending) >= self.broker.pending_limit:
            return False
        self.pending.append((head, tail, seq))
        if (
            len(self.pending) >= self.broker.pending_high
            and sender is not None
            and sender is not self
            and sender not in self.waiting
        ):
            self.waiting.add(sender)
            sender.block_reading()
        return True

    def _send_qos1(self, head: bytes, tail: bytes, seq: int = 0) -> None:
        pid = self.next_pid
        while pid in self.inflight:
            pid = pid % 65535 + 1
        self.next_pid = pid % 65535 + 1
        packet = head + bytes((pid >> 8, pid & 0xFF)) + tail
        self.inflight[pid] = packet
        if seq:
            self.stored[pid] = seq
        self.send(packet)

    def _on_puback(self, first: int, buf: bytearray, start: int, end: int) -> None:
        if first != 0x40:
            raise MalformedPacket("PUBACK with reserved flags", "MQTT-2.1.3-1")
        size = end - start
        if size != 2:
            # MQTT 5 adds a reason code and properties; they change nothing here, but must be well formed.
            codec.decode(first, bytes(buf[start:end]), self.version)
        pid = (buf[start] << 8) | buf[start + 1]
        if self.stored:
            seq = self.stored.pop(pid, 0)
            store = self.broker.session_store
            if seq and store is not None:
                store.acknowledge_soon(seq)
        if self.inflight.pop(pid, None) is not None and self.pending:
            self._send_qos1(*self.pending.popleft())
            if self.waiting and len(self.pending) <= self.broker.pending_high // 2:
                self.release_waiting()
