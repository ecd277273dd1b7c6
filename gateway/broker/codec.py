"""MQTT 3.1.1 wire format: frame splitting, packet decoding and encoding, over plain bytes (no I/O)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.errors import EdgesimError

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_ID_REJECTED = 2
CONNACK_NOT_AUTHORIZED = 5

PINGRESP_BYTES = b"\xd0\x00"
_U16 = struct.Struct("!H")


class ProtocolError(EdgesimError):
    """The peer sent bytes that are not valid MQTT 3.1.1; the connection is closed."""


class PacketTooLarge(ProtocolError):
    pass


@dataclass(slots=True)
class ConnectRequest:
    protocol_level: int
    client_id: str
    clean_session: bool
    keep_alive: int
    will_topic: str | None = None
    will_payload: bytes = b""
    will_qos: int = 0
    will_retain: bool = False
    username: str | None = None
    password: bytes | None = None


def split_frame(buf: bytearray | bytes, start: int, max_remaining: int) -> tuple[int, int, int] | None:
    """Find the packet at `start`: (first byte, body start, body end), or None if incomplete."""
    end = len(buf)
    if end - start < 2:
        return None
    pos = start + 1
    multiplier = 1
    remaining = 0
    while True:
        if pos >= end:
            return None
        byte = buf[pos]
        remaining += (byte & 0x7F) * multiplier
        pos += 1
        if not byte & 0x80:
            break
        multiplier *= 128
        if multiplier > 128**3:
            raise ProtocolError("malformed remaining length")
    if remaining > max_remaining:
        raise PacketTooLarge(f"packet of {remaining} bytes exceeds the limit of {max_remaining}")
    if pos + remaining > end:
        return None
    return buf[start], pos, pos + remaining


def encode_length(length: int) -> bytes:
    if length < 128:
        return bytes((length,))
    out = bytearray()
    while True:
        digit = length % 128
        length //= 128
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _string(body: bytes | memoryview, pos: int) -> tuple[str, int]:
    if pos + 2 > len(body):
        raise ProtocolError("truncated string")
    (size,) = _U16.unpack_from(body, pos)
    pos += 2
    if pos + size > len(body):
        raise ProtocolError("truncated string")
    try:
        text = bytes(body[pos : pos + size]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("string is not valid UTF-8") from exc
    if "\x00" in text:
        raise ProtocolError("string contains U+0000")
    return text, pos + size


def _binary(body: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise ProtocolError("truncated field")
    (size,) = _U16.unpack_from(body, pos)
    pos += 2
    if pos + size > len(body):
        raise ProtocolError("truncated field")
    return bytes(body[pos : pos + size]), pos + size


def decode_connect(body: bytes) -> ConnectRequest:
    name, pos = _string(body, 0)
    if pos + 4 > len(body):
        raise ProtocolError("truncated CONNECT")
    level = body[pos]
    flags = body[pos + 1]
    (keep_alive,) = _U16.unpack_from(body, pos + 2)
    pos += 4
    if name not in ("MQTT", "MQIsdp"):
        raise ProtocolError(f"unknown protocol name {name!r}")
    if level != 4:
        # Not an error in framing: the caller answers CONNACK rc=1 [MQTT-3.1.2-2].
        return ConnectRequest(level, "", True, keep_alive)
    if flags & 0x01:
        raise ProtocolError("reserved CONNECT flag set [MQTT-3.1.2-3]")
    client_id, pos = _string(body, pos)
    request = ConnectRequest(level, client_id, bool(flags & 0x02), keep_alive)
    if flags & 0x04:
        request.will_topic, pos = _string(body, pos)
        request.will_payload, pos = _binary(body, pos)
        request.will_qos = (flags >> 3) & 0x03
        request.will_retain = bool(flags & 0x20)
    elif flags & 0x38:
        raise ProtocolError("will QoS/retain set without the will flag [MQTT-3.1.2-11]")
    if flags & 0x80:
        request.username, pos = _string(body, pos)
    if flags & 0x40:
        request.password, pos = _binary(body, pos)
    return request


def decode_publish(first: int, body: bytes | memoryview) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH body."""
    if len(body) < 2:
        raise ProtocolError("truncated PUBLISH")
    size = (body[0] << 8) | body[1]
    pos = 2 + size
    if pos > len(body):
        raise ProtocolError("truncated PUBLISH topic")
    try:
        topic = bytes(body[2:pos]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("PUBLISH topic is not valid UTF-8") from exc
    packet_id = 0
    if first & 0x06:
        if pos + 2 > len(body):
            raise ProtocolError("truncated PUBLISH packet id")
        packet_id = (body[pos] << 8) | body[pos + 1]
        pos += 2
    return topic, packet_id, bytes(body[pos:])


def decode_subscribe(body: bytes | memoryview) -> tuple[int, list[tuple[str, int]]]:
    if len(body) < 3:
        raise ProtocolError("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    (packet_id,) = _U16.unpack_from(body, 0)
    pos = 2
    filters: list[tuple[str, int]] = []
    while pos < len(body):
        topic, pos = _string(body, pos)
        if pos >= len(body):
            raise ProtocolError("SUBSCRIBE filter without QoS byte")
        options = body[pos]
        pos += 1
        if options & 0xFC:
            raise ProtocolError("reserved SUBSCRIBE option bits set [MQTT-3.8.3-4]")
        filters.append((topic, options & 0x03))
    return packet_id, filters


def decode_unsubscribe(body: bytes | memoryview) -> tuple[int, list[str]]:
    if len(body) < 3:
        raise ProtocolError("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    (packet_id,) = _U16.unpack_from(body, 0)
    pos = 2
    filters: list[str] = []
    while pos < len(body):
        topic, pos = _string(body, pos)
        filters.append(topic)
    return packet_id, filters


def decode_packet_id(body: bytes | bytearray | memoryview) -> int:
    if len(body) != 2:
        raise ProtocolError("packet id field must be 2 bytes")
    return (body[0] << 8) | body[1]


def encode_connack(session_present: bool, return_code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_puback(packet_id: int) -> bytes:
    return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))


def encode_suback(packet_id: int, codes: list[int]) -> bytes:
    return bytes((0x90,)) + encode_length(2 + len(codes)) + _U16.pack(packet_id) + bytes(codes)


def encode_unsuback(packet_id: int) -> bytes:
    return bytes((0xB0, 2, packet_id >> 8, packet_id & 0xFF))


def publish_parts(topic: str, payload: bytes, qos: int, retain: bool) -> tuple[bytes, bytes]:
    """The bytes of a PUBLISH before and after its packet id, so one encoding serves many receivers.

    For QoS 0 the packet is head + tail; for QoS 1 it is head + packet id + tail.
    """
    topic_bytes = topic.encode("utf-8")
    length = 2 + len(topic_bytes) + len(payload) + (2 if qos else 0)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    head = bytes((first,)) + encode_length(length) + _U16.pack(len(topic_bytes)) + topic_bytes
    return head, payload


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0, dup: bool = False
) -> bytes:
    head, tail = publish_parts(topic, payload, qos, retain)
    if dup:
        head = bytes((head[0] | 0x08,)) + head[1:]
    if qos:
        return head + _U16.pack(packet_id) + tail
    return head + tail
