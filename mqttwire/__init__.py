"""The MQTT 3.1.1 and 5 wire format, shared by the gateway's broker, the edge core, the fleet simulator and the
benchmarks: framing, properties, reason codes, every packet's codec, topic checks, and a small asyncio client."""

from mqttwire.codec import decode, decode_connect, encode, parse_publish, puback, publish_parts
from mqttwire.errors import MalformedPacket, PacketTooLarge, ProtocolViolation
from mqttwire.frame import decode_varint, encode_length, encode_varint, split_frame, split_packets
from mqttwire.packets import V5, V311

__all__ = [
    "V5",
    "V311",
    "MalformedPacket",
    "PacketTooLarge",
    "ProtocolViolation",
    "decode",
    "decode_connect",
    "decode_varint",
    "encode",
    "encode_length",
    "encode_varint",
    "parse_publish",
    "puback",
    "publish_parts",
    "split_frame",
    "split_packets",
]
