"""The message intake on its own: validation, authorization, and which MQTT 5 properties travel with a message."""

from __future__ import annotations

import pytest

from gateway.broker import intake as intake_module
from gateway.broker.exceptions import PayloadFormatInvalid, PayloadTooLarge, PublishNotAuthorized, TopicNameInvalid
from gateway.broker.intake import Intake
from gateway.clock import ManualClock
from gateway.config import MqttLimits
from gateway.messages import Message
from mqttwire import properties as mp


def _intake() -> tuple[Intake, list[Message], ManualClock]:
    routed: list[Message] = []
    clock = ManualClock()
    return Intake(MqttLimits(max_payload_bytes=100), clock, routed.append), routed, clock


def _block(props: mp.Properties) -> bytes:
    return mp.encode_properties(props)


class _OnlyTopic:
    def __init__(self, allowed: str) -> None:
        self.allowed = allowed

    def can_publish(self, topic: str) -> bool:
        return topic == self.allowed

    def can_retain_publish(self, topic: str) -> bool:
        return False


def test_user_properties_travel_with_the_block_as_it_came_every_time() -> None:
    intake, routed, _ = _intake()
    props: mp.Properties = {mp.USER_PROPERTY: [("device", "d1")], mp.CONTENT_TYPE: "text/plain"}
    block = _block(props)
    for _ in range(3):  # the first verdict is remembered: the later ones take the short way
        intake.admit("t/1", b"x", 1, False, props, door="mqtt", properties_block=block)
    assert [m.properties for m in routed] == [props] * 3
    assert all(m.properties_block is block for m in routed)


def test_a_remembered_block_does_not_excuse_another_block_from_its_checks() -> None:
    intake, routed, _ = _intake()
    plain: mp.Properties = {mp.USER_PROPERTY: [("k", "v")]}
    intake.admit("t/1", b"x", 0, False, plain, door="mqtt", properties_block=_block(plain))
    utf8: mp.Properties = {mp.USER_PROPERTY: [("k", "v")], mp.PAYLOAD_FORMAT_INDICATOR: 1}
    with pytest.raises(PayloadFormatInvalid):
        intake.admit("t/1", b"\xff\xfe", 0, False, utf8, door="mqtt", properties_block=_block(utf8))
    intake.admit("t/1", "é".encode(), 0, False, utf8, door="mqtt", properties_block=_block(utf8))
    assert routed[-1].properties == utf8
    with pytest.raises(PayloadFormatInvalid):  # checked again: a payload is not a block
        intake.admit("t/1", b"\xff", 0, False, utf8, door="mqtt", properties_block=_block(utf8))


def test_one_hop_properties_are_taken_out_and_the_block_is_encoded_again() -> None:
    intake, routed, clock = _intake()
    props: mp.Properties = {mp.USER_PROPERTY: [("k", "v")], mp.MESSAGE_EXPIRY_INTERVAL: 30}
    intake.admit("t/1", b"x", 1, False, props, door="mqtt", properties_block=_block(props))
    message = routed[-1]
    assert message.properties == {mp.USER_PROPERTY: [("k", "v")]}
    assert message.properties_block is None
    assert message.expires_ms == clock.wall_ms() + 30_000


def test_the_remembered_blocks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "_BLOCKS_KEPT", 8)
    intake, routed, _ = _intake()
    for i in range(50):
        props: mp.Properties = {mp.USER_PROPERTY: [("device", f"d{i}")]}
        intake.admit("t/1", b"x", 0, False, props, door="mqtt", properties_block=_block(props))
    assert len(intake._blocks_as_is) <= 8
    assert len(routed) == 50 and routed[-1].properties_block == _block({mp.USER_PROPERTY: [("device", "d49")]})


def test_refusals_name_what_was_wrong() -> None:
    intake, routed, _ = _intake()
    with pytest.raises(TopicNameInvalid):
        intake.admit("bad/+/topic", b"x", 0, False, None, door="https")
    with pytest.raises(PayloadTooLarge, match="101 bytes"):
        intake.admit("t/1", b"x" * 101, 0, False, None, door="https")
    with pytest.raises(PublishNotAuthorized, match="topic/t/2"):
        intake.admit("t/2", b"x", 0, False, None, door="mqtt", authorizer=_OnlyTopic("t/1"))
    with pytest.raises(PublishNotAuthorized, match="retain"):
        intake.admit("t/1", b"x", 0, True, None, door="mqtt", authorizer=_OnlyTopic("t/1"))
    assert routed == []
    message = intake.admit("t/1", b"x", 1, False, None, door="mqtt", authorizer=_OnlyTopic("t/1"), acknowledged=True)
    assert routed == [message] and message.acknowledged and message.properties is None


def test_a_large_block_goes_through_but_is_not_remembered() -> None:
    intake, routed, _ = _intake()
    big: mp.Properties = {mp.USER_PROPERTY: [("k", "v" * 600)]}
    block = _block(big)
    intake.admit("t/1", b"x", 0, False, big, door="mqtt", properties_block=block)
    assert routed[-1].properties_block is block  # still forwarded as it came
    assert block not in intake._blocks_as_is
