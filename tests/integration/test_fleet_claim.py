"""`edgesim fleet run` with the identity modes a fleet file can name: `provisioning: {by: claim}` (each device boots
with the claim certificate, provisions itself over the MQTT API, stores its certificate and reconnects with it; a
second run reuses it), `by: jitp` and `by: jitr` (a fleet CA, certificates registered on first connect), and
`auth: custom-authorizer` / `auth: sigv4-websocket` (no client certificates)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GatewayProcess
from test_api_iot import client
from test_fleet import finish, fleet_cmd, start_fleet
from test_lambda import create, wait_for


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the module, with the ALPN port custom-authorizer devices connect to."""
    gw = GatewayProcess(tmp_path_factory.mktemp("fleetid"), extra_args=["--alpn-port", "0"]).start()
    yield gw
    gw.stop()


FLEET = """
fleet: {name}
provisioning:
  by: claim
  template: {name}-tpl
  parameters: {{ThingName: "{{thing_name}}", Serial: "sn-{{i}}"}}
device_types:
  - name: meter
    count: 12
    interval: 500ms
    qos: 1
    payload: {{seq: "{{seq}}"}}
  - name: gauge
    count: 8
    protocol: mqtt5
    interval: 500ms
    qos: 1
    payload: {{seq: "{{seq}}"}}
"""


def template(policy: str) -> dict[str, object]:
    return {
        "Parameters": {"ThingName": {"Type": "String"}, "Serial": {"Type": "String"},
                       "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Ref": "ThingName"}, "AttributePayload": {"serial": {"Ref": "Serial"}}}},
            "certificate": {"Type": "AWS::IoT::Certificate",
                            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy}},
        },
    }  # fmt: skip


def test_fleet_provisions_itself_by_claim(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    name = f"claim{unique}"
    iot = client(gateway, "iot")
    iot.create_provisioning_template(
        templateName=f"{name}-tpl", templateBody=json.dumps(template(f"edgesim-fleet-{name}")),
        provisioningRoleArn="arn:aws:iam::123456789012:role/p", enabled=True,
    )  # fmt: skip
    fleet_file = tmp_path / "claim.yaml"
    fleet_file.write_text(FLEET.format(name=name))
    summary = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "4"), tmp_path))
    assert summary["provisioned"] == 20 and summary["provisioning_failures"] == 0
    assert summary["connects"] >= 20 and summary["acked"] > 20
    assert iot.describe_thing(thingName=f"{name}-gauge-0003")["attributes"] == {"serial": "sn-3"}
    own = tmp_path / "fleet-certs" / name / f"{name}-meter-0000.cert.pem"
    assert own.exists() and (own.with_name(f"{name}-meter-0000.private.key").stat().st_mode & 0o777) == 0o600
    # The next boot uses the stored certificate: nothing is provisioned again.
    again = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "1.5"), tmp_path))
    assert again["provisioned"] == 0 and again["connects"] >= 20


def test_a_missing_template_is_one_clear_error(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    fleet_file = tmp_path / "claim.yaml"
    fleet_file.write_text(FLEET.format(name=f"none{unique}"))
    proc = start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "1"), tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "ResourceNotFoundException" in err and "Traceback" not in err


JITP_FLEET = """
fleet: {name}
provisioning: {{by: jitp, template: {name}-jitp}}
device_types:
  - name: probe
    count: 10
    interval: 500ms
    qos: 1
    payload: {{seq: "{{seq}}"}}
"""


def test_jitr_fleet_gets_in_once_a_rule_activates_it(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    """`by: jitr`: the first connects register the certificates PENDING_ACTIVATION; the documented rule + Lambda
    activates them, and the devices get in on a retry."""
    from test_jit_registration import ACTIVATOR
    from test_rules import rule

    name = f"jitr{unique}"
    arn = create(client(gateway, "lambda"), f"{name}-activate", ACTIVATOR, Timeout=30)["FunctionArn"]
    client(gateway, "iot").create_topic_rule(ruleName=f"{name}_activate", topicRulePayload=rule(
        "SELECT * FROM '$aws/events/certificates/registered/+'", {"lambda": {"functionArn": arn}}))  # fmt: skip
    fleet_file = tmp_path / "jitr.yaml"
    fleet_file.write_text(JITP_FLEET.format(name=name).replace(f"{{by: jitp, template: {name}-jitp}}", "{by: jitr}"))
    # The first connects register the certificates and are refused; a device backs off between attempts as firmware
    # does, so on a busy machine some may still be waiting when this short run ends.
    proc = start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "4"), tmp_path)
    out, _ = proc.communicate(timeout=90)
    first = json.loads(out)
    iot = client(gateway, "iot")
    ca_id = iot.list_ca_certificates()["certificates"][-1]["certificateId"]

    def all_active() -> bool:
        certs = iot.list_certificates_by_ca(caCertificateId=ca_id)["certificates"]
        return len(certs) == 10 and {c["status"] for c in certs} == {"ACTIVE"}

    wait_for(all_active, 30)  # the rule's Lambda activates every one
    again = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "1.5"), tmp_path))
    assert again["connects"] >= 10 and again["provisioned"] == 0  # not fresh any more
    assert first["provisioned"] + first["connect_errors"].get("closed before CONNACK", 0) >= 10


def test_fleet_provisions_itself_just_in_time(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    """`by: jitp`: the fleet's own CA is registered with a JITP template; each device's first connect provisions it."""
    name = f"jitp{unique}"
    iot = client(gateway, "iot")
    body = {
        "Parameters": {"AWS::IoT::Certificate::CommonName": {"Type": "String"},
                       "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing",
                      "Properties": {"ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}}},
            "certificate": {"Type": "AWS::IoT::Certificate",
                            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": f"edgesim-fleet-{name}"}},
        },
    }  # fmt: skip
    iot.create_provisioning_template(
        templateName=f"{name}-jitp", templateBody=json.dumps(body), type="JITP", enabled=True,
        provisioningRoleArn="arn:aws:iam::123456789012:role/p",
    )  # fmt: skip
    fleet_file = tmp_path / "jitp.yaml"
    fleet_file.write_text(JITP_FLEET.format(name=name))
    summary = finish(start_fleet(fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "4"), tmp_path))
    assert summary["provisioned"] == 10 and summary["acked"] > 10
    thing = iot.describe_thing(thingName=f"{name}-probe-0004")
    assert thing["thingName"] == f"{name}-probe-0004"
    principals = iot.list_thing_principals(thingName=f"{name}-probe-0004")["principals"]
    assert len(principals) == 1


AUTHORIZER = """
import base64, json

def handler(event, context):
    mqtt = event.get("protocolData", {}).get("mqtt", {})
    ok = base64.b64decode(mqtt.get("password", "")).decode() == "fleet-secret"
    arn = "arn:aws:iot:us-east-1:123456789012:"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn + "client/*"},
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": arn + "topic/dt/*"}]}
    return {"isAuthenticated": ok, "principalId": "fleet", "disconnectAfterInSeconds": 3600,
            "refreshAfterInSeconds": 600, "policyDocuments": [json.dumps(policy)]}
"""

AUTH_FLEET = """
fleet: {name}
auth: {{by: custom-authorizer, authorizer: {name}-auth, password: {password}}}
device_types:
  - name: tag
    count: 6
    interval: 500ms
    qos: 1
    payload: {{seq: "{{seq}}"}}
"""


def test_fleet_connects_through_a_custom_authorizer(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    """`auth: custom-authorizer`: no certificates; TLS with ALPN `mqtt` on the ALPN port, username and password."""
    name = f"ca{unique}"
    fn = create(client(gateway, "lambda"), f"{name}-fn", AUTHORIZER)
    client(gateway, "iot").create_authorizer(authorizerName=f"{name}-auth", authorizerFunctionArn=fn["FunctionArn"],
                                             signingDisabled=True, status="ACTIVE")  # fmt: skip
    fleet_file = tmp_path / "auth.yaml"
    fleet_file.write_text(AUTH_FLEET.format(name=name, password="fleet-secret"))
    alpn = ["--target", f"mqtts://127.0.0.1:{gateway.ports['alpn']}"]
    cmd = [*fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "3"), *alpn]
    summary = finish(start_fleet(cmd, tmp_path))
    assert summary["connects"] >= 6 and summary["acked"] > 6 and not summary["errors"]
    # A wrong password: the authorizer says no, and the run says why.
    fleet_file.write_text(AUTH_FLEET.format(name=name, password="wrong"))
    proc = start_fleet([*fleet_cmd(tmp_path, gateway, str(fleet_file), "--duration", "1.5"), *alpn], tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and json.loads(out)["connects"] == 0


KEY, SECRET = "AKIAEDGESIMFLEET0001", "fleet-secret-access-key"
SIGV4_FLEET = """
fleet: {name}
auth: {{by: sigv4-websocket, access_key_id: {key}, secret_access_key: {secret}}}
device_types:
  - name: web
    count: 5
    interval: 500ms
    qos: 1
    payload: {{seq: "{{seq}}"}}
"""


def test_fleet_connects_over_sigv4_websockets(tmp_path: Path, unique: str) -> None:
    """`auth: sigv4-websocket`: MQTT over a WebSocket at a presigned /mqtt URL; the access key's IoT policy governs."""
    (tmp_path / "gw").mkdir()
    gw = GatewayProcess(tmp_path / "gw", extra_args=["--require-sigv4", f"{KEY}:{SECRET}"]).start()
    try:
        iot = client(gw, "iot", KEY, SECRET)
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
        iot.create_policy(policyName="fleet-key", policyDocument=json.dumps(doc))
        iot.attach_policy(policyName="fleet-key", target=KEY)
        name = f"ws{unique}"
        fleet_file = tmp_path / "ws.yaml"
        wss = ["--target", f"mqtts://127.0.0.1:{gw.ports['wss']}"]
        fleet_file.write_text(SIGV4_FLEET.format(name=name, key=KEY, secret=SECRET))
        summary = finish(start_fleet([*fleet_cmd(tmp_path, gw, str(fleet_file), "--duration", "3"), *wss], tmp_path))
        assert summary["connects"] >= 5 and summary["acked"] > 5 and not summary["errors"]
    finally:
        gw.stop()
