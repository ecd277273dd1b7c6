"""Decoding and encoding of every MQTT 3.1.1 and 5 control packet, over plain bytes.

The decoder is total: any bytes give a packet or a `MalformedPacket` (never IndexError or UnicodeDecodeError).
`parse_publish` and `publish_parts` are the allocation-light paths a broker and a simulator use per message.
"""

from __future__ import annotations

import struct

from mqttwire import properties as mp
from mqttwire.errors import MalformedPacket, ProtocolViolation
from mqttwire.frame import encode_varint
from mqttwire.packets import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    TYPE_NAMES,
    UNSUBACK,
    UNSUBSCRIBE,
    V5,
    V311,
    Ack,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Publish,
    Suback,
    Subscribe,
    SubscribeFilter,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttwire.properties import Properties, decode_properties, encode_binary, encode_properties, encode_string
from mqttwire.properties import read_binary as _binary
from mqttwire.properties import read_string as _string

Buffer = bytes | bytearray | memoryview
_U16 = struct.Struct("!H")
# Required fixed-header flags per packet type [MQTT-2.2.2-1]; PUBLISH's carry DUP, QoS and RETAIN.
_FLAGS = {CONNECT: 0, CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2, SUBACK: 0,
          UNSUBSCRIBE: 2, UNSUBACK: 0, PINGREQ: 0, PINGRESP: 0, DISCONNECT: 0, AUTH: 0}  # fmt: skip
PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_V3_BYTES = b"\xe0\x00"


def _u16(data: Buffer, pos: int, end: int, what: str) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"truncated {what}")
    return (data[pos] << 8) | data[pos + 1]


def _packet_id(data: Buffer, pos: int, end: int) -> int:
    pid = _u16(data, pos, end, "packet identifier")
    if pid == 0:
        raise MalformedPacket("packet identifier 0", "MQTT-2.2.1-3")
    return pid


def check_flags(first: int) -> None:
    kind = first >> 4
    if kind == PUBLISH:
        qos = (first >> 1) & 3
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3", "MQTT-3.3.1-4")
        if qos == 0 and first & 0x08:
            raise MalformedPacket("DUP set on a QoS 0 PUBLISH", "MQTT-3.3.1-2")
        return
    required = _FLAGS.get(kind)
    if required is None:
        raise MalformedPacket(f"reserved packet type {kind}", "MQTT-2.1.2")
    if first & 0x0F != required:
        raise MalformedPacket(f"{TYPE_NAMES[kind]} with reserved flags {first & 0x0F:04b}", "MQTT-2.1.3-1")


# ---------------------------------------------------------------- decoding


def decode(first: int, body: Buffer, version: int) -> Packet:
    """One packet from its first byte and body. `version` is the connection's (CONNECT finds its own)."""
    check_flags(first)
    kind = first >> 4
    end = len(body)
    if kind == CONNECT:
        return decode_connect(body)
    if kind == PUBLISH:
        data = bytes(body) if isinstance(body, memoryview) else body
        topic, pid, payload, props = parse_publish(first, data, 0, end, version == V5)
        return Publish(topic, payload, (first >> 1) & 3, bool(first & 1), bool(first & 8), pid, props)
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        return _decode_ack(kind, body, end, version)
    if kind == SUBSCRIBE:
        return _decode_subscribe(body, end, version)
    if kind == UNSUBSCRIBE:
        return _decode_unsubscribe(body, end, version)
    if kind == CONNACK:
        return _decode_connack(body, end, version)
    if kind == SUBACK:
        pid = _packet_id(body, 0, end)
        pos = 2
        props = None
        if version == V5:
            props, pos = decode_properties(body, pos, end, SUBACK)
        return Suback(pid, list(body[pos:end]), props)
    if kind == UNSUBACK:
        pid = _packet_id(body, 0, end)
        if version != V5:
            if end != 2:
                raise MalformedPacket("UNSUBACK body must be 2 bytes")
            return Unsuback(pid)
        props, pos = decode_properties(body, 2, end, UNSUBACK)
        return Unsuback(pid, list(body[pos:end]), props)
    if kind in (PINGREQ, PINGRESP):
        if end:
            raise MalformedPacket(f"{TYPE_NAMES[kind]} with a body")
        return PingReq() if kind == PINGREQ else PingResp()
    if kind == DISCONNECT:
        if version != V5:
            if end:
                raise MalformedPacket("MQTT 3.1.1 DISCONNECT with a body")
            return Disconnect()
        reason, props = _reason_and_properties(body, end, DISCONNECT)
        return Disconnect(reason, props)
    if version != V5:
        raise MalformedPacket("AUTH is not an MQTT 3.1.1 packet", "MQTT-2.1.2")
    reason, props = _reason_and_properties(body, end, AUTH)
    return Auth(reason, props)


def _reason_and_properties(body: Buffer, end: int, context: int) -> tuple[int, Properties | None]:
    if not end:
        return 0, None
    if end == 1:
        return body[0], None
    props, pos = decode_properties(body, 1, end, context)
    if pos != end:
        raise MalformedPacket(f"trailing bytes after the {TYPE_NAMES[context]} properties")
    return body[0], props


def decode_connect(body: Buffer) -> Connect:
    end = len(body)
    name, pos = _string(body, 0, end, "protocol name")
    if pos + 4 > end:
        raise MalformedPacket("truncated CONNECT variable header")
    level, flags = body[pos], body[pos + 1]
    keep_alive = (body[pos + 2] << 8) | body[pos + 3]
    pos += 4
    if name not in ("MQTT", "MQIsdp"):
        raise MalformedPacket(f"unknown protocol name {name!r}", "MQTT-3.1.2-1")
    if level not in (V311, V5) or (name == "MQIsdp") != (level == 3):
        # Well framed but not a version spoken here: the caller answers "unacceptable protocol version".
        return Connect("", protocol_level=level, keep_alive=keep_alive, protocol_name=name)
    if flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set", "MQTT-3.1.2-3")
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain set without the will flag", "MQTT-3.1.2-11")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3", "MQTT-3.1.2-14")
    has_user, has_password = bool(flags & 0x80), bool(flags & 0x40)
    if level == V311 and has_password and not has_user:
        raise MalformedPacket("password without a user name", "MQTT-3.1.2-22")
    props = None
    if level == V5:
        props, pos = decode_properties(body, pos, end, CONNECT)
    client_id, pos = _string(body, pos, end, "client identifier")
    request = Connect(client_id, level, bool(flags & 0x02), keep_alive, properties=props, protocol_name=name)
    if will_flag:
        will_props = None
        if level == V5:
            will_props, pos = decode_properties(body, pos, end, mp.WILL)
        topic, pos = _string(body, pos, end, "will topic")
        payload, pos = _binary(body, pos, end, "will payload")
        request.will = Will(topic, payload, will_qos, will_retain, will_props)
    if has_user:
        request.username, pos = _string(body, pos, end, "user name")
    if has_password:
        request.password, pos = _binary(body, pos, end, "password")
    if pos != end:
        raise MalformedPacket("trailing bytes after the CONNECT payload")
    return request


def _decode_connack(body: Buffer, end: int, version: int) -> Connack:
    if end < 2:
        raise MalformedPacket("truncated CONNACK")
    if body[0] & 0xFE:
        raise MalformedPacket("reserved CONNACK acknowledge flags set", "MQTT-3.2.2-1")
    props = None
    if version == V5:
        props, pos = decode_properties(body, 2, end, CONNACK)
        if pos != end:
            raise MalformedPacket("trailing bytes after CONNACK")
    elif end != 2:
        raise MalformedPacket("MQTT 3.1.1 CONNACK body must be 2 bytes")
    return Connack(bool(body[0] & 1), body[1], props)


def _decode_ack(kind: int, body: Buffer, end: int, version: int) -> Ack:
    pid = _packet_id(body, 0, end)
    if version != V5:
        if end != 2:
            raise MalformedPacket(f"MQTT 3.1.1 {TYPE_NAMES[kind]} body must be 2 bytes")
        return Ack(kind, pid)
    if end == 2:
        return Ack(kind, pid)
    props = None
    if end > 3:
        props, pos = decode_properties(body, 3, end, kind)
        if pos != end:
            raise MalformedPacket(f"trailing bytes after {TYPE_NAMES[kind]}")
    return Ack(kind, pid, body[2], props)


def _decode_subscribe(body: Buffer, end: int, version: int) -> Subscribe:
    pid = _packet_id(body, 0, end)
    pos = 2
    props = None
    if version == V5:
        props, pos = decode_properties(body, pos, end, SUBSCRIBE)
    filters: list[SubscribeFilter] = []
    while pos < end:
        topic_filter, pos = _string(body, pos, end, "topic filter")
        if pos >= end:
            raise MalformedPacket("topic filter without its options byte")
        options = body[pos]
        pos += 1
        qos = options & 0x03
        if qos == 3:
            raise MalformedPacket("SUBSCRIBE asking for QoS 3", "MQTT-3.8.3-4")
        if version == V5:
            if options & 0xC0:
                raise MalformedPacket("reserved subscription option bits set", "MQTT-3.8.3-5")
            handling = (options >> 4) & 0x03
            if handling == 3:
                raise MalformedPacket("Retain Handling 3", "MQTT-3.8.3-5")
            filters.append(SubscribeFilter(topic_filter, qos, bool(options & 4), bool(options & 8), handling))
        else:
            if options & 0xFC:
                raise MalformedPacket("reserved SUBSCRIBE option bits set", "MQTT-3.8.3-4")
            filters.append(SubscribeFilter(topic_filter, qos))
    if not filters:
        raise ProtocolViolation("SUBSCRIBE without a topic filter", "MQTT-3.8.3-3")
    return Subscribe(pid, filters, props)


def _decode_unsubscribe(body: Buffer, end: int, version: int) -> Unsubscribe:
    pid = _packet_id(body, 0, end)
    pos = 2
    props = None
    if version == V5:
        props, pos = decode_properties(body, pos, end, UNSUBSCRIBE)
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = _string(body, pos, end, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE without a topic filter", "MQTT-3.10.3-2")
    return Unsubscribe(pid, filters, props)


def parse_publish(
    first: int, buf: bytes | bytearray, start: int, end: int, v5: bool
) -> tuple[str, int, bytes, Properties | None]:
    """(topic, packet id or 0, payload, properties) of the PUBLISH body buf[start:end].

    The topic is checked for well-formed UTF-8, U+0000 and wildcards; an empty topic is allowed only in MQTT 5 (a
    topic alias stands in for it, which the caller resolves).
    """
    topic, pid, payload, props, _ = parse_publish_block(first, buf, start, end, v5)
    return topic, pid, payload, props


def parse_publish_block(
    first: int, buf: bytes | bytearray, start: int, end: int, v5: bool, seen: tuple[bytes, Properties] | None = None
) -> tuple[str, int, bytes, Properties | None, bytes | None]:
    """parse_publish, plus the MQTT 5 property block as received (length included), for a broker that forwards it
    unchanged instead of encoding the same properties again.

    `seen` is a block this connection sent before with its decoded properties: a device sends the same block
    message after message (its tags, its content type), and a block equal to it is not decoded again. The
    properties then returned are that same object, so the caller must treat them as read-only."""
    if first & 0x06 == 0x06:
        raise MalformedPacket("PUBLISH with QoS 3", "MQTT-3.3.1-4")
    if first & 0x0E == 0x08:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH", "MQTT-3.3.1-2")
    if start + 2 > end:
        raise MalformedPacket("truncated PUBLISH topic")
    size = (buf[start] << 8) | buf[start + 1]
    pos = start + 2 + size
    if pos > end:
        raise MalformedPacket("PUBLISH topic runs past the end of the packet")
    try:
        topic = buf[start + 2 : pos].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("PUBLISH topic is not well-formed UTF-8", "MQTT-1.5.4-1") from None
    if "\x00" in topic:
        raise MalformedPacket("PUBLISH topic contains U+0000", "MQTT-1.5.4-2")
    if "+" in topic or "#" in topic:
        raise ProtocolViolation("PUBLISH topic contains a wildcard", "MQTT-3.3.2-2", 0x90)
    if not topic and not v5:
        raise ProtocolViolation("PUBLISH with an empty topic", "MQTT-4.7.3-1", 0x90)
    pid = 0
    if first & 0x06:
        pid = _packet_id(buf, pos, end)
        pos += 2
    if not v5:
        return topic, pid, bytes(buf[pos:end]), None, None
    # The hot paths return early: a device repeats its block message after message, or sends none.
    if seen is not None and buf.startswith(seen[0], pos, end):
        # The whole block, its length included, is the one seen, inside this packet: no copy, no decoding.
        seen_block, seen_props = seen
        return topic, pid, bytes(buf[pos + len(seen_block) : end]), seen_props, seen_block
    if pos < end and buf[pos] == 0:
        return topic, pid, bytes(buf[pos + 1 : end]), None, None
    block_start = pos
    props, pos = decode_properties(buf, pos, end, PUBLISH)
    response = props.get(mp.RESPONSE_TOPIC) if props is not None else None
    if response is not None and (not response or "+" in response or "#" in response):
        raise ProtocolViolation("Response Topic is empty or has a wildcard", "MQTT-3.3.2-14")
    return topic, pid, bytes(buf[pos:end]), props, bytes(buf[block_start:pos])


# ---------------------------------------------------------------- encoding


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode(packet: Packet, version: int) -> bytes:
    """The bytes of `packet` for a connection speaking `version` (4 or 5)."""
    v5 = version == V5
    if isinstance(packet, Publish):
        props = encode_properties(packet.properties) if v5 else None
        head, tail = publish_parts(packet.topic, packet.payload, packet.qos, packet.retain, props)
        if packet.dup:
            head = bytes((head[0] | 0x08,)) + head[1:]
        return head + _U16.pack(packet.packet_id) + tail if packet.qos else head + tail
    if isinstance(packet, Ack):
        first = (packet.kind << 4) | (2 if packet.kind == PUBREL else 0)
        if not v5 or (packet.reason_code == 0 and not packet.properties):
            return bytes((first, 2)) + _U16.pack(packet.packet_id)
        body = _U16.pack(packet.packet_id) + bytes((packet.reason_code,))
        if packet.properties:
            body += encode_properties(packet.properties)
        return _frame(first, body)
    if isinstance(packet, Connect):
        return _encode_connect(packet)
    if isinstance(packet, Connack):
        body = bytes((1 if packet.session_present else 0, packet.reason_code))
        if v5:
            body += encode_properties(packet.properties)
        return _frame(0x20, body)
    if isinstance(packet, Subscribe):
        body = _U16.pack(packet.packet_id) + (encode_properties(packet.properties) if v5 else b"")
        for f in packet.filters:
            options = f.qos
            if v5:
                options |= (4 if f.no_local else 0) | (8 if f.retain_as_published else 0) | (f.retain_handling << 4)
            body += encode_string(f.topic_filter) + bytes((options,))
        return _frame(0x82, body)
    if isinstance(packet, Suback):
        body = _U16.pack(packet.packet_id) + (encode_properties(packet.properties) if v5 else b"")
        return _frame(0x90, body + bytes(packet.reason_codes))
    if isinstance(packet, Unsubscribe):
        body = _U16.pack(packet.packet_id) + (encode_properties(packet.properties) if v5 else b"")
        return _frame(0xA2, body + b"".join(encode_string(f) for f in packet.filters))
    if isinstance(packet, Unsuback):
        body = _U16.pack(packet.packet_id)
        if v5:
            body += encode_properties(packet.properties) + bytes(packet.reason_codes)
        return _frame(0xB0, body)
    if isinstance(packet, PingReq):
        return PINGREQ_BYTES
    if isinstance(packet, PingResp):
        return PINGRESP_BYTES
    if isinstance(packet, Disconnect):
        if not v5:
            return DISCONNECT_V3_BYTES
        if packet.reason_code == 0 and not packet.properties:
            return DISCONNECT_V3_BYTES
        body = bytes((packet.reason_code,)) + (encode_properties(packet.properties) if packet.properties else b"")
        return _frame(0xE0, body)
    if not v5:
        raise ValueError("AUTH does not exist in MQTT 3.1.1")
    body = bytes((packet.reason_code,)) + (encode_properties(packet.properties) if packet.properties else b"")
    return _frame(0xF0, body if packet.reason_code or packet.properties else b"")


def _encode_connect(packet: Connect) -> bytes:
    v5 = packet.protocol_level == V5
    flags = 0x02 if packet.clean_start else 0
    will = packet.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    parts = [
        encode_string(packet.protocol_name),
        bytes((packet.protocol_level, flags)),
        _U16.pack(packet.keep_alive),
    ]
    if v5:
        parts.append(encode_properties(packet.properties))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _frame(0x10, b"".join(parts))


def publish_parts(
    topic: str | bytes, payload: bytes, qos: int, retain: bool, properties: bytes | None = None
) -> tuple[bytes, bytes]:
    """A PUBLISH split around its packet id, so one encoding serves many receivers: QoS 0 is head + tail, QoS 1
    head + packet id + tail. `properties` is an encoded property block for MQTT 5 receivers (None: 3.1.1);
    `topic` may be given already encoded as UTF-8."""
    topic_bytes = topic.encode("utf-8") if isinstance(topic, str) else topic
    tail = payload if properties is None else properties + payload
    length = 2 + len(topic_bytes) + len(tail) + (2 if qos else 0)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes((first,)) + encode_varint(length) + _U16.pack(len(topic_bytes)) + topic_bytes, tail


def puback(packet_id: int, reason_code: int = 0, reason_string: str | None = None) -> bytes:
    """A PUBACK: the 4-byte form for success (valid in both versions), with a reason (MQTT 5 only) otherwise."""
    if not reason_code and reason_string is None:
        return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))
    props = {mp.REASON_STRING: reason_string} if reason_string else None
    return encode(Ack(PUBACK, packet_id, reason_code, props), V5)
