"""The README's tour, in the README's order, from a fresh folder and data dir: each command is checked to be the one
the README prints (ports aside: the test's gateway listens on free ports), and must work as the README says."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_errors import _invoke

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FREE_PORTS = ["--mqtts-port", "0", "--api-port", "0", "--wss-port", "-1", "--https-port", "-1"]


def _in_readme(command: str) -> None:
    flat = " ".join(README.replace("\\\n", " ").split())
    assert " ".join(command.split()) in flat, f"the README no longer says: {command}"


def _heredoc(name: str) -> str:
    match = re.search(rf"cat > {re.escape(name)} <<'JSON'\n(.*?)\nJSON\n", README, re.S)
    assert match, f"the README's {name} is gone"
    return match.group(1)


class Gateway:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, *args: str) -> None:
        ports_file = self.folder / "ports.json"
        ports_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESIM_")}
        with (self.folder / "up.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "up", *args, *FREE_PORTS, "--ports-file", str(ports_file)],
                cwd=self.folder,
                env={**env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            assert self.proc.poll() is None, (self.folder / "up.log").read_text()
            assert time.monotonic() < deadline, "edgesim up did not come up"
            time.sleep(0.05)
        self.ports = json.loads(ports_file.read_text())
        os.environ["EDGESIM_ENDPOINT"] = f"http://127.0.0.1:{self.ports['api']}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[tuple[Path, Gateway]]:
    saved, cwd = dict(os.environ), Path.cwd()
    for key in [k for k in os.environ if k.startswith("EDGESIM_")]:
        del os.environ[key]
    os.chdir(tmp_path)
    gateway = Gateway(tmp_path)
    try:
        yield tmp_path, gateway
    finally:
        gateway.stop()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


def edgesim(command: str, *extra: str, expect: int = 0) -> str:
    """Run one README command (in this process, through the real entry point) and return its stdout."""
    _in_readme(command)
    argv = [*shlex.split(command)[1:], *extra]
    code, out, err = _invoke(argv)
    assert code == expect, f"{command} -> exit {code}\n{out}\n{err}"
    assert "Traceback" not in err
    return out


def _mosquitto(tool: str, port: int, thing: str, *args: str) -> list[str]:
    return [
        tool, "-h", "127.0.0.1", "-p", str(port), "--cafile", "certs/root-ca.pem", "--cert", f"certs/{thing}.cert.pem",
        "--key", f"certs/{thing}.private.key", "-i", thing, *args,
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_the_readme_tour_from_a_clean_start(tour: tuple[Path, Gateway]) -> None:
    folder, gateway = tour
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("make test installs the mosquitto clients")
    _invoke(["examples"])  # a checkout has ./examples; outside one, the README says to copy them first
    _in_readme("edgesim examples")

    _in_readme("edgesim up ")
    gateway.start()
    assert (folder / "certs" / "root-ca.pem").exists()

    (folder / "device-policy.json").write_text(_heredoc("device-policy.json"))
    edgesim("edgesim policies create sensor-policy device-policy.json")
    edgesim("edgesim certs create --thing sensor-1 --policy sensor-policy")
    assert (folder / "certs" / "sensor-1.private.key").stat().st_mode & 0o777 == 0o600
    edgesim("edgesim certs create --thing sensor-1 --policy sensor-policy", expect=1)  # refuses to lose the key
    (folder / "dashboard-policy.json").write_text(_heredoc("dashboard-policy.json"))
    edgesim("edgesim policies create dashboard-policy dashboard-policy.json")
    edgesim("edgesim certs create --thing dashboard --policy dashboard-policy")

    mqtts = gateway.ports["mqtts"]
    _in_readme("--cert certs/dashboard.cert.pem --key certs/dashboard.private.key -i dashboard -t 'sensors/#' -v")
    sub = subprocess.Popen(
        _mosquitto("mosquitto_sub", mqtts, "dashboard", "-t", "sensors/#", "-v", "-C", "1", "-W", "20"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while sub.poll() is None and time.monotonic() < deadline:  # until the subscription is in place
            _in_readme("-i sensor-1 -t sensors/sensor-1/temp -m 21")
            subprocess.run(
                _mosquitto("mosquitto_pub", mqtts, "sensor-1", "-t", "sensors/sensor-1/temp", "-m", "21"),
                check=True, timeout=20,
            )  # fmt: skip
            time.sleep(0.2)
        out, _ = sub.communicate(timeout=20)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert out.strip() == "sensors/sensor-1/temp 21"

    _in_readme("-i sensor-1 -t sensors/sensor-2/temp -m 21 -q 1")
    denied = subprocess.run(
        _mosquitto("mosquitto_pub", mqtts, "sensor-1", "-t", "sensors/sensor-2/temp", "-m", "21", "-q", "1"),
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "Error: The connection was lost." in denied.stderr

    listed = edgesim("edgesim certs list")
    assert "sensor-1" in listed and "dashboard" in listed
    sensor_id = next(
        c["certificateId"] for c in json.loads(_invoke(["certs", "list", "--json"])[1])["certificates"]
        if c["things"] == ["sensor-1"]
    )  # fmt: skip
    _in_readme("edgesim certs revoke <id>")
    edgesim("edgesim certs revoke", sensor_id[:12])
    assert json.loads(_invoke(["certs", "describe", sensor_id])[1])["status"] == "REVOKED"

    edgesim("""edgesim shadow update sensor-1 '{"state":{"desired":{"fan":"on"}}}'""")
    assert json.loads(edgesim("edgesim shadow get sensor-1"))["state"]["desired"] == {"fan": "on"}

    hot = edgesim(
        "edgesim rules test examples/rules/hot_to_sqs.sql --topic dt/demo/thermostat/demo-thermo-0009/telemetry",
        "--payload", '{"temperature": 35.5, "battery": 12}', "--json",
    )  # fmt: skip
    assert json.loads(hot)["whereMatched"] is True
    edgesim("edgesim rules check examples/rules")

    gateway.stop()
    _in_readme("edgesim up --rules examples/rules --create-targets")
    gateway.start("--rules", "examples/rules", "--create-targets")
    edgesim("edgesim streams create telemetry --shards 2")  # exists already: left as it is, exit 0
    edgesim("edgesim rules create examples/rules/all_to_kinesis.json")
    import boto3

    data = boto3.client(
        "iot-data", endpoint_url=os.environ["EDGESIM_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )  # fmt: skip
    reading = {"temperature": 35.5, "battery": 19}  # hot (SQS), low battery (Lambda), and telemetry (Kinesis)
    data.publish(topic="dt/demo/thermostat/demo-thermo-0009/telemetry", qos=1, payload=json.dumps(reading).encode())
    records = edgesim("edgesim streams read telemetry --group dashboards", "--json").splitlines()
    assert json.loads(json.loads(records[0])["data"])["temperature"] == 35.5
    deadline = time.monotonic() + 20
    while True:
        stats = json.loads(edgesim("edgesim rules stats", "--json"))
        if all(stats[r]["action_success"] >= 1 for r in ("all_to_kinesis", "hot_to_sqs", "low_battery")):
            break
        assert time.monotonic() < deadline, stats
        assert all(m["action_failure"] == 0 for m in stats.values()), stats
        time.sleep(0.2)

    edgesim("edgesim fleet validate examples/fleets/demo.yaml")
    summary = edgesim(
        "edgesim fleet run examples/fleets/smoke.yaml --target",
        f"mqtts://127.0.0.1:{gateway.ports['mqtts']}", "--duration", "2", "--json",
    )  # fmt: skip
    assert json.loads(summary)["acked"] > 0
