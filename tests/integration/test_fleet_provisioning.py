"""Fleet provisioning by claim: boto3 for the templates, the AWS IoT Device SDK v2's identity clients for the device
side as its fleetprovisioning samples use them (CreateKeysAndCertificate or CreateCertificateFromCsr, then
RegisterThing) over MQTT 3.1.1 and MQTT 5, and the device reconnecting with the certificate it got."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import Creds, GatewayProcess

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/provisioning"
TEMPLATE = {
    "Parameters": {"SerialNumber": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Fn::Join": ["", ["dev-", {"Ref": "SerialNumber"}]]},
                "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
            },
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
        },
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "device-policy"}},
    },
    "DeviceConfiguration": {"fw": "1.0"},
}


def claim_policy(template: str) -> dict[str, Any]:
    arn = f"arn:aws:iot:us-east-1:{ACCOUNT}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{arn}:topic/$aws/certificates/create/*", f"{arn}:topic/$aws/provisioning-templates/*",
                             f"{arn}:topic/$aws/certificates/create-from-csr/*",
                             f"{arn}:topic/$aws/provisioning-templates/{template}/provision/*"],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn}:topicfilter/$aws/certificates/create/*",
                             f"{arn}:topicfilter/$aws/provisioning-templates/*",
                             f"{arn}:topicfilter/$aws/certificates/create-from-csr/*",
                             f"{arn}:topicfilter/$aws/provisioning-templates/{template}/provision/*"],
            },
        ],
    }  # fmt: skip


def client(gw: GatewayProcess, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=f"http://127.0.0.1:{gw.ports['api']}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=BotoConfig(retries={"max_attempts": 1}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("fleetprov")).start()
    iot = client(gateway, "iot")
    iot.create_policy(policyName="device-policy", policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))  # fmt: skip
    iot.create_provisioning_template(
        templateName="fleet", templateBody=json.dumps(TEMPLATE), provisioningRoleArn=ROLE, enabled=True
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def claim(gw: GatewayProcess) -> Creds:
    return gw.provision("claim-holder", claim_policy("fleet"))


def test_template_control_plane(gw: GatewayProcess) -> None:
    iot = client(gw, "iot")
    name = f"t-{uuid.uuid4().hex[:8]}"
    made = iot.create_provisioning_template(
        templateName=name, templateBody=json.dumps(TEMPLATE), provisioningRoleArn=ROLE
    )
    assert made["templateArn"] == f"arn:aws:iot:us-east-1:{ACCOUNT}:provisioningtemplate/{name}"
    assert made["defaultVersionId"] == 1
    described = iot.describe_provisioning_template(templateName=name)
    assert described["enabled"] is False and described["type"] == "FLEET_PROVISIONING"
    assert json.loads(described["templateBody"]) == TEMPLATE
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_provisioning_template(templateName=name, templateBody="{}", provisioningRoleArn=ROLE)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_provisioning_template(templateName="bad", templateBody="{nope", provisioningRoleArn=ROLE)
    v2 = iot.create_provisioning_template_version(templateName=name, templateBody="{}", setAsDefault=False)
    assert v2["versionId"] == 2 and v2["isDefaultVersion"] is False
    versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
    assert [(v["versionId"], v["isDefaultVersion"]) for v in versions] == [(1, True), (2, False)]
    iot.update_provisioning_template(templateName=name, defaultVersionId=2, enabled=True, description="d")
    assert iot.describe_provisioning_template_version(templateName=name, versionId=2)["isDefaultVersion"] is True
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_provisioning_template_version(templateName=name, versionId=2)
    iot.delete_provisioning_template_version(templateName=name, versionId=1)
    for _ in range(4):
        iot.create_provisioning_template_version(templateName=name, templateBody="{}")
    with pytest.raises(iot.exceptions.VersionsLimitExceededException):
        iot.create_provisioning_template_version(templateName=name, templateBody="{}")
    assert name in [t["templateName"] for t in iot.list_provisioning_templates()["templates"]]
    iot.delete_provisioning_template(templateName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_provisioning_template(templateName=name)


class Mqtt3Identity:
    """The SDK v2 fleetprovisioning sample's flow on an MQTT 3.1.1 connection (IotIdentityClient)."""

    def __init__(self, gw: GatewayProcess, creds: Creds, client_id: str) -> None:
        from awsiot import iotidentity, mqtt_connection_builder

        self.conn = mqtt_connection_builder.mtls_from_path(
            endpoint="127.0.0.1", port=gw.ports["mqtts"], cert_filepath=str(creds.cert),
            pri_key_filepath=str(creds.key), ca_filepath=str(creds.ca), client_id=client_id, clean_session=False,
            keep_alive_secs=30,
        )  # fmt: skip
        self.conn.connect().result(10)
        self.identity = iotidentity.IotIdentityClient(self.conn)

    def _call(self, subscribe: Any, publish: Any, sub_request: Any, request: Any) -> tuple[str, Any]:
        from awscrt import mqtt

        answer: Future[tuple[str, Any]] = Future()
        for kind, fn in (("accepted", subscribe[0]), ("rejected", subscribe[1])):
            fut, _ = fn(sub_request, mqtt.QoS.AT_LEAST_ONCE,
                        lambda resp, kind=kind: answer.done() or answer.set_result((kind, resp)))  # fmt: skip
            fut.result(10)
        publish(request, mqtt.QoS.AT_LEAST_ONCE).result(10)
        return answer.result(10)

    def create_keys(self) -> tuple[str, Any]:
        from awsiot import iotidentity

        i = self.identity
        return self._call(
            (i.subscribe_to_create_keys_and_certificate_accepted, i.subscribe_to_create_keys_and_certificate_rejected),
            i.publish_create_keys_and_certificate,
            iotidentity.CreateKeysAndCertificateSubscriptionRequest(),
            iotidentity.CreateKeysAndCertificateRequest(),
        )

    def register(self, template: str, token: str, params: dict[str, str]) -> tuple[str, Any]:
        from awsiot import iotidentity

        i = self.identity
        return self._call(
            (i.subscribe_to_register_thing_accepted, i.subscribe_to_register_thing_rejected),
            i.publish_register_thing,
            iotidentity.RegisterThingSubscriptionRequest(template_name=template),
            iotidentity.RegisterThingRequest(template_name=template, certificate_ownership_token=token,
                                             parameters=params),
        )  # fmt: skip

    def close(self) -> None:
        self.conn.disconnect().result(10)


def _write(home: Path, name: str, pem: str, key: str) -> tuple[Path, Path]:
    cert, key_path = home / f"{name}.cert.pem", home / f"{name}.private.key"
    cert.write_text(pem)
    key_path.write_text(key)
    return cert, key_path


def _connects_with(gw: GatewayProcess, cert: Path, key: Path, client_id: str) -> None:
    from awsiot import mqtt_connection_builder

    conn = mqtt_connection_builder.mtls_from_path(
        endpoint="127.0.0.1", port=gw.ports["mqtts"], cert_filepath=str(cert), pri_key_filepath=str(key),
        ca_filepath=str(gw.ca_file), client_id=client_id, clean_session=True, keep_alive_secs=30,
    )  # fmt: skip
    conn.connect().result(10)
    conn.disconnect().result(10)


def test_sdk_mqtt311_create_keys_then_register_thing(gw: GatewayProcess, claim: Creds, tmp_path: Path) -> None:
    dev = Mqtt3Identity(gw, claim, f"claim-{uuid.uuid4().hex[:6]}")
    try:
        kind, keys = dev.create_keys()
        assert kind == "accepted", keys
        assert keys.certificate_id and keys.private_key.startswith("-----BEGIN") and keys.certificate_ownership_token
        kind, err = dev.register("fleet", "not-a-token", {"SerialNumber": "x"})
        assert kind == "rejected"
        assert (err.status_code, err.error_code) == (400, "InvalidCertificateOwnershipToken")
        kind, err = dev.register("fleet", keys.certificate_ownership_token, {})
        assert kind == "rejected"
        assert (err.error_code, err.error_message) == (
            "InvalidParameters",
            "Cannot resolve reference value: SerialNumber",
        )
        iot = client(gw, "iot")
        iot.create_provisioning_template(templateName="off", templateBody="{}", provisioningRoleArn=ROLE)
        kind, err = dev.register("off", keys.certificate_ownership_token, {})
        assert (kind, err.error_code) == ("rejected", "InvalidRequest")  # not enabled
        kind, err = dev.register("nothere", keys.certificate_ownership_token, {})
        assert (kind, err.status_code, err.error_code) == ("rejected", 404, "ResourceNotFound")
        kind, done = dev.register("fleet", keys.certificate_ownership_token, {"SerialNumber": "311"})
        assert kind == "accepted", done
        assert done.thing_name == "dev-311" and done.device_configuration == {"fw": "1.0"}
    finally:
        dev.close()
    iot = client(gw, "iot")
    assert iot.describe_thing(thingName="dev-311")["attributes"] == {"serial": "311"}
    assert iot.describe_certificate(certificateId=keys.certificate_id)["certificateDescription"]["status"] == "ACTIVE"
    cert, key = _write(tmp_path, "dev-311", keys.certificate_pem, keys.private_key)
    _connects_with(gw, cert, key, "dev-311")  # the device's own certificate now gets it in


def test_sdk_mqtt5_csr_then_register_thing(gw: GatewayProcess, claim: Creds, tmp_path: Path) -> None:
    from awscrt import mqtt5, mqtt_request_response
    from awsiot import iotidentity, mqtt5_client_builder
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    connected: Future[Any] = Future()
    stopped: Future[None] = Future()
    mq = mqtt5_client_builder.mtls_from_path(
        endpoint="127.0.0.1", port=gw.ports["mqtts"], cert_filepath=str(claim.cert), pri_key_filepath=str(claim.key),
        ca_filepath=str(claim.ca), client_id=f"claim5-{uuid.uuid4().hex[:6]}",
        on_lifecycle_connection_success=connected.set_result,
        on_lifecycle_stopped=lambda data: stopped.done() or stopped.set_result(None),
    )  # fmt: skip
    mq.start()
    connected.result(10)
    try:
        options = mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2, max_streaming_subscriptions=2, operation_timeout_in_seconds=10
        )
        identity = iotidentity.IotIdentityClientV2(mq, options)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-5")]))
            .sign(key, hashes.SHA256())
        )
        made = identity.create_certificate_from_csr(iotidentity.CreateCertificateFromCsrRequest(
            certificate_signing_request=csr.public_bytes(serialization.Encoding.PEM).decode())).result(10)  # fmt: skip
        assert made.certificate_id and made.certificate_ownership_token
        done = identity.register_thing(iotidentity.RegisterThingRequest(
            template_name="fleet", certificate_ownership_token=made.certificate_ownership_token,
            parameters={"SerialNumber": "5"})).result(10)  # fmt: skip
        assert done.thing_name == "dev-5"
        # A claim device publishing outside its policy is refused (MQTT 5: PUBACK "not authorized").
        puback = mq.publish(mqtt5.PublishPacket(topic="telemetry/x", payload=b"{}", qos=mqtt5.QoS.AT_LEAST_ONCE))
        assert puback.result(10).puback.reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
    finally:
        mq.stop()
        stopped.result(10)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert, key_path = _write(tmp_path, "dev-5", made.certificate_pem, pem_key)
    _connects_with(gw, cert, key_path, "dev-5")


LAMBDA_HOOK = """
def handler(event, context):
    serial = event["parameters"].get("SerialNumber", "")
    if serial.startswith("blocked"):
        return {"allowProvisioning": False}
    return {"allowProvisioning": True, "parameterOverrides": {"SerialNumber": serial + "-hooked"}}
"""


def test_pre_provisioning_hook_is_honoured(gw: GatewayProcess, claim: Creds) -> None:
    iot, lam = client(gw, "iot"), client(gw, "lambda")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", LAMBDA_HOOK)
    fn = lam.create_function(FunctionName="prov-hook", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                             Code={"ZipFile": buffer.getvalue()})  # fmt: skip
    iot.create_provisioning_template(
        templateName="hooked",
        templateBody=json.dumps(TEMPLATE),
        provisioningRoleArn=ROLE,
        enabled=True,
        preProvisioningHook={"targetArn": fn["FunctionArn"]},
    )
    claim_arn = f"arn:aws:iot:us-east-1:{ACCOUNT}:cert/{claim.certificate_id}"
    iot.attach_policy(policyName=_extra_claim_policy(iot, "hooked"), target=claim_arn)
    dev = Mqtt3Identity(gw, claim, f"claim-{uuid.uuid4().hex[:6]}")
    try:
        _, keys = dev.create_keys()
        kind, done = dev.register("hooked", keys.certificate_ownership_token, {"SerialNumber": "h1"})
        assert (kind, done.thing_name) == ("accepted", "dev-h1-hooked")
        kind, err = dev.register("hooked", keys.certificate_ownership_token, {"SerialNumber": "blocked-1"})
        assert (kind, err.status_code, err.error_code) == ("rejected", 403, "AccessDenied")
    finally:
        dev.close()


def _extra_claim_policy(iot: Any, template: str) -> str:
    name = f"claim-{template}"
    iot.create_policy(policyName=name, policyDocument=json.dumps(claim_policy(template)))
    return name


def test_answers_go_only_to_the_requesting_connection(gw: GatewayProcess, claim: Creds) -> None:
    """Every claim device subscribes to the same topics: one device's new private key must reach no other."""
    from awscrt import mqtt

    other = Mqtt3Identity(gw, claim, f"claim-{uuid.uuid4().hex[:6]}")
    seen = threading.Event()
    fut, _ = other.conn.subscribe("$aws/certificates/create/json/accepted", mqtt.QoS.AT_LEAST_ONCE,
                                  lambda **kw: seen.set())  # fmt: skip
    fut.result(10)
    dev = Mqtt3Identity(gw, claim, f"claim-{uuid.uuid4().hex[:6]}")
    try:
        assert dev.create_keys()[0] == "accepted"
        assert not seen.wait(0.5)
    finally:
        dev.close()
        other.close()


def test_provisioning_claim_gets_a_device_provisioned(gw: GatewayProcess, tmp_path: Path) -> None:
    """CreateProvisioningClaim's temporary certificate (five minutes) may use the MQTT API for its template."""
    iot = client(gw, "iot")
    claim = iot.create_provisioning_claim(templateName="fleet")
    assert 0 < claim["expiration"].timestamp() - time.time() <= 300
    cert, key = _write(tmp_path, "temp-claim", claim["certificatePem"], claim["keyPair"]["PrivateKey"])
    creds = Creds("none", cert, key, gw.ca_file, claim["certificateId"])
    dev = Mqtt3Identity(gw, creds, f"trusted-{uuid.uuid4().hex[:6]}")
    try:
        _, keys = dev.create_keys()
        kind, done = dev.register("fleet", keys.certificate_ownership_token, {"SerialNumber": "tu1"})
        assert (kind, done.thing_name) == ("accepted", "dev-tu1")
    finally:
        dev.close()
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_provisioning_claim(templateName="no-such-template")


def test_cbor_topics_with_paho(gw: GatewayProcess, claim: Creds) -> None:
    """The `/cbor` variants (as the embedded C SDK's fleet provisioning library uses them), and a bad payload."""
    from mqtt_helpers import Device

    from gateway.provisioning import cbor

    dev = Device(gw.ports["mqtts"], f"cbor-{uuid.uuid4().hex[:6]}", claim.cert, claim.key, claim.ca).connect()
    try:
        assert dev.subscribe("$aws/certificates/create/cbor/+") == [1]
        assert dev.subscribe("$aws/provisioning-templates/fleet/provision/cbor/+") == [1]
        assert dev.publish("$aws/certificates/create/cbor", b"")
        answer = dev.expect()
        assert answer.topic == "$aws/certificates/create/cbor/accepted"
        keys = cbor.loads(answer.payload)
        request = {"certificateOwnershipToken": keys["certificateOwnershipToken"], "parameters": {"SerialNumber": "c1"}}
        assert dev.publish("$aws/provisioning-templates/fleet/provision/cbor", cbor.dumps(request))
        done = dev.expect()
        assert done.topic.endswith("/provision/cbor/accepted") and cbor.loads(done.payload)["thingName"] == "dev-c1"
        assert dev.publish("$aws/provisioning-templates/fleet/provision/cbor", b"\xff\x00")
        bad = dev.expect()
        assert bad.topic.endswith("/rejected") and cbor.loads(bad.payload)["errorCode"] == "InvalidPayload"
    finally:
        dev.close()
