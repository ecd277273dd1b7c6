"""MQTT 3.1.1 packets for the client side, pure: encode what a device sends, split and decode what a broker sends."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "CONNACK",
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "UNSUBACK",
    "Incoming",
    "ProtocolError",
    "ack_packet",
    "connect_packet",
    "encode_length",
    "encode_string",
    "packet_id",
    "parse_publish",
    "publish_packet",
    "split_packets",
    "subscribe_packet",
]

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
MAX_REMAINING_LENGTH = 268_435_455
_MID = struct.Struct("!H")


class ProtocolError(ValueError):
    """The broker sent bytes that are not MQTT 3.1.1."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One packet from the broker: its type (upper nibble), flags (lower nibble) and body after the fixed header."""

    kind: int
    flags: int
    body: bytes


def encode_length(n: int) -> bytes:
    """MQTT's variable-length Remaining Length field."""
    if n < 128:
        return bytes((n,))
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet of {n} bytes exceeds MQTT's maximum of {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def encode_string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes exceeds MQTT's 65,535")
    return _MID.pack(len(data)) + data


def connect_packet(client_id: str, keepalive: int, clean_session: bool = True) -> bytes:
    body = b"".join(
        (
            encode_string("MQTT"),
            b"\x04",
            b"\x02" if clean_session else b"\x00",
            _MID.pack(keepalive),
            encode_string(client_id),
        )
    )
    return b"\x10" + encode_length(len(body)) + body


def publish_packet(encoded_topic: bytes, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    """`encoded_topic` is encode_string(topic), which a device re-uses for every message to the same topic."""
    first = 0x30 | (qos << 1) | int(retain)
    if qos:
        return b"".join(
            (
                bytes((first,)),
                encode_length(len(encoded_topic) + 2 + len(payload)),
                encoded_topic,
                _MID.pack(mid),
                payload,
            )
        )
    return b"".join((bytes((first,)), encode_length(len(encoded_topic) + len(payload)), encoded_topic, payload))


def subscribe_packet(mid: int, filters: list[tuple[str, int]]) -> bytes:
    body = _MID.pack(mid) + b"".join(encode_string(topic) + bytes((qos,)) for topic, qos in filters)
    return b"\x82" + encode_length(len(body)) + body


def ack_packet(kind: int, mid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010, as the spec requires) or PUBCOMP."""
    return bytes(((kind << 4) | (2 if kind == PUBREL else 0), 2)) + _MID.pack(mid)


def split_packets(buffer: bytearray) -> list[Incoming]:
    """Take every whole packet off the front of `buffer`; a partial packet stays for the next read."""
    packets: list[Incoming] = []
    pos, end = 0, len(buffer)
    while end - pos >= 2:
        first = buffer[pos]
        length, multiplier, i = 0, 1, pos + 1
        while True:
            if i >= end:
                del buffer[:pos]
                return packets
            digit = buffer[i]
            length += (digit & 0x7F) * multiplier
            i += 1
            if not digit & 0x80:
                break
            multiplier <<= 7
            if multiplier > 0x80**3:
                raise ProtocolError("remaining length longer than four bytes")
        if end - i < length:
            break
        packets.append(Incoming(first >> 4, first & 0x0F, bytes(buffer[i : i + length])))
        pos = i + length
    del buffer[:pos]
    return packets


def parse_publish(flags: int, body: bytes) -> tuple[str, bytes, int, bool, int]:
    """(topic, payload, qos, retain, packet id or 0) of an incoming PUBLISH."""
    qos = (flags >> 1) & 3
    if qos == 3 or len(body) < 2:
        raise ProtocolError("malformed PUBLISH")
    (size,) = _MID.unpack_from(body)
    start = 2 + size
    if start > len(body):
        raise ProtocolError("PUBLISH topic longer than the packet")
    try:
        topic = body[2:start].decode()
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    mid = 0
    if qos:
        if len(body) < start + 2:
            raise ProtocolError("PUBLISH without a packet id")
        (mid,) = _MID.unpack_from(body, start)
        start += 2
    return topic, body[start:], qos, bool(flags & 1), mid


def packet_id(body: bytes) -> int:
    if len(body) < 2:
        raise ProtocolError("acknowledgement without a packet id")
    mid: int = _MID.unpack_from(body)[0]
    return mid
