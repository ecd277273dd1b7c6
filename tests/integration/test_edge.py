"""The edge core end to end: `edgesim edge run` as its own process between a gateway and local paho devices.

Cut the cloud (stop the gateway), keep working locally, change the same shadow on both sides, bring the cloud back:
every spooled message reaches the Kinesis stream in order and the shadows reconcile by the ShadowManager's rules.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT, GatewayProcess, allow_all_policy
from mqtt5_helpers import V5Client
from mqtt_helpers import Device
from test_api_iot import client
from test_kinesis import read_all
from test_rules import rule

ROLE = "arn:aws:iam::123456789012:role/r"
TELEMETRY = "dt/edge/edge-thermostat-0/temperature"
FAN_SHADOW = "$aws/things/edge-fan-0/shadow"


@dataclass
class EdgeProcess:
    """`edgesim edge run` in a subprocess, driven through its control port (as `edgesim edge status` is)."""

    tmp: Path
    gw: GatewayProcess
    spooler: dict[str, Any] = field(default_factory=dict)
    cloud: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    name: str = "edge-t"
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.tmp / "edge-home"

    def write_config(self) -> Path:
        config = yaml.safe_load((ROOT / "examples/edge/edge.yaml").read_text())
        config["components_dir"] = str(ROOT / "examples/edge/components")
        config["spooler"].update(self.spooler)
        config["cloud"].update(self.cloud)
        path = self.tmp / "edge.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> EdgeProcess:
        (self.home / "edge.json").unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "gateway", "edge", "run", self.name,
            "--config", str(self.write_config()),
            "--home", str(self.home),
            "--certs-dir", str(self.gw.certs_dir),
            "--endpoint", f"http://127.0.0.1:{self.gw.ports['api']}",
            "--target", f"mqtts://127.0.0.1:{self.gw.ports['mqtts']}",
            "--local-port", str(self.ports.get("local_mqtt", 0)),
            "--json",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.tmp / "edge.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.home / "edge.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("edge core did not start:\n" + (self.tmp / "edge.log").read_text())
            time.sleep(0.05)
        self.ports = json.loads((self.home / "edge.json").read_text())["ports"]
        return self

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['control']}{path}", method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/edgesim/status")

    def offline(self) -> None:
        assert self._call("POST", "/offline")["cloud"]["wanted"] is False

    def online(self) -> None:
        assert self._call("POST", "/online")["cloud"]["wanted"] is True

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"edge never got {what}: {json.dumps(status, indent=1)}")
            time.sleep(0.1)

    def local_device(self, client_id: str) -> Device:
        return Device(self.ports["local_mqtt"], client_id).connect()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def gateway_in(folder: Path) -> GatewayProcess:
    folder.mkdir()
    return GatewayProcess(folder).start()


def restart_on_same_ports(gw: GatewayProcess) -> None:
    """The edge keeps dialling the address it started with, as a core does."""
    gw.extra_args = [*gw.extra_args, "--mqtts-port", str(gw.ports["mqtts"]), "--api-port", str(gw.ports["api"])]
    gw.start()


def stream_to_kinesis(gw: GatewayProcess) -> Any:
    kinesis = client(gw, "kinesis")
    kinesis.create_stream(StreamName="edge-telemetry", ShardCount=1)
    client(gw, "iot").create_topic_rule(
        ruleName="edge_telemetry",
        topicRulePayload=rule(
            "SELECT * FROM 'dt/edge/#'",
            {"kinesis": {"roleArn": ROLE, "streamName": "edge-telemetry", "partitionKey": "${topic()}"}},
        ),
    )
    return kinesis


def seqs_in_stream(gw: GatewayProcess, expected: int) -> list[int]:
    deadline = time.monotonic() + 15
    while True:
        seqs = [json.loads(r["Data"])["seq"] for r in read_all(client(gw, "kinesis"), "edge-telemetry")]
        if len(set(seqs)) >= expected or time.monotonic() > deadline:
            return seqs
        time.sleep(0.2)


def publish_readings(device: Device, seqs: range, hot: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for seq in seqs:
        body = {"seq": seq, "temperature": 35.0 if seq in hot else 27.0}  # 27: neither hot nor cool
        assert device.publish(TELEMETRY, json.dumps(body)), f"no PUBACK from the edge for seq {seq}"


def test_offline_edge_keeps_working_then_drains_in_order_and_reconciles_shadows(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = EdgeProcess(tmp_path, gw)
    devices: list[Device] = []
    try:
        stream_to_kinesis(gw)
        edge.start().wait("online", lambda s: s["cloud"]["online"])
        sensor, fan = edge.local_device("edge-thermostat-0"), edge.local_device("edge-fan-0")
        devices += [sensor, fan]
        fan.subscribe(f"{FAN_SHADOW}/update/delta")
        publish_readings(sensor, range(5))
        assert sorted(seqs_in_stream(gw, 5)) == list(range(5))

        gw.stop()  # the cloud goes away
        edge.wait("offline", lambda s: not s["cloud"]["online"])
        publish_readings(sensor, range(5, 45), hot={20})
        # The local function reacted to the hot reading through the local shadow, with no cloud.
        delta = json.loads(fan.expect(10).payload)
        assert delta["state"] == {"fan": "on"}
        assert fan.publish(f"{FAN_SHADOW}/update", json.dumps({"state": {"reported": {"fan": "on"}}}))
        status = edge.wait("40 readings and the function's alert spooled", lambda s: s["spool"]["depth"] == 41)
        assert status["components"]["thermostat"]["invocations"] >= 45

        edge.offline()  # hold the link down while the gateway returns and its copy of the shadow changes
        restart_on_same_ports(gw)
        data = client(gw, "iot-data")
        data.update_thing_shadow(
            thingName="edge-fan-0", payload=json.dumps({"state": {"desired": {"fan": "off", "mode": "eco"}}})
        )
        time.sleep(1.0)
        assert not edge.status()["cloud"]["online"]
        edge.online()
        edge.wait(
            "drained and in sync",
            lambda s: s["cloud"]["online"] and s["spool"]["depth"] == 0 and s["shadow_sync"]["in_sync"],
        )

        seqs = seqs_in_stream(gw, 45)
        assert sorted(set(seqs)) == list(range(45)), "a spooled reading is missing"
        assert list(dict.fromkeys(seqs)) == list(range(45)), "readings arrived out of order"
        # Conflicting desired sections take the cloud's value, reported sections the device's (reference §11.4).
        cloud = json.loads(data.get_thing_shadow(thingName="edge-fan-0")["payload"].read())["state"]
        assert cloud["desired"] == {"fan": "off", "mode": "eco"}
        assert cloud["reported"] == {"fan": "on"}
        fan.subscribe(f"{FAN_SHADOW}/get/accepted")
        assert fan.publish(f"{FAN_SHADOW}/get", "")
        local = json.loads(
            next(m for m in iter(lambda: fan.expect(5), None) if m.topic.endswith("/get/accepted")).payload
        )
        assert local["state"]["desired"] == cloud["desired"] and local["state"]["reported"] == cloud["reported"]
    finally:
        for device in devices:
            device.close()
        edge.stop()
        gw.stop()


def test_spool_full_rejects_new_messages_and_survives_an_edge_restart_while_offline(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    # 20 readings of 100 payload bytes fill it.
    edge = EdgeProcess(tmp_path, gw, spooler={"maxSizeInBytes": 2000})
    sensor: Device | None = None
    try:
        stream_to_kinesis(gw)
        edge.start().wait("online", lambda s: s["cloud"]["online"])
        edge.offline()
        edge.wait("offline", lambda s: not s["cloud"]["online"])
        sensor = edge.local_device("edge-thermostat-0")
        for seq in range(25):
            body = json.dumps({"seq": seq, "temperature": 27.0})
            assert sensor.publish(TELEMETRY, body.ljust(100))
        status = edge.wait("a full spool", lambda s: s["spool"]["rejected"] == 5)
        assert (status["spool"]["depth"], status["spool"]["bytes"]) == (20, 2000)
        sensor.close()
        sensor = None

        # The edge dies (kill -9) and restarts while the cloud is unreachable: everything it PUBACKed is still there.
        edge.kill()
        gw.stop()
        edge.start()
        status = edge.wait("restarted offline", lambda s: not s["cloud"]["online"])
        assert status["spool"]["depth"] == 20
        restart_on_same_ports(gw)
        edge.online()  # retry now rather than after the backoff
        edge.wait("drained", lambda s: s["cloud"]["online"] and s["spool"]["depth"] == 0)
        seqs = seqs_in_stream(gw, 20)
        assert list(dict.fromkeys(seqs)) == list(range(20))
    finally:
        if sensor is not None:
            sensor.close()
        edge.stop()
        gw.stop()


def test_edge_cli_status_offline_online_and_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "spooler:\n  maxSizeInBytes: 0\nmqttTopicMapping:\n  loop: {topic: 'a/#', source: IotCore, target: IotCore}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "edge", "run", "x", "--config", str(bad), "--home", str(tmp_path / "h")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "spooler.maxSizeInBytes" in result.stderr and "source and target must differ" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "edge", "status", "nobody", "--home", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "not running" in result.stderr

    gw = gateway_in(tmp_path / "gw")
    edge = EdgeProcess(tmp_path, gw)
    try:
        edge.start().wait("online", lambda s: s["cloud"]["online"])
        cli = [sys.executable, "-m", "gateway", "edge"]
        home = ["--home", str(edge.home)]
        off = subprocess.run(
            [*cli, "offline", edge.name, *home, "--json"], cwd=ROOT, capture_output=True, timeout=60, check=True
        )
        assert json.loads(off.stdout)["cloud"]["wanted"] is False
        edge.wait("offline", lambda s: not s["cloud"]["online"])
        shown = subprocess.run(
            [*cli, "status", edge.name, *home], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )
        assert "offline (switched off)" in shown.stdout and "spool" in shown.stdout
        subprocess.run([*cli, "online", edge.name, *home], cwd=ROOT, capture_output=True, timeout=60, check=True)
        edge.wait("online again", lambda s: s["cloud"]["online"])
        # The compose stack's local devices, simulated against the edge as against any broker.
        fleet = subprocess.run(
            [sys.executable, "-m", "gateway", "fleet", "run", "examples/fleets/edge-devices.yaml",
             "--target", f"mqtt://127.0.0.1:{edge.ports['local_mqtt']}", "--no-provision", "--duration", "5", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        summary = json.loads(fleet.stdout)
        assert summary["connected"] == 0 and summary["errors"] == {}  # all disconnected cleanly at the end
        assert summary["acked"] == summary["sent"] > 0
        # Every reading (all on dt/edge/#) was bridged through the spool to the cloud; the function saw them.
        status = edge.wait(
            "every reading delivered",
            lambda s: s["spool"]["depth"] == 0 and s["spool"]["delivered"] >= summary["sent"],
        )
        assert status["components"]["thermostat"]["invocations"] >= summary["sent"] - 2  # the fan's are not events
    finally:
        edge.stop()
        gw.stop()


def test_local_devices_connect_over_mutual_tls_with_certificates_the_core_issues(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = EdgeProcess(tmp_path, gw, extra_args=["--local-tls-port", "0"])
    try:
        edge.start().wait("online", lambda s: s["cloud"]["online"])
        out = tmp_path / "device-certs"
        issued = subprocess.run(
            [sys.executable, "-m", "gateway", "edge", "device-cert", edge.name, "sensor-1", "--home", str(edge.home),
             "--out", str(out), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        files = json.loads(issued.stdout)
        assert (Path(files["privateKey"]).stat().st_mode & 0o777) == 0o600
        cert, key, ca = Path(files["certificate"]), Path(files["privateKey"]), Path(files["ca"])
        device = Device(edge.ports["local_mqtts"], "sensor-1", cert, key, ca).connect()
        try:
            assert device.publish("dt/edge/sensor-1/temperature", json.dumps({"temperature": 27.0}))
        finally:
            device.close()
        # A certificate from another CA (here the gateway's) does not get in.
        other = gw.provision("outsider", allow_all_policy())
        assert not Device(edge.ports["local_mqtts"], "outsider", other.cert, other.key, ca).try_connect()
    finally:
        edge.stop()
        gw.stop()


def test_shadow_changes_flow_both_ways_in_real_time_while_online(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = EdgeProcess(tmp_path, gw)
    fan: Device | None = None
    try:
        edge.start().wait("online", lambda s: s["cloud"]["online"])
        data = client(gw, "iot-data")

        def cloud_state() -> dict[str, Any]:
            try:
                state: dict[str, Any] = json.loads(data.get_thing_shadow(thingName="edge-fan-0")["payload"].read())[
                    "state"
                ]
                return state
            except data.exceptions.ResourceNotFoundException:
                return {}

        fan = edge.local_device("edge-fan-0")
        fan.subscribe(f"{FAN_SHADOW}/update/delta")
        assert fan.publish(f"{FAN_SHADOW}/update", json.dumps({"state": {"reported": {"fan": "off", "rpm": 0}}}))
        deadline = time.monotonic() + 10
        while cloud_state().get("reported") != {"fan": "off", "rpm": 0}:
            assert time.monotonic() < deadline, f"the local report never reached the cloud: {cloud_state()}"
            time.sleep(0.1)
        # A desired change made in the cloud reaches the local shadow, whose delta reaches the device.
        data.update_thing_shadow(thingName="edge-fan-0", payload=json.dumps({"state": {"desired": {"fan": "on"}}}))
        delta = json.loads(fan.expect(10).payload)
        assert delta["state"] == {"fan": "on"}
        status = edge.wait("both directions counted", lambda s: s["shadow_sync"]["to_local"] >= 1)
        assert status["shadow_sync"]["to_cloud"] >= 1 and status["shadow_sync"]["errors"] == 0
    finally:
        if fan is not None:
            fan.close()
        edge.stop()
        gw.stop()


def test_mqtt5_devices_on_the_local_listener_and_an_mqtt5_cloud_link_carry_properties(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = EdgeProcess(tmp_path, gw, cloud={"protocol": "mqtt5"})
    clients: list[V5Client] = []
    try:
        status = edge.start().wait("online", lambda s: s["cloud"]["online"])
        assert status["cloud"]["protocol"] == "mqtt5"
        creds = gw.provision("cloud-app", allow_all_policy())
        app = V5Client(gw.ports["mqtts"], "cloud-app", creds.cert, creds.key, creds.ca).connect()
        clients.append(app)
        assert app.subscribe("dt/edge/#") == [1]
        # A v5 device on the core's plain local listener (the gateway's own broker code, so MQTT 5 works there).
        device = V5Client(edge.ports["local_mqtt"], "edge-thermostat-0").connect(SessionExpiryInterval=60)
        clients.append(device)
        assert device.subscribe("cmd/edge/#") == [1]
        rc = device.publish(TELEMETRY, b'{"t": 22}', UserProperty=[("unit", "C"), ("site", "lab")],
                            ContentType="application/json", CorrelationData=b"\x07")  # fmt: skip
        assert rc.value == 0
        # Bridged over the spool and the v5 cloud link: the properties arrive in the cloud.
        got = app.expect(10)
        assert (got.topic, got.payload) == (TELEMETRY, b'{"t": 22}')
        assert got.properties.UserProperty == [("unit", "C"), ("site", "lab")]
        assert got.properties.ContentType == "application/json" and got.properties.CorrelationData == b"\x07"
        # And down: a cloud command with properties reaches the local device with them.
        assert app.publish("cmd/edge/edge-thermostat-0", b"on", UserProperty=[("by", "app")]).value == 0
        command = device.expect(10)
        assert (command.topic, command.payload) == ("cmd/edge/edge-thermostat-0", b"on")
        assert command.properties.UserProperty == [("by", "app")]
        # A denied publish is a reason code on an MQTT 5 link (3.1.1 would lose the connection): the message is dropped
        # from the spool, the link stays up and what follows goes on.
        iot = client(gw, "iot")
        [policy] = [
            p["policyName"] for p in iot.list_policies()["policies"] if p["policyName"].startswith("edgesim-core")
        ]
        document = json.loads(iot.get_policy(policyName=policy)["policyDocument"])
        document["Statement"].append(
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/dt/edge/denied/*"}
        )
        iot.create_policy_version(policyName=policy, policyDocument=json.dumps(document), setAsDefault=True)
        deadline = time.monotonic() + 10
        while edge.status()["cloud"]["refused"] == 0:
            assert time.monotonic() < deadline, "the cloud never refused the denied topic"
            device.publish("dt/edge/denied/x", b"no")
            time.sleep(0.3)
        device.publish(TELEMETRY, b"after")
        while (got := app.expect(10)).topic != TELEMETRY or got.payload != b"after":
            assert got.topic == TELEMETRY  # nothing on the denied topic ever reached the cloud
        status = edge.wait("an empty spool", lambda s: s["spool"]["depth"] == 0)
        assert status["cloud"]["connects"] == 1 and status["cloud"]["online"]
        shown = subprocess.run(
            [sys.executable, "-m", "gateway", "edge", "status", edge.name, "--home", str(edge.home)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "MQTT 5" in shown.stdout and "refused" in shown.stdout
    finally:
        for c in clients:
            c.close()
        edge.stop()
        gw.stop()
