"""The edge core's fleet status report (gateway/edge/status.py): payload, status mapping, health, when it is due."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.edge.config import parse_edge_config
from gateway.edge.identity import core_policy
from gateway.edge.status import (
    ComponentFigures,
    ComponentStatus,
    CoreFigures,
    HostInfo,
    SpoolFigures,
    StatusSchedule,
    SyncFigures,
    component_status,
    fleet_status,
    health_signature,
    host_info,
    overall_status,
    status_topic,
)
from gateway.errors import ConfigError
from gateway.identity.authorizer import Authorizer, ConnectionContext
from gateway.identity.policy_doc import parse_policy_document

HOST = HostInfo("edgesim-0.1.0", "linux", "x86_64")


def _component(name: str = "thermostat", **kw: Any) -> ComponentFigures:
    return ComponentFigures(name, kw.pop("version", "1.0.0"), kw.pop("phase", "started"), **kw)


def _figures(*components: ComponentFigures, bridge: dict[str, Any] | None = None) -> CoreFigures:
    return CoreFigures(
        thing="edge-1",
        components=components,
        spool=SpoolFigures(messages=3, bytes=120, max_bytes=2_621_440),
        shadow_sync=SyncFigures(shadows=1, pending=0, last_sync_ms=1_700_000_000_500),
        bridge=bridge,
    )


def test_topic_is_greengrass_fleet_status_topic() -> None:
    assert status_topic("edge-1") == "$aws/things/edge-1/greengrassv2/health/json"


def test_core_policy_allows_publishing_the_status_topic() -> None:
    """The gateway enforces the core's policy and drops the connection on a denied publish."""
    document = parse_policy_document(json.dumps(core_policy("edge-1")))
    context = ConnectionContext(client_id="edge-1", region="us-east-1", account="123456789012")
    authorizer = Authorizer.compile([document], context)
    assert authorizer.can_connect()
    assert authorizer.can_publish(status_topic("edge-1"))


def test_payload_fields() -> None:
    figures = _figures(_component(restarts=2), bridge={"forwarded": {"TelemetryToCloud": 5}, "rejected": 0})
    payload = fleet_status(figures, HOST, sequence=7, timestamp_ms=1_700_000_001_000, trigger="CADENCE")
    assert payload == {
        "ggcVersion": "edgesim-0.1.0",
        "platform": "linux",
        "architecture": "x86_64",
        "thing": "edge-1",
        "sequenceNumber": 7,
        "timestamp": 1_700_000_001_000,
        "messageType": "COMPLETE",
        "trigger": "CADENCE",
        "overallDeviceStatus": "HEALTHY",
        "components": [
            {
                "componentName": "thermostat",
                "version": "1.0.0",
                "isRoot": True,
                "status": "RUNNING",
                "statusDetails": {},
                "restarts": 2,
            }
        ],
        "edgesim": {
            "spool": {"messages": 3, "bytes": 120, "maxBytes": 2_621_440},
            "shadowSync": {"shadows": 1, "pending": 0, "lastSyncMs": 1_700_000_000_500},
            "bridge": {"forwarded": {"TelemetryToCloud": 5}, "rejected": 0},
        },
    }
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    no_bridge = fleet_status(_figures(), HOST, sequence=1, timestamp_ms=0, trigger="RECONNECT")
    assert "bridge" not in no_bridge["edgesim"] and no_bridge["components"] == []
    assert no_bridge["overallDeviceStatus"] == "HEALTHY"


def test_host_info_names_edgesim_and_this_machine() -> None:
    host = host_info()
    assert host.ggc_version.startswith("edgesim-") and host.ggc_version != "edgesim-"
    assert host.platform in ("linux", "windows") and isinstance(host.architecture, str)


@pytest.mark.parametrize(
    ("phase", "crashes", "expected"),
    [
        ("installed", 0, "INSTALLED"),
        ("starting", 0, "STARTING"),
        ("started", 0, "RUNNING"),
        ("started", 1, "ERRORED"),
        ("started", 2, "ERRORED"),
        ("started", 3, "BROKEN"),
        ("started", 10, "BROKEN"),
        ("stopping", 5, "STOPPING"),
        ("stopped", 0, "FINISHED"),
        ("stopped", 4, "FINISHED"),
    ],
)
def test_component_status_mapping(phase: Any, crashes: int, expected: ComponentStatus) -> None:
    assert component_status(_component(phase=phase, consecutive_crashes=crashes)) == expected


def test_errored_and_broken_components_carry_details_and_make_the_core_unhealthy() -> None:
    broken = _component("bad", consecutive_crashes=3, restarts=3, last_error="worker exited with code 3")
    payload = fleet_status(_figures(_component(), broken), HOST, sequence=1, timestamp_ms=0, trigger="CADENCE")
    assert payload["overallDeviceStatus"] == "UNHEALTHY"
    entry = payload["components"][1]
    assert entry["status"] == "BROKEN" and entry["restarts"] == 3
    assert entry["statusDetails"] == {
        "detailedStatus": "3 worker crashes in a row",
        "failureCause": "worker exited with code 3",
    }
    assert payload["components"][0]["statusDetails"] == {}


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        ((), "HEALTHY"),
        (("RUNNING", "FINISHED", "STARTING", "STOPPING", "INSTALLED"), "HEALTHY"),
        (("RUNNING", "ERRORED"), "UNHEALTHY"),
        (("BROKEN",), "UNHEALTHY"),
    ],
)
def test_overall_status(statuses: tuple[ComponentStatus, ...], overall: str) -> None:
    assert overall_status(statuses) == overall


def test_health_signature_follows_statuses_only() -> None:
    a = _figures(_component(restarts=1))
    b = _figures(_component(restarts=5, last_error="x"))  # counters moved, status did not
    assert health_signature(a) == health_signature(b) == (("thermostat", "RUNNING"),)
    assert health_signature(_figures(_component(consecutive_crashes=1))) == (("thermostat", "ERRORED"),)


# ---- when reports are due


def _send(schedule: StatusSchedule, now: float) -> tuple[str, int] | None:
    trigger, _ = schedule.due(now)
    if trigger is None:
        return None
    return trigger, schedule.sent(now, trigger)


def test_nothing_is_due_while_offline() -> None:
    schedule = StatusSchedule(10)
    assert schedule.due(0.0) == (None, None)
    schedule.observe((("c", "RUNNING"),))
    schedule.observe((("c", "ERRORED"),))
    assert schedule.due(100.0) == (None, None)


def test_launch_then_cadence_then_reconnect_with_increasing_sequence_numbers() -> None:
    schedule = StatusSchedule(10, sequence=41)  # carried over from the last run
    schedule.link(True)
    assert _send(schedule, 0.0) == ("NUCLEUS_LAUNCH", 42)
    assert schedule.due(4.0) == (None, 6.0)
    assert _send(schedule, 9.9) is None
    assert _send(schedule, 10.0) == ("CADENCE", 43)
    assert _send(schedule, 20.5) == ("CADENCE", 44)
    schedule.link(False)
    assert schedule.due(40.0) == (None, None)  # nothing kept for later
    schedule.link(True)
    assert _send(schedule, 40.0) == ("RECONNECT", 45)
    assert schedule.last_trigger == "RECONNECT"
    assert _send(schedule, 50.0) == ("CADENCE", 46)


def test_launch_trigger_survives_until_the_launch_report_is_sent() -> None:
    schedule = StatusSchedule(10)
    schedule.link(True)
    schedule.link(False)  # dropped before the first report went out
    schedule.link(True)
    assert _send(schedule, 0.0) == ("NUCLEUS_LAUNCH", 1)


def test_component_change_is_debounced_to_once_a_second() -> None:
    schedule = StatusSchedule(10)
    schedule.observe((("c", "RUNNING"),))
    schedule.link(True)
    assert _send(schedule, 0.0) == ("NUCLEUS_LAUNCH", 1)
    schedule.observe((("c", "RUNNING"),))
    assert schedule.due(0.2)[0] is None  # no change: cadence only
    schedule.observe((("c", "ERRORED"),))
    trigger, wait = schedule.due(0.3)
    assert trigger is None and wait == pytest.approx(0.7)
    schedule.observe((("c", "BROKEN"),))  # folded into the same report
    assert _send(schedule, 1.0) == ("COMPONENT_STATUS_CHANGE", 2)
    assert schedule.due(1.5) == (None, 9.5)
    schedule.observe((("c", "RUNNING"),))
    assert _send(schedule, 5.0) == ("COMPONENT_STATUS_CHANGE", 3)  # long after the last one: at once
    assert _send(schedule, 14.9) is None
    assert _send(schedule, 15.0) == ("CADENCE", 4)


def test_reconnect_wins_over_a_pending_component_change_and_is_debounced_too() -> None:
    schedule = StatusSchedule(10)
    schedule.observe((("c", "RUNNING"),))
    schedule.link(True)
    assert _send(schedule, 0.0) == ("NUCLEUS_LAUNCH", 1)
    schedule.observe((("c", "ERRORED"),))
    schedule.link(False)
    schedule.link(True)
    trigger, wait = schedule.due(0.5)
    assert trigger is None and wait == pytest.approx(0.5)
    assert _send(schedule, 1.0) == ("RECONNECT", 2)


def test_fleet_status_interval_config() -> None:
    assert parse_edge_config({}).fleet_status.interval_s == 10
    config = parse_edge_config({"fleetStatus": {"periodicStatusPublishIntervalSeconds": 1}})
    assert config.fleet_status.interval_s == 1
    with pytest.raises(ConfigError, match=r"edge\.yaml: fleetStatus\.periodicStatusPublishIntervalSeconds: .*1"):
        parse_edge_config({"fleetStatus": {"periodicStatusPublishIntervalSeconds": 0}}, "edge.yaml")
    with pytest.raises(ConfigError, match=r"fleetStatus\.interval: Extra inputs"):
        parse_edge_config({"fleetStatus": {"interval": 5}}, "edge.yaml")
    with pytest.raises(ConfigError, match=r"components\[0\]\.version"):
        parse_edge_config(
            {"components_dir": ".", "components": [{"name": "c", "handler": "m.f", "version": "one"}]}, "edge.yaml"
        )
