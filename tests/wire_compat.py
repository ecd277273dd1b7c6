"""Raw-packet helpers for tests that talk MQTT byte by byte, on top of mqttwire."""

from __future__ import annotations

from mqttwire import codec
from mqttwire.frame import encode_length, split_frame
from mqttwire.packets import PUBLISH, V311, Ack, Publish

__all__ = ["PUBLISH", "decode_publish", "encode_length", "encode_puback", "encode_publish", "split_frame"]


def decode_publish(first: int, body: bytes) -> tuple[str, int, bytes]:
    topic, pid, payload, _ = codec.parse_publish(first, body, 0, len(body), False)
    return topic, pid, payload


def encode_puback(pid: int) -> bytes:
    return codec.encode(Ack(4, pid), V311)


def encode_publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0) -> bytes:
    return codec.encode(Publish(topic, payload, qos, retain, False, packet_id), V311)
