"""`edgesim fleet run` end to end: a 200-device fleet against the gateway (every QoS 1 message delivered, shadow delta
loops converge), faults injected and recovered, and the same kind of file against mosquitto with --no-provision."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, GatewayProcess, allow_all_policy
from mqtt5_helpers import V5Client
from mqtt_helpers import Device
from test_api_iot import client

FLEET_200 = """
fleet: {name}
seed: 3
device_types:
  - name: meter
    count: 150
    thing_name: "{{fleet}}-meter-{{i:03d}}"
    thing_type: Meter
    attributes: {{site: "site-{{i % 4}}"}}
    interval: 1s
    jitter: 0.2
    qos: 1
    payload:
      seq: "{{seq}}"
      watts: {{profile: random_walk, start: 500, step: 20, min: 0, max: 2000, decimals: 1}}
    shadow:
      initial: {{mode: "eco", level: 1}}
      apply_delta: true
      delta_delay: [0.05, 0.3]
  - name: valve
    count: 50
    thing_name: "{{fleet}}-valve-{{i:03d}}"
    interval: 700ms
    qos: 1
    payload:
      open: {{profile: event, probability_per_minute: 30, duration: 2}}
    shadow:
      name: settings
      initial: {{position: 0}}
      apply_delta: true
      delta_delay: 0.1
"""


def fleet_cmd(tmp: Path, gw: GatewayProcess | None, *args: str) -> list[str]:
    base = [sys.executable, "-m", "gateway", "fleet", "run", *args, "--json", "--certs-dir", str(tmp / "fleet-certs")]
    if gw is not None:
        base += [
            "--target",
            f"mqtts://127.0.0.1:{gw.ports['mqtts']}",
            "--endpoint",
            f"http://127.0.0.1:{gw.ports['api']}",
            "--ca",
            str(gw.ca_file),
        ]
    return base


def start_fleet(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)  # type: ignore[no-any-return]


class Counter:
    def __init__(self, dev: Device) -> None:
        self.count = 0
        self.topics: set[str] = set()
        self.lock = threading.Lock()

        def on_message(client: object, userdata: object, msg: object) -> None:
            with self.lock:
                self.count += 1
                self.topics.add(msg.topic)  # type: ignore[attr-defined]

        dev.client.on_message = on_message


def test_fleet_of_200_delivers_every_qos1_message_and_converges_shadows(
    gateway: GatewayProcess, tmp_path: Path, unique: str
) -> None:
    name = f"f{unique[-8:]}".replace("_", "-")
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(FLEET_200.format(name=name))
    creds = gateway.provision(f"{name}-watcher", allow_all_policy())
    watcher = Device(gateway.ports["mqtts"], f"{name}-watcher", creds.cert, creds.key, creds.ca).connect()
    counter = Counter(watcher)
    assert watcher.subscribe(f"dt/{name}/#", qos=1) == [1]
    proc = start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "9"), tmp_path)
    try:
        data = client(gateway, "iot-data")
        iot = client(gateway, "iot")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # provisioning done and the initial reports are in
            try:
                data.get_thing_shadow(thingName=f"{name}-valve-049", shadowName="settings")
                break
            except data.exceptions.ResourceNotFoundException:
                time.sleep(0.3)
        assert iot.describe_thing(thingName=f"{name}-meter-007")["attributes"] == {"site": "site-3"}
        for i in range(150):
            data.update_thing_shadow(
                thingName=f"{name}-meter-{i:03d}", payload=json.dumps({"state": {"desired": {"level": i + 10}}})
            )
        for i in range(50):
            data.update_thing_shadow(
                thingName=f"{name}-valve-{i:03d}",
                shadowName="settings",
                payload=json.dumps({"state": {"desired": {"position": 100 - i}}}),
            )
        summary = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)
    watcher.close()
    assert summary["devices"] == 200
    assert summary["connects"] == 200
    assert summary["errors"] == {}
    assert summary["acked"] == summary["sent"] > 200 * 5
    assert counter.count == summary["acked"], "a QoS 1 message the broker acknowledged never reached the subscriber"
    assert len(counter.topics) == 200
    assert summary["deltas_applied"] == 200
    for i in range(150):
        doc = json.loads(data.get_thing_shadow(thingName=f"{name}-meter-{i:03d}")["payload"].read())
        assert doc["state"]["reported"] == {"mode": "eco", "level": i + 10}, doc
        assert "delta" not in doc["state"]
    for i in range(50):
        doc = json.loads(
            data.get_thing_shadow(thingName=f"{name}-valve-{i:03d}", shadowName="settings")["payload"].read()
        )
        assert doc["state"]["reported"] == {"position": 100 - i}, doc

    # Idempotent: a second run reuses things and cached certificates.
    again = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "5"), tmp_path))
    assert again["connects"] == 200 and again["errors"] == {}


FLEET_V5 = """
fleet: {name}
seed: 5
device_types:
  - name: meter
    count: 6
    thing_name: "{{fleet}}-meter-{{i}}"
    protocol: mqtt5
    user_properties: {{site: "site-{{i % 2}}", seq: "{{seq}}", thing: "{{thing_name}}"}}
    content_type: application/json
    session_expiry: 5m
    interval: 300ms
    qos: 1
    payload: {{seq: "{{seq}}", w: {{profile: random_walk, start: 5, step: 1, min: 0, max: 10}}}}
    shadow:
      initial: {{mode: eco}}
      delta_delay: 0.05
  - name: sensor
    count: 2
    thing_name: "{{fleet}}-sensor-{{i}}"
    interval: 300ms
    qos: 0
    protocol: mqtt5
    topic_aliases: false
"""


def test_an_mqtt5_fleet_delivers_its_user_properties(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    name = f"v{unique[-8:]}".replace("_", "-")
    fleet_file = tmp_path / "fleet5.yaml"
    fleet_file.write_text(FLEET_V5.format(name=name))
    checked = subprocess.run([sys.executable, "-m", "gateway", "fleet", "validate", str(fleet_file), "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(checked.stdout)["protocols"] == {"meter": "mqtt5", "sensor": "mqtt5"}
    creds = gateway.provision(f"{name}-watcher", allow_all_policy())
    watcher = V5Client(gateway.ports["mqtts"], f"{name}-watcher", creds.cert, creds.key, creds.ca).connect()
    assert watcher.subscribe(f"dt/{name}/#", qos=1) == [1]
    summary = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "4"), tmp_path))
    assert summary["devices"] == summary["connects"] == 8 and summary["errors"] == {}
    assert summary["acked"] > 6 * 3
    got = []
    with contextlib.suppress(queue.Empty):
        while True:
            got.append(watcher.expect(timeout=1.0))
    watcher.close()
    meters = [m for m in got if "/meter/" in m.topic]
    assert len(meters) == summary["acked"]  # every acknowledged QoS 1 message arrived, on its own topic
    for message in meters:
        thing = message.topic.split("/")[3]
        i = int(thing.rsplit("-", 1)[1])
        props = dict(message.properties.UserProperty)
        assert props == {"site": f"site-{i % 2}", "seq": str(json.loads(message.payload)["seq"]), "thing": thing}
        assert message.properties.ContentType == "application/json"
    sensors = [m for m in got if "/sensor/" in m.topic]
    assert sensors and all(not getattr(m.properties, "UserProperty", None) for m in sensors)


FAULTY = """
fleet: {name}
seed: 11
device_types:
  - name: flaky
    count: 12
    interval: 150ms
    qos: 1
    payload: {{n: "{{seq}}", t: "{{timestamp}}"}}
    faults:
      disconnect_per_hour: 2400
      reconnect_after: [0.2, 0.5]
      offline_windows: [{{start: 1, duration: 1}}]
      clock_skew: 30
      malformed_fraction: 0.1
      oversized_fraction: 0.02
"""


def test_faults_are_injected_and_devices_recover(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    name = f"x{unique[-8:]}".replace("_", "-")
    fleet_file = tmp_path / "faulty.yaml"
    fleet_file.write_text(FAULTY.format(name=name))
    summary = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "6"), tmp_path))
    faults = summary["faults"]
    assert isinstance(faults, dict)
    assert faults.get("malformed", 0) > 0 and faults.get("oversized", 0) > 0
    assert faults.get("disconnect", 0) > 0 and faults.get("offline_window", 0) >= 12
    # The gateway drops a connection that sends more than 128 KiB; the device reconnects and carries on.
    assert summary["disconnects"] >= faults["oversized"]
    assert summary["connects"] > 12 + faults["disconnect"]
    assert summary["acked"] > 100


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (make test installs it from apt)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_same_fleet_file_runs_against_mosquitto(mosquitto: int, tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        FLEET_200.format(name="mq").replace("count: 150", "count: 30").replace("count: 50", "count: 10")
    )
    watcher = Device(mosquitto, "mq-watcher").connect()
    counter = Counter(watcher)
    assert watcher.subscribe("dt/mq/#", qos=1) == [1]
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "fleet",
        "run",
        str(fleet_file),
        "--target",
        f"mqtt://127.0.0.1:{mosquitto}",
        "--no-provision",
        "--duration",
        "4",
        "--json",
    ]
    summary = finish(start_fleet(cmd, ROOT))
    time.sleep(0.3)
    watcher.close()
    assert summary["devices"] == 40 and summary["connects"] == 40
    assert summary["errors"] == {}
    assert summary["acked"] == summary["sent"] > 40
    assert counter.count == summary["acked"]
    # mosquitto has no shadow service: the initial reports went out and nothing answered them.
    assert summary["shadow_reports"] == 40 and summary["deltas_applied"] == 0


def test_processes_and_shards_split_the_fleet(gateway: GatewayProcess, tmp_path: Path) -> None:
    smoke = str(ROOT / "examples" / "fleets" / "smoke.yaml")
    metrics = tmp_path / "metrics.json"
    cmd = fleet_cmd(tmp_path, gateway, smoke, "--duration", "4", "--processes", "2", "--metrics-file", str(metrics))
    two = finish(start_fleet(cmd, tmp_path))
    assert two["devices"] == 10 and two["connects"] == 10 and two["errors"] == {}
    assert two["acked"] > 0
    assert json.loads(metrics.read_text())["acked"] == two["acked"]  # the last write is the final summary
    shard = finish(start_fleet(fleet_cmd(tmp_path, gateway, smoke, "--duration", "2", "--shard", "1/3"), tmp_path))
    assert shard["devices"] == 3 and shard["connects"] == 3  # ordinals 1, 4 and 7 of 10


def test_a_bad_fleet_file_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleet: x\ndevice_types:\n  - name: a\n    count: 2\n    interval: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "fleet", "validate", str(bad)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"{bad}:5: device_types[0].interval" in result.stderr
