"""The edgesim command as a user runs it, against a running gateway."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from conftest import GatewayProcess
from mqtt_helpers import Device

ROOT = Path(__file__).resolve().parents[2]


def run(
    tmp: Path, *args: str, gw: GatewayProcess | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        "EDGESIM_HOME": str(tmp / "data"),
        "EDGESIM_CERTS": str(tmp / "certs"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }
    if gw is not None:
        env["EDGESIM_ENDPOINT"] = f"http://127.0.0.1:{gw.ports['api']}"
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=tmp,
        text=True,
        capture_output=True,
        check=check,
        timeout=60,
        env=env,
    )


def test_certs_create_writes_files_and_the_device_connects(
    gateway: GatewayProcess, tmp_path: Path, unique: str
) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
    )
    run(tmp_path, "policies", "create", f"all-{unique}", str(policy), gw=gateway)
    out = json.loads(
        run(
            tmp_path,
            "certs",
            "create",
            "--thing",
            f"cli-{unique}",
            "--policy",
            f"all-{unique}",
            "--out",
            str(tmp_path / "dev"),
            "--json",
            gw=gateway,
        ).stdout
    )
    assert len(out["certificateId"]) == 64
    key = tmp_path / "dev" / f"cli-{unique}.private.key"
    cert = tmp_path / "dev" / f"cli-{unique}.cert.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    device = Device(gateway.ports["mqtts"], f"cli-{unique}", cert, key, gateway.ca_file).connect()
    things = json.loads(run(tmp_path, "things", "list", "--json", gw=gateway).stdout)["things"]
    assert f"cli-{unique}" in [t["thingName"] for t in things]
    run(tmp_path, "certs", "revoke", out["certificateId"], gw=gateway)
    assert device.disconnected.wait(5)
    device.client.loop_stop()
    listed = json.loads(run(tmp_path, "certs", "list", "--json", gw=gateway).stdout)["certificates"]
    assert {c["certificateId"]: c["status"] for c in listed}[out["certificateId"]] == "REVOKED"


def test_shadow_commands(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    thing = f"sh-{unique}"
    accepted = json.loads(
        run(tmp_path, "shadow", "update", thing, '{"state":{"desired":{"on":true}}}', gw=gateway).stdout
    )
    assert accepted["version"] == 1
    got = json.loads(run(tmp_path, "shadow", "get", thing, gw=gateway).stdout)
    assert got["state"]["delta"] == {"on": True}
    run(tmp_path, "shadow", "update", thing, '{"state":{"reported":{"x":1}}}', "--name", "cfg", gw=gateway)
    assert json.loads(run(tmp_path, "shadow", "list", thing, "--json", gw=gateway).stdout)["results"] == ["cfg"]
    assert json.loads(run(tmp_path, "shadow", "delete", thing, gw=gateway).stdout)["version"] == 1
    missing = run(tmp_path, "shadow", "get", thing, gw=gateway, check=False)
    assert missing.returncode == 1 and "ResourceNotFoundException" in missing.stderr


def test_malformed_policy_error_names_the_json_path(gateway: GatewayProcess, tmp_path: Path) -> None:
    policy = tmp_path / "bad.json"
    policy.write_text(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Alow", "Action": "iot:*", "Resource": "*"}]})
    )
    result = run(tmp_path, "policies", "create", "bad", str(policy), gw=gateway, check=False)
    assert result.returncode == 1
    assert "MalformedPolicyException" in result.stderr and "Statement[0].Effect" in result.stderr


def test_invalid_thing_name_gets_aws_validation_message(gateway: GatewayProcess, tmp_path: Path) -> None:
    result = run(tmp_path, "things", "create", "bad:name!", gw=gateway, check=False)
    assert result.returncode == 1
    assert "failed to satisfy constraint" in result.stderr


def test_no_gateway_running_is_a_clear_error(tmp_path: Path) -> None:
    result = run(tmp_path, "things", "list", "--endpoint", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    assert "no gateway answers" in result.stderr


def test_every_command_has_help(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["up", "--help"],
        ["demo", "--help"],
        ["certs", "create", "--help"],
        ["things", "list", "--help"],
        ["policies", "attach", "--help"],
        ["shadow", "update", "--help"],
    ):
        assert "Usage" in run(tmp_path, *args).stdout


def test_demo_runs_a_fleet_through_rules_into_sinks_and_stops_by_itself(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        *("demo", "--fleet", str(EXAMPLES / "fleets" / "smoke.yaml"), "--rules", str(EXAMPLES / "rules")),
        *("--duration", "8", "--mqtts-port", "0", "--api-port", "0", "--json"),
    )
    out = json.loads(result.stdout)
    fleet, gateway = out["fleet"], out["gateway"]
    assert fleet["devices"] == 10 and fleet["connects"] == 10 and fleet["errors"] == {}
    assert fleet["acked"] > 50
    assert set(gateway["rules"]) == {"all_to_kinesis", "hot_to_sqs", "low_battery"}
    assert gateway["stream_records"] == fleet["sent"]  # every telemetry message, QoS 0 and 1, is in the stream
    assert gateway["rules"]["all_to_kinesis"]["action_failure"] == 0
    assert gateway["queue_messages"] > 0  # the smoke sensors run hot
    assert "fleet" in result.stderr  # the live view went to stderr, leaving stdout to the JSON


EXAMPLES = ROOT / "examples"


def test_demo_with_an_edge_core_runs_its_devices_function_and_bridge(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        *("demo", "--edge", "--fleet", str(EXAMPLES / "fleets" / "smoke.yaml"), "--rules", str(EXAMPLES / "rules")),
        *("--duration", "12", "--mqtts-port", "0", "--api-port", "0", "--json"),
    )
    edge = json.loads(result.stdout)["edge"]
    devices, core = edge["devices"], edge["core"]
    assert devices["devices"] == 5 and devices["errors"] == {} and devices["acked"] == devices["sent"] > 10
    assert core["cloud"]["online"] is True
    assert core["spool"]["delivered"] > 10 and core["spool"]["rejected"] == 0  # bridged to the gateway
    assert core["components"]["thermostat"]["invocations"] > 10 and core["components"]["thermostat"]["failed"] == 0
    assert core["fleet_status"]["sequenceNumber"] >= 1  # health reports reach the gateway (its edge page)


def test_rules_test_explains_a_rule_offline(tmp_path: Path) -> None:
    out = json.loads(
        run(
            tmp_path,
            "rules",
            "test",
            str(EXAMPLES / "rules" / "hot_to_sqs.sql"),
            "--topic",
            "dt/demo/thermostat/s1/telemetry",
            "--payload",
            '{"temperature": 31, "battery": 80}',
            "--timestamp",
            "5",
            "--json",
        ).stdout
    )
    assert (out["topicMatches"], out["whereMatched"]) == (True, True)
    assert out["output"] == {"temperature": 31, "device": "s1", "seen_at": 5}
    assert out["actions"][0]["sqs"]["queueUrl"].endswith("/hot-readings")
    assert out["actions"][1]["republish"]["topic"] == "alerts/s1"
    cold = json.loads(
        run(
            tmp_path,
            "rules",
            "test",
            str(EXAMPLES / "rules" / "hot_to_sqs.sql"),
            "--topic",
            "dt/demo/thermostat/s1/telemetry",
            "--payload",
            '{"temperature": 3}',
            "--json",
        ).stdout
    )
    assert (cold["whereMatched"], cold["actions"]) == (False, [])


def test_rules_check_points_at_the_error(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "good.sql").write_text("SELECT * FROM 'a/b'")
    (folder / "bad.sql").write_text('SELECT temp\nFROM "a/b"')
    result = run(tmp_path, "rules", "check", str(folder), check=False)
    assert result.returncode == 1
    assert "line 2, column 6" in result.stdout and "single-quoted" in result.stdout
    assert '  FROM "a/b"\n       ^' in result.stdout
    report = json.loads(run(tmp_path, "rules", "check", str(folder), "--json", check=False).stdout)["rules"]
    assert {r["file"].split("/")[-1]: r["ok"] for r in report} == {"bad.sql": False, "good.sql": True}


def test_rules_examples_are_valid(tmp_path: Path) -> None:
    assert run(tmp_path, "rules", "check", str(EXAMPLES / "rules")).returncode == 0


def test_certs_create_rsa_keeps_the_key_local_and_connects(
    gateway: GatewayProcess, tmp_path: Path, unique: str
) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
    )
    run(tmp_path, "policies", "create", f"rsa-{unique}", str(policy), gw=gateway)
    run(
        tmp_path,
        "certs",
        "create",
        "--thing",
        f"rsa-{unique}",
        "--policy",
        f"rsa-{unique}",
        "--key-type",
        "rsa",
        "--out",
        str(tmp_path / "dev"),
        gw=gateway,
    )
    key = tmp_path / "dev" / f"rsa-{unique}.private.key"
    assert "BEGIN PRIVATE KEY" in key.read_text() and stat.S_IMODE(key.stat().st_mode) == 0o600
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert load_pem_private_key(key.read_bytes(), None).key_size == 2048  # type: ignore[union-attr]
    device = Device(
        gateway.ports["mqtts"], f"rsa-{unique}", tmp_path / "dev" / f"rsa-{unique}.cert.pem", key, gateway.ca_file
    ).connect()
    device.close()


def test_compose_file_is_valid(tmp_path: Path) -> None:
    """compose.yaml checked without an engine (make test installs no Docker): the fields it uses, their shapes, and
    every `edgesim` command line parsed by the CLI itself, so a renamed flag fails here."""
    from compose_check import compose_problems, dockerfile_problems, load_compose

    compose = load_compose(ROOT / "compose.yaml")
    assert compose_problems(compose, ROOT) == []
    assert dockerfile_problems(ROOT) == []
    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert {"gateway", "fleet", "edge", "edge-devices"} <= default
    scale = {name for name, service in services.items() if "scale" in service.get("profiles", [])}
    assert scale, "the scale profile (design.md §5) has no services"
    assert any("--sink-backend" in services[name].get("command", []) for name in scale)
    for name, service in services.items():  # every published port stays on loopback (short or long syntax)
        for port in service.get("ports", []):
            assert (port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1", name
    # Each fleet file the stack runs is one the simulator accepts.
    for name in ("fleet", "edge-devices"):
        fleet_file = next(arg for arg in services[name]["command"] if arg.endswith(".yaml"))
        local = ROOT / fleet_file.removeprefix("/app/")
        result = run(tmp_path, "fleet", "validate", str(local), check=False)
        assert result.returncode == 0, result.stderr


def test_compose_check_catches_mistakes() -> None:
    from compose_check import compose_problems, load_compose

    compose = load_compose(ROOT / "compose.yaml")
    compose["services"]["fleet"]["command"] = ["edgesim", "fleet", "run", "x.yaml", "--no-such-flag"]
    compose["services"]["edge"]["depends_on"] = {"nobody": {"condition": "service_healthy"}}
    compose["services"]["gateway"]["volumes"] = ["undeclared:/data"]
    compose["services"]["gateway"]["restart_policy"] = "always"
    problems = "\n".join(compose_problems(compose, ROOT))
    for expected in ("--no-such-flag", "nobody", "undeclared", "restart_policy"):
        assert expected in problems, problems


def test_streams_read_resumes_from_group_checkpoints(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    from test_api_iot import client

    kinesis = client(gateway, "kinesis")
    name = f"cli-{unique}"
    run(tmp_path, "streams", "create", name, "--shards", "2", gw=gateway)
    for i in range(6):
        kinesis.put_record(StreamName=name, Data=json.dumps({"i": i}).encode(), PartitionKey=f"k{i}")
    first = run(tmp_path, "streams", "read", name, "--group", "g1", "--json", gw=gateway).stdout.splitlines()
    assert sorted(json.loads(line)["data"] for line in first) == sorted(json.dumps({"i": i}) for i in range(6))
    kinesis.put_record(StreamName=name, Data=b"seventh", PartitionKey="k0")
    again = run(tmp_path, "streams", "read", name, "--group", "g1", "--json", gw=gateway).stdout.splitlines()
    assert [json.loads(line)["data"] for line in again] == ["seventh"]
    other = run(tmp_path, "streams", "read", name, "--group", "g2", "--json", gw=gateway).stdout.splitlines()
    assert len(other) == 7


def test_malformed_name_value_options_name_the_option(tmp_path: Path) -> None:
    result = run(
        tmp_path, "things", "create", "t1", "--attr", "novalue", "--endpoint", "http://127.0.0.1:9", check=False
    )
    assert result.returncode == 2
    assert "--attribute takes NAME=VALUE" in result.stderr and "novalue" in result.stderr
