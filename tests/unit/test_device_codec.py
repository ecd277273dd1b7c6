"""The simulator's client-side MQTT codec (devices/mqtt_codec.py), checked against the gateway's broker codec: what a
device encodes the broker decodes, what the broker encodes the device splits and decodes, at any read boundaries."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import mqtt_codec as dev
from gateway.broker import codec as broker

topics = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="+#\x00"), min_size=1, max_size=40)
payloads = st.binary(max_size=300)
mids = st.integers(1, 0xFFFF)


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of every packet in `data`, split by the broker's codec."""
    out, pos = [], 0
    while pos < len(data):
        split = broker.split_frame(data, pos, 1 << 28)
        assert split is not None
        first, body_start, end = split
        out.append((first, data[body_start:end]))
        pos = end
    return out


@given(topics, payloads, st.sampled_from([0, 1]), st.booleans(), mids)
def test_a_device_publish_decodes_in_the_broker(topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
    packet = dev.publish_packet(dev.encode_string(topic), payload, qos, retain, mid)
    [(first, body)] = frames(packet)
    assert first >> 4 == broker.PUBLISH and (first >> 1) & 3 == qos and bool(first & 1) == retain
    assert broker.decode_publish(first, body) == (topic, mid if qos else 0, payload)


def test_connect_and_subscribe_decode_in_the_broker() -> None:
    [(first, body)] = frames(dev.connect_packet("thermostat-7", 45))
    request = broker.decode_connect(body)
    assert (first, request.client_id, request.keep_alive, request.clean_session, request.protocol_level) == (
        0x10,
        "thermostat-7",
        45,
        True,
        4,
    )
    [(first, body)] = frames(dev.subscribe_packet(9, [("$aws/things/t/shadow/update/delta", 1), ("cmd/#", 0)]))
    assert first == 0x82
    assert broker.decode_subscribe(body) == (9, [("$aws/things/t/shadow/update/delta", 1), ("cmd/#", 0)])


@given(st.lists(st.tuples(topics, payloads, st.sampled_from([0, 1]), mids), min_size=1, max_size=8), st.data())
def test_broker_packets_split_the_same_at_any_read_boundaries(
    messages: list[tuple[str, bytes, int, int]], data: st.DataObject
) -> None:
    stream = b"".join(
        [broker.encode_connack(False, 0)]
        + [broker.encode_publish(t, p, q, False, mid if q else 0) for t, p, q, mid in messages]
        + [broker.encode_puback(77), broker.encode_suback(78, [1, 0x80]), broker.PINGRESP_BYTES]
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buffer, got = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[start:end]
        got += dev.split_packets(buffer)
    assert not buffer
    kinds = [p.kind for p in got]
    assert kinds == [dev.CONNACK] + [dev.PUBLISH] * len(messages) + [dev.PUBACK, dev.SUBACK, dev.PINGRESP]
    publishes = [dev.parse_publish(p.flags, p.body) for p in got if p.kind == dev.PUBLISH]
    assert publishes == [(t, p, q, False, mid if q else 0) for t, p, q, mid in messages]
    assert dev.packet_id(got[-3].body) == 77 and got[-2].body == b"\x00\x4e\x01\x80"


@pytest.mark.parametrize("length", [3, 127, 128, 16_383, 16_384, 2_097_152])
def test_remaining_length_boundaries(length: int) -> None:
    payload = b"x" * (length - 3)  # topic "t" takes three bytes of the remaining length
    packet = dev.publish_packet(dev.encode_string("t"), payload, 0, False, 0)
    [(_, body)] = frames(packet)
    assert len(body) == length
    [incoming] = dev.split_packets(bytearray(packet))
    assert dev.parse_publish(incoming.flags, incoming.body) == ("t", payload, 0, False, 0)


def test_acknowledgements_have_the_flags_the_spec_requires() -> None:
    assert dev.ack_packet(dev.PUBACK, 5) == b"\x40\x02\x00\x05"
    assert dev.ack_packet(dev.PUBREL, 5) == b"\x62\x02\x00\x05"  # [MQTT-3.6.1-1]
    assert broker.decode_packet_id(dev.ack_packet(dev.PUBACK, 513)[2:]) == 513


@given(st.binary(max_size=64))
def test_garbage_only_raises_protocol_error(data: bytes) -> None:
    buffer = bytearray(data)
    with contextlib.suppress(dev.ProtocolError):
        for packet in dev.split_packets(buffer):
            if packet.kind == dev.PUBLISH:
                dev.parse_publish(packet.flags, packet.body)
            elif packet.kind in (dev.PUBACK, dev.SUBACK):
                dev.packet_id(packet.body)


def test_a_five_byte_remaining_length_is_a_protocol_error() -> None:
    with pytest.raises(dev.ProtocolError, match="four bytes"):
        dev.split_packets(bytearray(b"\x30\xff\xff\xff\xff\x01"))
    with pytest.raises(dev.ProtocolError, match="longer than the packet"):
        dev.parse_publish(0, b"\x00\x09ab")
