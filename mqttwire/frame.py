"""MQTT framing: the Variable Byte Integer (remaining length, property lengths) and splitting a byte stream into
packets. Pure and version-independent."""

from __future__ import annotations

from mqttwire.errors import MalformedPacket, PacketTooLarge

MAX_VARINT = 268_435_455  # four bytes of seven bits


def encode_varint(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    if n > MAX_VARINT:
        raise ValueError(f"{n} exceeds MQTT's Variable Byte Integer maximum of {MAX_VARINT}")
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


encode_length = encode_varint


def decode_varint(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """The Variable Byte Integer at `pos`: (value, position after it)."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise MalformedPacket("truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than four bytes", "MQTT-1.5.5-1")


def split_frame(buf: bytes | bytearray | memoryview, start: int, max_remaining: int) -> tuple[int, int, int] | None:
    """The packet at `start`: (first byte, body start, body end), or None while it is incomplete.

    PacketTooLarge as soon as the announced length exceeds `max_remaining`, before its body arrives.
    """
    end = len(buf)
    if end - start < 2:
        return None
    pos = start + 1
    remaining = 0
    shift = 0
    while True:
        if pos >= end:
            return None
        byte = buf[pos]
        remaining |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MalformedPacket("remaining length longer than four bytes", "MQTT-1.5.5-1")
    if remaining > max_remaining:
        raise PacketTooLarge(f"packet of {remaining} bytes exceeds the limit of {max_remaining}")
    if pos + remaining > end:
        return None
    return buf[start], pos, pos + remaining


def split_packets(buf: bytearray, max_remaining: int = MAX_VARINT) -> list[tuple[int, bytes]]:
    """Take every whole packet off the front of `buf` as (first byte, body); a partial one stays for later."""
    packets: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        frame = split_frame(buf, pos, max_remaining)
        if frame is None:
            break
        first, start, end = frame
        packets.append((first, bytes(buf[start:end])))
        pos = end
    if pos:
        del buf[:pos]
    return packets
