"""The demo's live view fits an 80x24 terminal with the essentials, the dashboard URL first; bigger shows more."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from devices.figures import Figures
from devices.view import summary
from gateway.demo_view import DemoNames, demo_view

NAMES = DemoNames(
    api="http://127.0.0.1:4566",
    mqtts_port=8883,
    fleet="demo",
    thermostat="demo-thermo-0000",
    stream="telemetry",
    queue="hot-readings",
    function="low-battery",
)
GATEWAY = {
    "rules": {
        name: {"matched": 12_345, "action_success": 12_000, "action_failure": 345}
        for name in ("all_to_kinesis", "hot_to_sqs", "low_battery")
    },
    "stream_records": 123_456,
    "queue_messages": 321,
    "lambda": {"invocations": 42, "errors": 1},
    "shadow_updates": 777,
    "connections": 106,
    "policy_denials": 0,
}
EDGE: dict[str, Any] = {
    "name": "demo-edge",
    "thing": "demo-edge",
    "ports": {"local_mqtt": 41883, "control": 41884},
    "cloud": {"online": True, "wanted": True, "connects": 1, "last_error": None},
    "spool": {
        "depth": 3,
        "bytes": 300,
        "max_bytes": 2_621_440,
        "in_flight": 1,
        "appended": 9,
        "rejected": 0,
        "evicted": 0,
        "delivered": 6,
    },
    "local": {"connections": 5, "messages_in": 1_000},
    "shadow_sync": {"shadows": 5, "in_sync": True, "to_cloud": 2, "to_local": 1, "last_error": None},
    "components": {
        "thermostat": {"state": "RUNNING", "invocations": 10, "errors": 0, "timeouts": 0, "crashes": 0, "queued": 0}
    },
    "bridge": {"forwarded": {"TelemetryToCloud": 900}, "rejected": 0},
    "fleet_status": {"overallDeviceStatus": "HEALTHY", "sequenceNumber": 3, "interval_s": 10, "last_trigger": None},
}


def _fleet() -> dict[str, Any]:
    figures = Figures()
    figures.devices = 100
    figures.counters.inc("errors.connect", 2)
    return summary(figures, 42.0)


def _render(width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, force_terminal=False, color_system=None)
    console.print(demo_view(console, _fleet(), GATEWAY, EDGE, NAMES))
    return console.export_text().rstrip("\n").splitlines()


def test_80x24_shows_the_essentials_and_the_dashboard_url() -> None:
    lines = _render(80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    assert all(len(line) <= 80 for line in lines), text
    assert "http://127.0.0.1:4566/" in text
    for essential in (
        "100 devices",
        "low_battery",
        "all_to_kinesis",
        "telemetry",
        "hot-readings",
        "low-battery",
        "demo-edge online",
        "edgesim rules stats",
    ):
        assert essential in text, (essential, text)


def test_a_tall_terminal_gets_every_table_and_the_hints() -> None:
    text = "\n".join(_render(120, 80))
    assert "gateway: rules and sinks" in text and "publish → PUBACK" in text
    assert "Try, in another terminal" in text and "http://127.0.0.1:4566/" in text
