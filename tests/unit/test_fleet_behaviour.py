"""Pure parts of a simulated device: payload building, fault plans, the fleet policy."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.behaviour import MAX_PAYLOAD_BYTES, FaultPlan, reported_for_delta, shadow_prefix, spoil
from devices.payload import PayloadBuilder
from devices.provision import fleet_policy
from devices.spec import FaultSpec, expand, parse_fleet

FLEET = """
fleet: t
seed: 5
device_types:
  - name: s
    count: 3
    topic: "dt/{fleet}/{thing_name}/x"
    payload:
      id: "{thing_name}"
      seq: "{seq}"
      nested: {v: {profile: counter, start: 10}, tags: ["a", "{i}"]}
      temp: {profile: sine, mean: 20, amplitude: 5, period: 60, decimals: 2}
    commands: {topic: "cmd/{thing_name}", reply_topic: "cmd/{thing_name}/reply"}
"""


def test_payload_builder_renders_templates_and_samples_profiles() -> None:
    device = expand(parse_fleet(FLEET))[1]
    builder = PayloadBuilder(device.payload, device.seed)
    first = builder.build(0.0, {**device.variables(), "seq": 1, "timestamp": 0})
    second = builder.build(15.0, {**device.variables(), "seq": 2, "timestamp": 0})
    assert first["id"] == "t-s-0001" and first["seq"] == 1 and second["seq"] == 2
    assert first["nested"] == {"v": 10, "tags": ["a", 1]}
    assert second["nested"]["v"] == 11
    assert first["temp"] == 20.0 and second["temp"] == 25.0
    again = PayloadBuilder(device.payload, device.seed).build(0.0, {**device.variables(), "seq": 1, "timestamp": 0})
    assert again == first


def test_fleet_policy_is_least_privilege_with_the_thing_name_variable() -> None:
    policy = fleet_policy(expand(parse_fleet(FLEET)))
    by_action = {s["Action"]: s["Resource"] for s in policy["Statement"]}
    thing = "${iot:Connection.Thing.ThingName}"
    assert by_action["iot:Connect"] == [f"arn:aws:iot:*:*:client/{thing}"]
    assert f"arn:aws:iot:*:*:topic/dt/t/{thing}/x" in by_action["iot:Publish"]
    assert f"arn:aws:iot:*:*:topic/cmd/{thing}/reply" in by_action["iot:Publish"]
    assert f"arn:aws:iot:*:*:topicfilter/cmd/{thing}" in by_action["iot:Subscribe"]
    assert all("t-s-000" not in r for rs in by_action.values() for r in rs)


def test_spoiled_payloads() -> None:
    body = json.dumps({"a": 1}).encode()
    assert spoil(body, None) == body
    malformed = spoil(body, "malformed")
    try:
        json.loads(malformed)
        raise AssertionError("malformed payload parsed")
    except ValueError:
        pass
    assert len(spoil(body, "oversized")) == MAX_PAYLOAD_BYTES + 1


def test_offline_windows_once_and_repeating() -> None:
    plan = FaultPlan(
        FaultSpec.model_validate(
            {"offline_windows": [{"start": 10, "duration": 5}, {"start": 100, "duration": 2, "every": 50}]}
        ),
        random.Random(1),
    )
    assert plan.offline_until(9.9) is None
    assert plan.offline_until(10) == 15 and plan.offline_until(14.9) == 15
    assert plan.offline_until(15) is None
    assert plan.offline_until(151) == 152 and plan.offline_until(153) is None
    assert plan.next_offline_start(0) == 10
    assert plan.next_offline_start(20) == 100
    assert plan.next_offline_start(100.5) == 150


@settings(max_examples=50, deadline=None)
@given(malformed=st.floats(0, 0.5), oversized=st.floats(0, 0.5), seed=st.integers(0, 2**32))
def test_payload_fault_fractions(malformed: float, oversized: float, seed: int) -> None:
    plan = FaultPlan(FaultSpec(malformed_fraction=malformed, oversized_fraction=oversized), random.Random(seed))
    draws = [plan.payload_fault() for _ in range(2000)]
    assert abs(draws.count("malformed") / 2000 - malformed) < 0.06
    assert abs(draws.count("oversized") / 2000 - oversized) < 0.06


def test_disconnects_follow_the_configured_rate() -> None:
    plan = FaultPlan(FaultSpec(disconnect_per_hour=3600), random.Random(2))
    gaps = [plan.next_disconnect_in() or 0.0 for _ in range(5000)]
    assert 0.9 < sum(gaps) / len(gaps) < 1.1
    assert FaultPlan(FaultSpec(), random.Random(2)).next_disconnect_in() is None


def test_delta_answer_and_topics() -> None:
    assert reported_for_delta({"level": 3}) == {"state": {"reported": {"level": 3}}}
    assert shadow_prefix("t1", None) == "$aws/things/t1/shadow"
    assert shadow_prefix("t1", "cfg") == "$aws/things/t1/shadow/name/cfg"
