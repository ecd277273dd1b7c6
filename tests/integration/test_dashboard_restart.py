"""What the dashboard shows after a gateway restart: its edge cores (from their last health report, kept in the
database), and each shadow's last-updated time (not the time the page read it)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import GatewayProcess
from test_api_iot import client

from gateway.api.dashboard_views import shadow_json


def _get(gw: GatewayProcess, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}{path}", timeout=10) as response:
        return json.loads(response.read())


def test_edge_cores_survive_a_restart(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        report = {"overallDeviceStatus": "HEALTHY", "components": [{"componentName": "thermo", "status": "RUNNING"}]}
        client(gw, "iot-data").publish(
            topic="$aws/things/core-7/greengrassv2/health/json", qos=1, payload=json.dumps(report).encode()
        )
        deadline = time.monotonic() + 10
        while not [c for c in _get(gw, "/edgesim/dash/edge")["cores"] if c["name"] == "core-7"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        gw.stop()
        gw.start()
        (core,) = [c for c in _get(gw, "/edgesim/dash/edge")["cores"] if c["name"] == "core-7"]
        assert core["status"] == "HEALTHY" and core["components"][0]["name"] == "thermo"
        assert core["online"] is False
    finally:
        gw.stop()


def test_a_shadow_shows_when_it_last_changed_not_when_it_was_read() -> None:
    document = {
        "state": {"desired": {"fan": "on"}, "reported": {"fan": "off"}},
        "metadata": {
            "desired": {"fan": {"timestamp": 1_700_000_100}},
            "reported": {"fan": {"timestamp": 1_700_000_050}},
        },
        "version": 3,
        "timestamp": 1_800_000_000,  # the read
    }
    assert shadow_json(None, document)["timestampS"] == 1_700_000_100
