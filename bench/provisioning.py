"""Fleet provisioning by claim at scale: N devices (1,000 by default) of the fleet simulator each connect with the
fleet's claim certificate, run CreateKeysAndCertificate + RegisterThing over MQTT against the gateway, store the
certificate they got and reconnect with it.

usage: python bench/provisioning.py [--devices 1000] [--connect-rate 0] [--json out.json] [--keep]

The gateway (`python -m gateway up`) and the simulator (`python -m gateway fleet run`) run as separate processes on
127.0.0.1 ephemeral ports. Reported: total time from the simulator's start until every device is provisioned (its
--metrics-file, polled every 0.1 s), the rate in devices/s, failed attempts, and the time until all are connected
with their own certificates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from broker import HOST, Edgesim, prepare
from common import stop_and_clean
from rich.console import Console

FLEET = """
fleet: bench
provisioning: {by: claim, template: bench-claim}
device_types:
  - name: sensor
    count: %d
    interval: 30s
    qos: 1
    payload: {seq: "{seq}"}
"""

TEMPLATE = {
    "Parameters": {"ThingName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
    "Resources": {
        "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
        "certificate": {"Type": "AWS::IoT::Certificate",
                        "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "edgesim-fleet-bench"}},
    },
}  # fmt: skip


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def run(devices: int, connect_rate: float, home: Path, console: Console) -> dict[str, Any]:
    mat = prepare(home)
    gw = Edgesim(mat)
    gw.start()
    try:
        iot = boto3.client(
            "iot", endpoint_url=f"http://{HOST}:{gw.api_port}", region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 3}),
        )  # fmt: skip
        iot.create_provisioning_template(
            templateName="bench-claim", templateBody=json.dumps(TEMPLATE), enabled=True,
            provisioningRoleArn="arn:aws:iam::123456789012:role/bench",
        )  # fmt: skip
        fleet = home / "fleet.yaml"
        fleet.write_text(FLEET % devices)
        metrics = home / "metrics.json"
        cmd = [
            sys.executable, "-m", "gateway", "fleet", "run", str(fleet), "--json",
            "--target", f"mqtts://{HOST}:{gw.port}", "--endpoint", f"http://{HOST}:{gw.api_port}",
            "--ca", str(mat.ca), "--certs-dir", str(home / "fleet-certs"), "--connect-rate", str(connect_rate),
            "--metrics-file", str(metrics), "--duration", "600",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        provisioned_at = connected_at = first_at = None
        data: dict[str, Any] = {}
        try:
            while time.monotonic() - started < 600 and proc.poll() is None:
                data = _read(metrics)
                now = time.monotonic() - started
                if os.environ.get("BENCH_TRACE"):
                    console.log(round(now, 2), data.get("provisioned"), data.get("connected"), data.get("errors"))
                if first_at is None and data.get("provisioned", 0) > 0:
                    first_at = now
                if provisioned_at is None and data.get("provisioned", 0) >= devices:
                    provisioned_at = now
                if provisioned_at is not None and data.get("connected", 0) >= devices:
                    connected_at = now
                    break
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
        result = {
            "devices": devices,
            "connect_rate": connect_rate,
            "provisioned": data.get("provisioned", 0),
            "failed_attempts": data.get("provisioning_failures", 0),
            "all_provisioned_s": None if provisioned_at is None else round(provisioned_at, 2),
            "devices_per_s": None if provisioned_at is None else round(devices / provisioned_at, 1),
            # The simulator's own start-up (imports, the claim certificate and policies) left out:
            "first_to_last_s": None
            if provisioned_at is None or first_at is None
            else round(provisioned_at - first_at, 2),
            "devices_per_s_while_provisioning": None if provisioned_at is None or first_at is None
            else round(devices / max(provisioned_at - first_at, 0.1), 1),
            "all_connected_with_own_cert_s": None if connected_at is None else round(connected_at, 2),
        }
        console.print(result)
        return result
    finally:
        stop_and_clean(gw, home, keep=False, console=console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connect-rate", type=float, default=0, help="claim connects/s (0: no limit)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    console = Console(stderr=True)
    home = Path(tempfile.mkdtemp(prefix="edgesim-prov-bench-"))
    result = run(args.devices, args.connect_rate, home, console)
    if args.keep:
        console.log(f"kept {home}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
