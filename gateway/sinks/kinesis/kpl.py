"""KPL aggregated records: `F3 89 9A C2` + a protobuf `AggregatedRecord` + the MD5 of that protobuf (pure).

    AggregatedRecord { repeated string partition_key_table = 1; repeated string explicit_hash_key_table = 2;
                       repeated Record records = 3; }
    Record { uint64 partition_key_index = 1; uint64 explicit_hash_key_index = 2; bytes data = 3;
             repeated Tag tags = 4; }

A record that does not carry the magic prefix, whose checksum does not match or whose protobuf does not parse is
an ordinary record and comes back whole, as the KCL and AWS's de-aggregation libraries treat it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


@dataclass(frozen=True, slots=True)
class UserRecord:
    partition_key: str
    explicit_hash_key: str | None
    data: bytes
    sub_sequence: int


class _Malformed(ValueError):
    pass


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: varints as ints, length-delimited as bytes; other wire types are skipped."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, at = _varint(buf, at)
            out.append((number, value))
        elif wire == 2:
            size, at = _varint(buf, at)
            if at + size > len(buf):
                raise _Malformed("truncated field")
            out.append((number, buf[at : at + size]))
            at += size
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise _Malformed(f"wire type {wire}")
    if at != len(buf):
        raise _Malformed("trailing bytes")
    return out


def is_aggregated(data: bytes) -> bool:
    if len(data) <= len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        return False
    body = data[len(MAGIC) : -_DIGEST]
    return hashlib.md5(body).digest() == data[-_DIGEST:]


def deaggregate(data: bytes, partition_key: str, explicit_hash_key: str | None = None) -> list[UserRecord]:
    """The user records inside `data`, or `data` itself as the one record when it is not a KPL aggregate."""
    whole = [UserRecord(partition_key, explicit_hash_key, data, 0)]
    if not is_aggregated(data):
        return whole
    try:
        keys: list[str] = []
        hash_keys: list[str] = []
        raw_records: list[bytes] = []
        for number, value in _fields(data[len(MAGIC) : -_DIGEST]):
            if not isinstance(value, bytes):
                continue
            if number == 1:
                keys.append(value.decode("utf-8"))
            elif number == 2:
                hash_keys.append(value.decode("utf-8"))
            elif number == 3:
                raw_records.append(value)
        out = []
        for index, raw in enumerate(raw_records):
            fields = dict(_fields(raw))
            key_index = fields.get(1)
            payload = fields.get(3, b"")
            if not isinstance(key_index, int) or key_index >= len(keys) or not isinstance(payload, bytes):
                raise _Malformed("record without a valid partition key")
            hash_index = fields.get(2)
            explicit = hash_keys[hash_index] if isinstance(hash_index, int) and hash_index < len(hash_keys) else None
            out.append(UserRecord(keys[key_index], explicit, payload, index))
        return out or whole  # no user records: not something a KPL writes, so the record itself
    except (_Malformed, UnicodeDecodeError):
        return whole
