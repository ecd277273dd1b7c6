"""The edgesim command as a user runs it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=tmp,
        text=True,
        capture_output=True,
        check=check,
        timeout=60,
        env={
            "EDGESIM_HOME": str(tmp / "data"),
            "EDGESIM_CERTS": str(tmp / "certs"),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
        },
    )


def test_certs_create_writes_files_with_private_key_0600(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
    )
    run(tmp_path, "policies", "create", "all", str(policy))
    out = json.loads(run(tmp_path, "certs", "create", "--thing", "cli-dev", "--policy", "all", "--json").stdout)
    assert len(out["certificateId"]) == 64
    key = tmp_path / "certs" / "cli-dev.private.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs" / "root-ca.key").stat().st_mode) == 0o600
    assert (tmp_path / "certs" / "cli-dev.cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    things = json.loads(run(tmp_path, "things", "list", "--json").stdout)["things"]
    assert [t["thingName"] for t in things] == ["cli-dev"]
    listed = json.loads(run(tmp_path, "certs", "list", "--json").stdout)["certificates"]
    assert [c["status"] for c in listed] == ["ACTIVE"]
    run(tmp_path, "certs", "revoke", out["certificateId"])
    listed = json.loads(run(tmp_path, "certs", "list", "--json").stdout)["certificates"]
    assert [c["status"] for c in listed] == ["REVOKED"]


def test_malformed_policy_error_names_the_json_path(tmp_path: Path) -> None:
    policy = tmp_path / "bad.json"
    policy.write_text(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Alow", "Action": "iot:*", "Resource": "*"}]})
    )
    result = run(tmp_path, "policies", "create", "bad", str(policy), check=False)
    assert result.returncode == 1
    assert "Statement[0].Effect" in result.stderr + result.stdout


def test_invalid_thing_name_gets_aws_validation_message(tmp_path: Path) -> None:
    result = run(tmp_path, "things", "create", "bad name!", check=False)
    assert result.returncode == 1
    assert "failed to satisfy constraint" in result.stderr + result.stdout


def test_every_command_has_help(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["up", "--help"],
        ["demo", "--help"],
        ["certs", "create", "--help"],
        ["things", "list", "--help"],
        ["policies", "attach", "--help"],
    ):
        assert "Usage" in run(tmp_path, *args).stdout


def test_demo_runs_and_stops_by_itself(tmp_path: Path) -> None:
    result = run(tmp_path, "demo", "--duration", "3", "--devices", "3", "--mqtts-port", "0", "--api-port", "0")
    assert "devices connected" in result.stdout
    assert "3 / 3" in result.stdout
