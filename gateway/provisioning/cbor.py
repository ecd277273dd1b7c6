"""The subset of CBOR (RFC 8949) the provisioning MQTT API's `/cbor` topics carry: maps, arrays, text and byte
strings, integers, floats, booleans and null, definite lengths only. Pure; bad input raises CborError only."""

from __future__ import annotations

import struct
from typing import Any

from gateway.errors import EdgesimError

MAX_DEPTH = 32


class CborError(EdgesimError):
    pass


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for extra, size, fmt in ((24, 1, ">B"), (25, 2, ">H"), (26, 4, ">I"), (27, 8, ">Q")):
        if value < 1 << (8 * size):
            return bytes([major << 5 | extra]) + struct.pack(fmt, value)
    raise CborError("integer too large")


def dumps(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True or value is False:
        out.append(0xF5 if value else 0xF4)
    elif isinstance(value, int):
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif isinstance(value, float):
        out += b"\xfb" + struct.pack(">d", value)
    elif isinstance(value, str):
        data = value.encode()
        out += _head(3, len(data)) + data
    elif isinstance(value, bytes):
        out += _head(2, len(value)) + value
    elif isinstance(value, list | tuple):
        out += _head(4, len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        out += _head(5, len(value))
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
    else:
        raise CborError(f"cannot encode {type(value).__name__}")


def loads(data: bytes) -> Any:
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise CborError("trailing bytes after the CBOR item")
    return value


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if size < 0 or pos + size > len(data):
        raise CborError("truncated CBOR item")
    return data[pos : pos + size], pos + size


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CborError("CBOR nesting too deep")
    first, pos = _take(data, pos, 1)
    major, info = first[0] >> 5, first[0] & 31
    if major == 7:
        simple = {20: False, 21: True, 22: None}
        if info in simple:
            return simple[info], pos
        formats = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
        if info in formats:
            fmt, size = formats[info]
            raw, pos = _take(data, pos, size)
            return struct.unpack(fmt, raw)[0], pos
        raise CborError(f"unsupported CBOR simple value {info}")
    if info < 24:
        arg = info
    elif info <= 27:
        raw, pos = _take(data, pos, 1 << (info - 24))
        arg = int.from_bytes(raw, "big")
    else:
        raise CborError("indefinite lengths and reserved values are not supported")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        raw, pos = _take(data, pos, arg)
        if major == 2:
            return raw, pos
        try:
            return raw.decode(), pos
        except UnicodeDecodeError:
            raise CborError("text string is not UTF-8") from None
    if major == 4:
        if arg > len(data):
            raise CborError("truncated CBOR array")
        items = []
        for _ in range(arg):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if arg > len(data):
            raise CborError("truncated CBOR map")
        mapping: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, str | int):
                raise CborError("map keys must be text or integers")
            mapping[key], pos = _decode(data, pos, depth + 1)
        return mapping, pos
    raise CborError("CBOR tags are not supported")
