"""The edge's MQTT bridge mappings and configuration: pure routing, checked without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.edge.bridge import Bridge, BridgeTargets, LocalPubSub
from gateway.edge.config import TopicMapping, load_edge_config, parse_edge_config
from gateway.errors import ConfigError


def bridge(mappings: dict[str, dict[str, str]]) -> tuple[Bridge, list[tuple[str, str, bytes, int]]]:
    sent: list[tuple[str, str, bytes, int]] = []
    targets = BridgeTargets(
        local_mqtt=lambda t, p, q, props: sent.append(("LocalMqtt", t, p, q)),
        pubsub=lambda t, p: sent.append(("Pubsub", t, p, 0)),
        iot_core=lambda t, p, q, props: sent.append(("IotCore", t, p, q)),
    )
    return Bridge({k: TopicMapping.model_validate(v) for k, v in mappings.items()}, targets), sent


def test_mqtt5_properties_travel_between_the_mqtt_endpoints_not_to_pubsub() -> None:
    sent: list[tuple[str, str, object]] = []
    targets = BridgeTargets(
        local_mqtt=lambda t, p, q, props: sent.append(("LocalMqtt", t, props)),
        pubsub=lambda t, p: sent.append(("Pubsub", t, None)),
        iot_core=lambda t, p, q, props: sent.append(("IotCore", t, props)),
    )
    mappings = {
        "up": {"topic": "dt/#", "source": "LocalMqtt", "target": "IotCore"},
        "side": {"topic": "dt/#", "source": "LocalMqtt", "target": "Pubsub"},
        "down": {"topic": "cmd/#", "source": "IotCore", "target": "LocalMqtt"},
    }
    b = Bridge({k: TopicMapping.model_validate(v) for k, v in mappings.items()}, targets)
    up, down = {0x26: [("site", "a")]}, {0x03: "text/plain"}
    b.from_local_mqtt("dt/x", b"1", 1, up)
    b.from_iot_core("cmd/x", b"2", 1, down)
    assert sorted(sent, key=str) == [("IotCore", "dt/x", up), ("LocalMqtt", "cmd/x", down), ("Pubsub", "dt/x", None)]


def test_mappings_forward_by_filter_with_the_target_prefix_and_qos_1_to_the_cloud() -> None:
    b, sent = bridge(
        {
            "ingest": {"topic": "dt/+/temp", "source": "LocalMqtt", "target": "IotCore",
                       "targetTopicPrefix": "$aws/rules/edge_rule/"},
            "toComponents": {"topic": "dt/#", "source": "LocalMqtt", "target": "Pubsub"},
            "commands": {"topic": "cmd/#", "source": "IotCore", "target": "LocalMqtt"},
        }
    )  # fmt: skip
    b.from_local_mqtt("dt/a/temp", b"1", 0)
    b.from_local_mqtt("other/x", b"2", 1)
    b.from_iot_core("cmd/a", b"3", 1)
    b.from_pubsub("cmd/a", b"4")  # no Pubsub-source mapping
    assert sorted(sent) == [
        ("IotCore", "$aws/rules/edge_rule/dt/a/temp", b"1", 1),  # QoS 1 towards IoT Core even for QoS 0 (§11.3)
        ("LocalMqtt", "cmd/a", b"3", 1),
        ("Pubsub", "dt/a/temp", b"1", 0),
    ]
    assert b.forwarded == {"ingest": 1, "toComponents": 1, "commands": 1}
    assert sorted(b.filters("LocalMqtt")) == ["dt/#", "dt/+/temp"]


def test_local_pubsub_delivers_to_matching_subscribers_and_survives_a_failing_one() -> None:
    bus = LocalPubSub()
    got: list[tuple[str, bytes]] = []

    def broken(_t: str, _p: bytes) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("a/+", broken)
    bus.subscribe("a/#", lambda t, p: got.append((t, p)))
    bus.publish("a/b", b"x")
    bus.publish("b/c", b"y")
    assert got == [("a/b", b"x")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"mqttTopicMapping": {"loop": {"topic": "a", "source": "IotCore", "target": "IotCore"}}},
         "mqttTopicMapping.loop: Value error, source and target must differ (both are IotCore)"),
        ({"mqttTopicMapping": {"bad": {"topic": "a/#/b", "source": "LocalMqtt", "target": "IotCore"}}},
         "mqttTopicMapping.bad.topic"),
        ({"spooler": {"maxSizeInBytes": 0}}, "spooler.maxSizeInBytes"),
        ({"cloud": {"maxInFlightPublishes": 101}}, "cloud.maxInFlightPublishes"),
        ({"components": [{"name": "c", "handler": "m.h"}]}, "components need components_dir"),
        ({"shadowManager": {"strategy": {"type": "periodic"}}}, "shadowManager"),
        ({"unknown": 1}, "unknown: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_config_errors_name_the_file_and_field(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_edge_config(raw, "edge.yaml")
    assert str(error.value).startswith("edge.yaml: ") and expected in str(error.value)


def test_the_example_config_loads_with_paths_from_its_folder(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_edge_config(root / "examples/edge/edge.yaml")
    assert config.components_dir == (root / "examples/edge/components").resolve()
    assert [c.name for c in config.components] == ["thermostat"]
    assert config.shadow_sync().synchronize.shadow_documents[0].thing_name == "edge-fan-0"
    broken = tmp_path / "broken.yaml"
    broken.write_text("cloud:\n  target: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:3:1: not valid YAML"):
        load_edge_config(broken)
