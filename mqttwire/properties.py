"""MQTT 5 properties (§2.2.2): identifiers, data types, where each may appear, and the at-most-once rule.

Properties travel as a plain dict keyed by identifier. Two identifiers may repeat and hold lists:
USER_PROPERTY (list of (name, value) pairs, order kept) and SUBSCRIPTION_IDENTIFIER (list of ints).
"""

from __future__ import annotations

import struct
from typing import Any

from mqttwire.errors import MalformedPacket, ProtocolViolation
from mqttwire.frame import decode_varint, encode_varint

Properties = dict[int, Any]

PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Contexts: packet types (1 CONNECT ... 15 AUTH), and 0 for the will properties inside CONNECT.
WILL = 0
_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 1, 2, 3, 4, 5, 6, 7
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH = 8, 9, 10, 11, 14, 15
_ACKS = frozenset({_PUBACK, _PUBREC, _PUBREL, _PUBCOMP})
_ALL = frozenset({WILL, _CONNECT, _CONNACK, _PUBLISH, _SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH})

BYTE, TWO, FOUR, VARINT, STRING, BINARY, PAIR = range(7)

# identifier -> (name, data type, contexts it may appear in)
SPEC: dict[int, tuple[str, int, frozenset[int]]] = {
    PAYLOAD_FORMAT_INDICATOR: ("Payload Format Indicator", BYTE, frozenset({_PUBLISH, WILL})),
    MESSAGE_EXPIRY_INTERVAL: ("Message Expiry Interval", FOUR, frozenset({_PUBLISH, WILL})),
    CONTENT_TYPE: ("Content Type", STRING, frozenset({_PUBLISH, WILL})),
    RESPONSE_TOPIC: ("Response Topic", STRING, frozenset({_PUBLISH, WILL})),
    CORRELATION_DATA: ("Correlation Data", BINARY, frozenset({_PUBLISH, WILL})),
    SUBSCRIPTION_IDENTIFIER: ("Subscription Identifier", VARINT, frozenset({_PUBLISH, _SUBSCRIBE})),
    SESSION_EXPIRY_INTERVAL: ("Session Expiry Interval", FOUR, frozenset({_CONNECT, _CONNACK, _DISCONNECT})),
    ASSIGNED_CLIENT_IDENTIFIER: ("Assigned Client Identifier", STRING, frozenset({_CONNACK})),
    SERVER_KEEP_ALIVE: ("Server Keep Alive", TWO, frozenset({_CONNACK})),
    AUTHENTICATION_METHOD: ("Authentication Method", STRING, frozenset({_CONNECT, _CONNACK, _AUTH})),
    AUTHENTICATION_DATA: ("Authentication Data", BINARY, frozenset({_CONNECT, _CONNACK, _AUTH})),
    REQUEST_PROBLEM_INFORMATION: ("Request Problem Information", BYTE, frozenset({_CONNECT})),
    WILL_DELAY_INTERVAL: ("Will Delay Interval", FOUR, frozenset({WILL})),
    REQUEST_RESPONSE_INFORMATION: ("Request Response Information", BYTE, frozenset({_CONNECT})),
    RESPONSE_INFORMATION: ("Response Information", STRING, frozenset({_CONNACK})),
    SERVER_REFERENCE: ("Server Reference", STRING, frozenset({_CONNACK, _DISCONNECT})),
    REASON_STRING: (
        "Reason String",
        STRING,
        frozenset({_CONNACK, _SUBACK, _UNSUBACK, _DISCONNECT, _AUTH} | _ACKS),
    ),
    RECEIVE_MAXIMUM: ("Receive Maximum", TWO, frozenset({_CONNECT, _CONNACK})),
    TOPIC_ALIAS_MAXIMUM: ("Topic Alias Maximum", TWO, frozenset({_CONNECT, _CONNACK})),
    TOPIC_ALIAS: ("Topic Alias", TWO, frozenset({_PUBLISH})),
    MAXIMUM_QOS: ("Maximum QoS", BYTE, frozenset({_CONNACK})),
    RETAIN_AVAILABLE: ("Retain Available", BYTE, frozenset({_CONNACK})),
    USER_PROPERTY: ("User Property", PAIR, _ALL | _ACKS),
    MAXIMUM_PACKET_SIZE: ("Maximum Packet Size", FOUR, frozenset({_CONNECT, _CONNACK})),
    WILDCARD_SUBSCRIPTION_AVAILABLE: ("Wildcard Subscription Available", BYTE, frozenset({_CONNACK})),
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: ("Subscription Identifier Available", BYTE, frozenset({_CONNACK})),
    SHARED_SUBSCRIPTION_AVAILABLE: ("Shared Subscription Available", BYTE, frozenset({_CONNACK})),
}
NAMES = {ident: spec[0] for ident, spec in SPEC.items()}
# Byte properties whose only valid values are 0 and 1.
_BOOLEAN = frozenset(
    {
        PAYLOAD_FORMAT_INDICATOR,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
# Properties that must not be zero [MQTT-3.1.2-?]: a zero is a protocol error.
_NONZERO = frozenset({RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS, SUBSCRIPTION_IDENTIFIER})
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def read_string(data: bytes | bytearray | memoryview, pos: int, end: int, what: str = "string") -> tuple[str, int]:
    """A UTF-8 Encoded String at `pos` (§1.5.4): well-formed UTF-8, no U+0000, within `end`."""
    if pos + 2 > end:
        raise MalformedPacket(f"truncated {what}")
    size = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + size > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    try:
        text = str(data[pos : pos + size], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not well-formed UTF-8", "MQTT-1.5.4-1") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000", "MQTT-1.5.4-2")
    return text, pos + size


def read_binary(
    data: bytes | bytearray | memoryview, pos: int, end: int, what: str = "binary data"
) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket(f"truncated {what}")
    size = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + size > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return bytes(data[pos : pos + size]), pos + size


def encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes exceeds MQTT's 65,535")
    return _U16.pack(len(data)) + data


def encode_binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"binary field of {len(data)} bytes exceeds MQTT's 65,535")
    return _U16.pack(len(data)) + data


def decode_properties(
    data: bytes | bytearray | memoryview, pos: int, end: int, context: int
) -> tuple[Properties | None, int]:
    """The property block at `pos` (length + properties) for packet type `context` (or WILL); None when empty."""
    length, pos = decode_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("properties run past the end of the packet")
    if not length:
        return None, pos
    props: Properties = {}
    while pos < stop:
        ident = data[pos]
        if ident == USER_PROPERTY:  # the common case on the message path: valid in every packet, repeatable
            key, pos = read_string(data, pos + 1, stop, "User Property name")
            text, pos = read_string(data, pos, stop, "User Property value")
            pairs = props.get(USER_PROPERTY)
            if pairs is None:
                props[USER_PROPERTY] = [(key, text)]
            else:
                pairs.append((key, text))
            continue
        ident, pos = decode_varint(data, pos, stop)
        spec = SPEC.get(ident)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X}", "MQTT-2.2.2")
        name, kind, contexts = spec
        if context not in contexts:
            raise MalformedPacket(f"property {name} is not allowed in this packet", "MQTT-2.2.2")
        value: Any
        if kind == BYTE:
            if pos >= stop:
                raise MalformedPacket(f"truncated {name}")
            value = data[pos]
            pos += 1
            if ident in _BOOLEAN and value > 1 and ident != MAXIMUM_QOS:
                raise ProtocolViolation(f"{name} must be 0 or 1")
            if ident == MAXIMUM_QOS and value > 1:
                raise ProtocolViolation("Maximum QoS must be 0 or 1", "MQTT-3.2.2-9")
        elif kind == TWO:
            if pos + 2 > stop:
                raise MalformedPacket(f"truncated {name}")
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif kind == FOUR:
            if pos + 4 > stop:
                raise MalformedPacket(f"truncated {name}")
            value = _U32.unpack_from(bytes(data[pos : pos + 4]))[0]
            pos += 4
        elif kind == VARINT:
            value, pos = decode_varint(data, pos, stop)
        elif kind == STRING:
            value, pos = read_string(data, pos, stop, name)
        elif kind == BINARY:
            value, pos = read_binary(data, pos, stop, name)
        else:
            key, pos = read_string(data, pos, stop, "User Property name")
            text, pos = read_string(data, pos, stop, "User Property value")
            value = (key, text)
        if ident in _NONZERO and value == 0:
            raise ProtocolViolation(f"{name} must not be 0")
        if ident in (USER_PROPERTY, SUBSCRIPTION_IDENTIFIER):
            props.setdefault(ident, []).append(value)
            if ident == SUBSCRIPTION_IDENTIFIER and context != _PUBLISH and len(props[ident]) > 1:
                raise ProtocolViolation("Subscription Identifier more than once", "MQTT-3.8.2")
        elif ident in props:
            raise ProtocolViolation(f"{name} included more than once", "MQTT-2.2.2")
        else:
            props[ident] = value
    if pos != stop:
        raise MalformedPacket("a property runs past the property block")
    return props, stop


EMPTY_BLOCK = b"\x00"  # a property block with nothing in it: its length, 0


def encode_properties(props: Properties | None) -> bytes:
    """The property block: its length, then each property (lists repeat their identifier)."""
    if not props:
        return EMPTY_BLOCK
    out = bytearray()
    for ident, value in props.items():
        kind = SPEC[ident][1]
        values = value if ident in (USER_PROPERTY, SUBSCRIPTION_IDENTIFIER) else (value,)
        for item in values:
            out += encode_varint(ident)
            if kind == BYTE:
                out.append(item)
            elif kind == TWO:
                out += _U16.pack(item)
            elif kind == FOUR:
                out += _U32.pack(item)
            elif kind == VARINT:
                out += encode_varint(item)
            elif kind == STRING:
                out += encode_string(item)
            elif kind == BINARY:
                out += encode_binary(item)
            else:
                out += encode_string(item[0]) + encode_string(item[1])
    return encode_varint(len(out)) + bytes(out)


def to_json(props: Properties | None) -> dict[str, Any]:
    """The message-level properties as AWS's APIs and SQL name them (binary as base64), for views and rules."""
    import base64

    if not props:
        return {}
    out: dict[str, Any] = {}
    if PAYLOAD_FORMAT_INDICATOR in props:
        out["payloadFormatIndicator"] = "UTF8_DATA" if props[PAYLOAD_FORMAT_INDICATOR] else "UNSPECIFIED_BYTES"
    if CONTENT_TYPE in props:
        out["contentType"] = props[CONTENT_TYPE]
    if RESPONSE_TOPIC in props:
        out["responseTopic"] = props[RESPONSE_TOPIC]
    if CORRELATION_DATA in props:
        out["correlationData"] = base64.b64encode(props[CORRELATION_DATA]).decode()
    if MESSAGE_EXPIRY_INTERVAL in props:
        out["messageExpiry"] = props[MESSAGE_EXPIRY_INTERVAL]
    if USER_PROPERTY in props:
        out["userProperties"] = [{"key": key, "value": value} for key, value in props[USER_PROPERTY]]
    return out
