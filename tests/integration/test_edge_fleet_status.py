"""The edge core's fleet status reports (Greengrass's `$aws/things/{core}/greengrassv2/health/json`), end to end: a
gateway, an `edgesim edge run` core reporting every second, and a dashboard client subscribed at the gateway."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml
from conftest import ROOT, allow_all_policy
from mqtt_helpers import Device
from test_edge import TELEMETRY, EdgeProcess, gateway_in
from test_edge_components import HANDLERS, RecordingOps, submit, until

from gateway.edge.components import ComponentConfig, ComponentRunner
from gateway.edge.status import ComponentFigures, component_status

HEALTH_FILTER = "$aws/things/+/greengrassv2/health/json"

CRASHY = """
import os


def handle(event, context):
    if event.get("crash"):
        os._exit(3)
"""


@dataclass
class ReportingEdge(EdgeProcess):
    """The example core, reporting every second, plus an on-demand `crashy` component fed from `crash/#`."""

    def write_config(self) -> Path:
        path = super().write_config()
        config = yaml.safe_load(path.read_text())
        components = self.tmp / "components"
        components.mkdir(exist_ok=True)
        shutil.copy(ROOT / "examples/edge/components/thermostat.py", components)
        (components / "crashy.py").write_text(CRASHY)
        config["components_dir"] = str(components)
        config["components"].append(
            {"name": "crashy", "handler": "crashy.handle", "version": "2.1.0",
             "event_sources": [{"topic": "crash/#", "type": "LOCAL_MQTT"}]}
        )  # fmt: skip
        config["fleetStatus"] = {"periodicStatusPublishIntervalSeconds": 1}
        path.write_text(yaml.safe_dump(config))
        return path


def next_report(dash: Device, timeout: float = 5.0) -> dict[str, Any]:
    message = dash.expect(timeout)
    report: dict[str, Any] = json.loads(message.payload)
    assert message.topic == f"$aws/things/{report['thing']}/greengrassv2/health/json"
    return report


def report_with(dash: Device, trigger: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = next_report(dash, max(0.1, deadline - time.monotonic()))
        if report["trigger"] == trigger:
            return report


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["componentName"]: c["status"] for c in report["components"]}


def test_core_reports_health_on_launch_cadence_component_change_and_reconnect_only_while_online(
    tmp_path: Path, unique: str
) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = ReportingEdge(tmp_path, gw, name=f"edge-{unique}")
    creds = gw.provision(f"dash-{unique}", allow_all_policy())
    dash = Device(gw.ports["mqtts"], f"dash-{unique}", creds.cert, creds.key, creds.ca).connect()
    sensor: Device | None = None
    try:
        assert dash.subscribe(HEALTH_FILTER, qos=0) == [0]
        edge.start().wait("online", lambda s: s["cloud"]["online"])

        launch = next_report(dash)
        assert launch["trigger"] == "NUCLEUS_LAUNCH" and launch["thing"] == edge.name
        assert launch["ggcVersion"].startswith("edgesim-") and launch["platform"] == "linux"
        assert launch["messageType"] == "COMPLETE" and launch["overallDeviceStatus"] == "HEALTHY"
        assert statuses(launch) == {"thermostat": "RUNNING", "crashy": "RUNNING"}
        crashy = next(c for c in launch["components"] if c["componentName"] == "crashy")
        assert crashy == {"componentName": "crashy", "version": "2.1.0", "isRoot": True, "status": "RUNNING",
                          "statusDetails": {}, "restarts": 0}  # fmt: skip
        assert launch["edgesim"]["spool"] == {"messages": 0, "bytes": 0, "maxBytes": 2621440}
        assert launch["edgesim"]["shadowSync"]["shadows"] == 1
        assert set(launch["edgesim"]["bridge"]["forwarded"]) == {"TelemetryToCloud", "CommandsToDevices"}

        cadence = next_report(dash, 3)
        assert cadence["trigger"] == "CADENCE" and cadence["sequenceNumber"] == launch["sequenceNumber"] + 1
        assert 700 <= cadence["timestamp"] - launch["timestamp"] <= 2500
        shadow_sync = cadence["edgesim"]["shadowSync"]
        if shadow_sync["pending"] == 0:  # reconciled after the connect
            assert isinstance(shadow_sync["lastSyncMs"], int)

        # A component crashes: a report goes out at once (not at the next cadence), the core is unhealthy.
        sensor = edge.local_device(f"sensor-{unique}")
        assert sensor.publish("crash/now", json.dumps({"crash": True}))
        changed = report_with(dash, "COMPONENT_STATUS_CHANGE")
        assert statuses(changed) == {"thermostat": "RUNNING", "crashy": "ERRORED"}
        assert changed["overallDeviceStatus"] == "UNHEALTHY"
        crashy = next(c for c in changed["components"] if c["componentName"] == "crashy")
        assert crashy["statusDetails"]["failureCause"] == "worker exited with code 3"
        # It serves the next item (after its backoff): healthy again.
        assert sensor.publish("crash/now", json.dumps({"crash": False}))
        recovered = report_with(dash, "COMPONENT_STATUS_CHANGE")
        assert statuses(recovered)["crashy"] == "RUNNING" and recovered["overallDeviceStatus"] == "HEALTHY"
        assert recovered["components"][1]["restarts"] == 1
        assert recovered["timestamp"] - changed["timestamp"] >= 990  # debounced: at most one a second

        status = edge.status()
        # The publishes did not cost the core its connection (the gateway closes it on a denied publish).
        assert status["cloud"]["connects"] == 1
        fleet = status["fleet_status"]
        assert fleet["topic"] == f"$aws/things/{edge.name}/greengrassv2/health/json"
        assert fleet["interval_s"] == 1 and fleet["sequenceNumber"] >= recovered["sequenceNumber"]
        assert fleet["overallDeviceStatus"] == "HEALTHY" and status["components"]["crashy"]["status"] == "RUNNING"

        # Offline: nothing is sent, nothing is queued for later.
        edge.offline()
        edge.wait("offline", lambda s: not s["cloud"]["online"])
        time.sleep(0.3)
        while True:  # a report that was already on its way
            try:
                dash.messages.get_nowait()
            except queue.Empty:
                break
        for seq in range(30):
            assert sensor.publish(TELEMETRY, json.dumps({"seq": seq, "temperature": 27.0}))
        edge.wait("readings spooled", lambda s: s["spool"]["depth"] == 30)
        dash.expect_none(2.5)
        last_sequence = edge.status()["fleet_status"]["sequenceNumber"]

        edge.online()
        reconnect = next_report(dash)
        assert reconnect["trigger"] == "RECONNECT" and reconnect["sequenceNumber"] == last_sequence + 1
        # Built as the link came up, before the spool had drained.
        assert reconnect["edgesim"]["spool"]["messages"] > 0 and reconnect["edgesim"]["spool"]["bytes"] > 0
        after = report_with(dash, "CADENCE", 3)
        assert after["sequenceNumber"] > reconnect["sequenceNumber"]
        edge.wait("drained", lambda s: s["spool"]["depth"] == 0)
        assert edge.status()["cloud"]["connects"] == 2
    finally:
        if sensor is not None:
            sensor.close()
        dash.close()
        edge.stop()
        gw.stop()


def test_runner_reports_phases_and_crash_streaks(tmp_path: Path) -> None:
    """What the status mapping reads from a component runner, on real worker processes."""
    for name, source in HANDLERS.items():
        (tmp_path / name).write_text(source)

    def status_of(runner: ComponentRunner) -> str:
        figures = ComponentFigures("c", runner.config.version, runner.phase, runner.consecutive_crashes)
        return component_status(figures)

    async def main() -> None:
        changes = 0

        def changed() -> None:
            nonlocal changes
            changes += 1

        crashing = ComponentRunner(
            ComponentConfig(name="c", handler="app.crash", pinned=True), tmp_path, RecordingOps(), changed
        )
        assert status_of(crashing) == "INSTALLED"
        await crashing.start()
        assert status_of(crashing) == "RUNNING" and changes == 2  # starting, started
        submit(crashing, {"crash": True})
        await until(lambda: crashing.consecutive_crashes == 1)
        assert status_of(crashing) == "ERRORED" and changes == 3
        submit(crashing, {})
        await until(lambda: crashing.stats["succeeded"] == 1)
        assert status_of(crashing) == "RUNNING" and changes == 4
        await crashing.stop()
        assert status_of(crashing) == "FINISHED" and changes == 6  # stopping, stopped

        broken = ComponentRunner(
            ComponentConfig(name="b", handler="broken.handler", pinned=True), tmp_path, RecordingOps()
        )
        await broken.start()
        try:
            assert status_of(broken) == "ERRORED"  # its worker cannot import the handler
            await until(lambda: broken.consecutive_crashes == 3, 5.0)  # after 0.5 s and 1 s backoffs
            assert status_of(broken) == "BROKEN"
        finally:
            await broken.stop()
        assert psutil.Process().children(recursive=True) == []

    asyncio.run(main())
