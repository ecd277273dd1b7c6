"""mqttwire: every packet type round-trips in MQTT 3.1.1 and 5, and the decoder is total (bytes in, a packet or a
MalformedPacket out, never another exception)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.errors import MalformedPacket, PacketTooLarge
from mqttwire.frame import decode_varint, encode_varint, split_frame, split_packets
from mqttwire.packets import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    V5,
    V311,
    Ack,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Publish,
    Suback,
    Subscribe,
    SubscribeFilter,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttwire.topics import topic_filter_error, topic_name_error

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
topic = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=30)
pid = st.integers(1, 65535)
user_props = st.lists(st.tuples(text, text), min_size=1, max_size=3)


def props_for(context: int) -> st.SearchStrategy[mp.Properties | None]:
    """Valid properties for a packet type, drawn from the property table itself."""
    choices: dict[int, st.SearchStrategy[object]] = {}
    for ident, (_, kind, contexts) in mp.SPEC.items():
        if context not in contexts or ident in (mp.SUBSCRIPTION_IDENTIFIER, mp.TOPIC_ALIAS):
            continue
        if ident == mp.USER_PROPERTY:
            choices[ident] = user_props
        elif kind == mp.BYTE:
            choices[ident] = st.integers(0, 1)
        elif kind == mp.TWO:
            choices[ident] = st.integers(1, 65535)
        elif kind == mp.FOUR:
            choices[ident] = st.integers(1, 2**32 - 1)
        elif kind == mp.STRING:
            choices[ident] = topic if ident == mp.RESPONSE_TOPIC else text
        elif kind == mp.BINARY:
            choices[ident] = st.binary(max_size=20)
    if not choices:
        return st.none()
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional=choices).map(lambda d: d or None))


def packets(version: int) -> st.SearchStrategy[Packet]:
    v5 = version == V5

    def p(context: int) -> st.SearchStrategy[mp.Properties | None]:
        return props_for(context) if v5 else st.none()

    will = st.builds(Will, topic, st.binary(max_size=30), st.integers(0, 1), st.booleans(), p(mp.WILL))
    connect = st.builds(
        Connect,
        text,
        st.just(version),
        st.booleans(),
        st.integers(0, 65535),
        st.one_of(st.none(), will),
        st.one_of(st.none(), text),
        st.none(),
        p(1),
    ).map(lambda c: _with_password(c, v5))
    sub_filter = st.builds(
        SubscribeFilter,
        topic,
        st.integers(0, 2),
        st.booleans() if v5 else st.just(False),
        st.booleans() if v5 else st.just(False),
        st.integers(0, 2) if v5 else st.just(0),
    )
    return st.one_of(
        connect,
        st.builds(Connack, st.booleans(), st.integers(0, 255), p(2)),
        st.builds(
            Publish, topic, st.binary(max_size=50), st.integers(0, 1), st.booleans(), st.just(False), st.just(0), p(3)
        ).flatmap(_publish_pid),
        st.builds(
            Ack,
            st.sampled_from([PUBACK, PUBREC, PUBREL, PUBCOMP]),
            pid,
            st.integers(0, 255) if v5 else st.just(0),
            p(PUBACK),
        ).map(lambda a: a if v5 or not a.properties else Ack(a.kind, a.packet_id)),
        st.builds(Subscribe, pid, st.lists(sub_filter, min_size=1, max_size=4), p(8)),
        st.builds(Suback, pid, st.lists(st.integers(0, 255), min_size=1, max_size=4), p(9)),
        st.builds(Unsubscribe, pid, st.lists(topic, min_size=1, max_size=4), p(10)),
        st.builds(Unsuback, pid, st.lists(st.integers(0, 255), max_size=4) if v5 else st.just([]), p(11)),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(Disconnect, st.integers(0, 255) if v5 else st.just(0), p(14)),
        *([st.builds(Auth, st.integers(0, 255), p(15))] if v5 else []),
    )


def _with_password(c: Connect, v5: bool) -> Connect:
    if c.username is not None or v5:
        c.password = b"secret"
    return c


def _publish_pid(p: Publish) -> st.SearchStrategy[Publish]:
    if p.qos:
        return pid.map(lambda n: Publish(p.topic, p.payload, p.qos, p.retain, p.dup, n, p.properties))
    return st.just(p)


def _normalise(packet: Packet) -> Packet:
    """What a decoder gives back for fields the wire cannot carry (an empty property block reads as None)."""
    if isinstance(packet, Disconnect | Auth) and packet.reason_code == 0 and not packet.properties:
        return type(packet)(0, None)
    if isinstance(packet, Ack) and packet.reason_code == 0 and not packet.properties:
        return Ack(packet.kind, packet.packet_id)
    return packet


def decode_whole(data: bytes, version: int) -> Packet:
    frame = split_frame(data, 0, len(data))
    assert frame is not None
    first, start, end = frame
    assert end == len(data)
    return codec.decode(first, data[start:end], version)


@pytest.mark.parametrize("version", [V311, V5])
def test_every_packet_type_round_trips(version: int) -> None:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(packets(version))
    def check(packet: Packet) -> None:
        assert decode_whole(codec.encode(packet, version), version) == _normalise(packet)

    check()


@given(st.integers(0, 268_435_455))
def test_varint_round_trips(n: int) -> None:
    data = encode_varint(n)
    assert decode_varint(data, 0, len(data)) == (n, len(data))


@pytest.mark.parametrize("version", [V311, V5])
def test_decoder_is_total(version: int) -> None:
    @settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, 255), st.binary(max_size=64))
    def check(first: int, body: bytes) -> None:
        with contextlib.suppress(MalformedPacket):
            codec.decode(first, body, version)

    check()


@pytest.mark.parametrize("version", [V311, V5])
def test_mutated_packets_give_a_packet_or_malformed(version: int) -> None:
    @settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
    @given(packets(version), st.data())
    def check(packet: Packet, data: st.DataObject) -> None:
        raw = bytearray(codec.encode(packet, version))
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        cut = data.draw(st.integers(0, len(raw)))
        buf = bytearray(raw[:cut])
        try:
            for first, body in split_packets(buf, 1 << 20):
                codec.decode(first, body, version)
        except MalformedPacket:
            pass

    check()


def test_truncated_publish_topic_is_malformed_not_read_from_the_next_packet() -> None:
    body = b"\x00\x10ab"  # topic length 16, two bytes present
    with pytest.raises(MalformedPacket):
        codec.parse_publish(0x30, body + b"\x30\x05\x00\x03xyz", 0, len(body), False)


def test_invalid_utf8_topic_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="UTF-8"):
        codec.parse_publish(0x30, b"\x00\x02\xff\xfe", 0, 4, False)


def test_password_without_user_name_is_malformed_in_v311_only() -> None:
    v3 = codec.encode(Connect("c", V311, True, 60, None, None, b"pw"), V311)
    with pytest.raises(MalformedPacket, match=r"MQTT-3\.1\.2-22"):
        decode_whole(v3, V311)
    v5 = codec.encode(Connect("c", V5, True, 60, None, None, b"pw"), V5)
    assert isinstance(decode_whole(v5, V5), Connect)


def test_subscribe_qos3_is_malformed() -> None:
    raw = bytearray(codec.encode(Subscribe(1, [SubscribeFilter("a", 1)]), V311))
    raw[-1] = 3
    with pytest.raises(MalformedPacket, match="QoS 3"):
        decode_whole(bytes(raw), V311)


def test_duplicate_property_is_a_protocol_error() -> None:
    block = b"\x06" + b"\x03\x00\x01a" + b"\x03"  # content type twice (the second truncated on purpose)
    with pytest.raises(MalformedPacket):
        mp.decode_properties(block, 0, len(block), 3)
    dup = b"\x08\x03\x00\x01a\x03\x00\x01b"
    with pytest.raises(MalformedPacket, match="more than once") as err:
        mp.decode_properties(dup, 0, len(dup), 3)
    assert err.value.reason == 0x82


def test_property_in_the_wrong_packet_is_malformed() -> None:
    block = b"\x03\x21\x00\x05"  # Receive Maximum in a PUBLISH
    with pytest.raises(MalformedPacket, match="not allowed") as err:
        mp.decode_properties(block, 0, len(block), 3)
    assert err.value.reason == 0x81


def test_oversized_frame_is_refused_before_its_body_arrives() -> None:
    with pytest.raises(PacketTooLarge):
        split_frame(b"\x30\xff\xff\x7f", 0, 1000)


def test_incomplete_frames_wait_for_more() -> None:
    packet = codec.encode(Publish("a/b", b"payload", 1, False, False, 7), V311)
    for cut in range(len(packet)):
        assert split_frame(packet[:cut], 0, 1000) is None


@pytest.mark.parametrize(
    ("name", "ok"), [("a/b", True), ("", False), ("a/+", False), ("a/#", False), ("a\x00", False), ("$aws/x", True)]
)
def test_topic_names(name: str, ok: bool) -> None:
    assert (topic_name_error(name) is None) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [("a/+/b", True), ("a/#", True), ("#", True), ("a/#/b", False), ("a+", False), ("$share/g/a/#", True),
     ("$share//a", False), ("$share/g", False), ("$share/g+/a", False)],
)  # fmt: skip
def test_topic_filters(name: str, ok: bool) -> None:
    assert (topic_filter_error(name) is None) is ok


def test_publish_block_is_kept_as_received_and_checks_the_response_topic() -> None:
    props = {mp.USER_PROPERTY: [("a", "1"), ("a", "2")], mp.CONTENT_TYPE: "t"}
    packet = codec.encode(Publish("x/y", b"p", 1, False, False, 9, props), V5)
    frame = split_frame(packet, 0, len(packet))
    assert frame is not None
    first, start, end = frame
    topic, pid, payload, decoded, block = codec.parse_publish_block(first, packet, start, end, True)
    assert (topic, pid, payload, decoded) == ("x/y", 9, b"p", props)
    assert block == mp.encode_properties(props)
    bad = codec.encode(Publish("x/y", b"p", 0, False, False, 0, {mp.RESPONSE_TOPIC: "r/#"}), V5)
    frame = split_frame(bad, 0, len(bad))
    assert frame is not None
    with pytest.raises(MalformedPacket, match="Response Topic"):
        codec.parse_publish_block(frame[0], bad, frame[1], frame[2], True)


def test_a_block_equal_to_the_last_seen_is_not_decoded_again_and_a_different_one_is() -> None:
    def parse(props: mp.Properties, seen: tuple[bytes, mp.Properties] | None) -> tuple[object, bytes | None, bytes]:
        packet = codec.encode(Publish("x/y", b"payload", 1, False, False, 3, props), V5)
        frame = split_frame(packet, 0, len(packet))
        assert frame is not None
        _, _, payload, decoded, block = codec.parse_publish_block(frame[0], packet, frame[1], frame[2], True, seen)
        return decoded, block, payload

    tags = {mp.USER_PROPERTY: [("device", "d-1")]}
    first, block, _ = parse(tags, None)
    assert block is not None and isinstance(first, dict)
    again, same_block, payload = parse(tags, (block, first))
    assert again is first and same_block == block and payload == b"payload"
    other, other_block, _ = parse({mp.USER_PROPERTY: [("device", "d-2")]}, (block, first))
    assert other == {mp.USER_PROPERTY: [("device", "d-2")]} and other is not first and other_block != block


def test_a_seen_block_matches_only_inside_its_packet() -> None:
    """A packet cut short inside its property block is malformed, even when the bytes after its end (the next
    packet's, in a receive buffer) would complete the block seen before."""
    tags = {mp.USER_PROPERTY: [("device", "d-1")]}
    packet = codec.encode(Publish("x/y", b"", 0, False, False, 0, tags), V5)
    frame = split_frame(packet, 0, len(packet))
    assert frame is not None
    first, start, end = frame
    _, _, _, decoded, block = codec.parse_publish_block(first, packet, start, end, True)
    assert block is not None and decoded is not None and packet.endswith(block)
    with pytest.raises(MalformedPacket):
        codec.parse_publish_block(first, bytearray(packet), start, end - 3, True, (block, decoded))


@pytest.mark.parametrize("first", [0x36, 0x37, 0x38])
def test_publish_fixed_header_flags_are_checked_by_the_publish_parser_itself(first: int) -> None:
    body = b"\x00\x01a\x00\x01x"
    with pytest.raises(MalformedPacket, match=r"MQTT-3\.3\.1"):
        codec.parse_publish_block(first, body, 0, len(body), False)
