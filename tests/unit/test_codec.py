"""The MQTT codec: round trips, and garbage that may only raise ProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import codec
from gateway.broker.codec import ProtocolError


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_remaining_length_round_trips(length: int) -> None:
    encoded = encode = codec.encode_length(length)
    frame = bytes((0x30,)) + encode + b"\x00" * length
    assert codec.split_frame(frame, 0, 1 << 29) == (0x30, 1 + len(encoded), 1 + len(encoded) + length)


def test_incomplete_frames_wait_for_more() -> None:
    packet = codec.encode_publish("a/b", b"payload", 1, False, 7)
    for cut in range(len(packet)):
        assert codec.split_frame(packet[:cut], 0, 1000) is None


def test_oversized_frame_is_refused_before_its_body_arrives() -> None:
    with pytest.raises(codec.PacketTooLarge):
        codec.split_frame(b"\x30\xff\xff\x7f", 0, 1000)


def test_publish_round_trip_qos1() -> None:
    packet = codec.encode_publish("a/b", b"\x00\x01", 1, True, 513)
    first, start, end = codec.split_frame(packet, 0, 1000) or (0, 0, 0)
    assert first == 0x33
    assert codec.decode_publish(first, packet[start:end]) == ("a/b", 513, b"\x00\x01")


def test_connect_fields() -> None:
    body = (
        b"\x00\x04MQTT\x04"
        + bytes((0x02 | 0x04 | 0x08 | 0x20 | 0x80,))
        + b"\x00\x3c"
        + b"\x00\x03dev"
        + b"\x00\x01w"
        + b"\x00\x02hi"
        + b"\x00\x01u"
    )
    request = codec.decode_connect(body)
    assert (request.client_id, request.keep_alive, request.clean_session) == ("dev", 60, True)
    assert (request.will_topic, request.will_payload, request.will_qos, request.will_retain) == ("w", b"hi", 1, True)
    assert request.username == "u"


def test_mqtt5_connect_is_reported_not_parsed() -> None:
    assert codec.decode_connect(b"\x00\x04MQTT\x05\x02\x00\x3c\x00").protocol_level == 5


def test_subscribe_rejects_reserved_option_bits() -> None:
    with pytest.raises(ProtocolError):
        codec.decode_subscribe(b"\x00\x01\x00\x01a\x04")


@given(st.binary(max_size=300))
def test_garbage_only_raises_protocol_errors(data: bytes) -> None:
    for decode in (
        codec.decode_connect,
        codec.decode_subscribe,
        codec.decode_unsubscribe,
        codec.decode_packet_id,
        lambda b: codec.decode_publish(0x32, b),
        lambda b: codec.split_frame(b, 0, 256),
    ):
        with contextlib.suppress(ProtocolError):
            decode(data)
