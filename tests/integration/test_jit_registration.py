"""CA registration with proof of possession, just-in-time registration (JITR) with a rule and a Lambda, JITP,
and registry events: boto3 for the control plane, paho for the devices, one gateway for the module."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mqtt_helpers import Device
from test_api_iot import client
from test_lambda import create, wait_for
from test_rules import rule

from gateway.identity import ca as ca_mod

ACTIVATOR = """
import boto3

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}'

def handler(event, context):
    iot = boto3.client("iot")
    cert_id = event["certificateId"]
    name = "jitr-" + cert_id[:12]
    iot.create_policy(policyName=name, policyDocument=POLICY)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["certificateArn"]
    iot.attach_policy(policyName=name, target=arn)
    iot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")
"""


@pytest.fixture(scope="module")
def iot(gateway: GatewayProcess) -> Any:
    return client(gateway, "iot")


@pytest.fixture(scope="module")
def watcher(gateway: GatewayProcess) -> Any:
    """A device allowed everything, subscribed to every registry and JITR event."""
    creds = gateway.provision("event-watcher", allow_all_policy())
    dev = Device(gateway.ports["mqtts"], "event-watcher", creds.cert, creds.key, creds.ca).connect()
    for kind in (
        "certificates/registered",
        "thing",
        "thingGroup",
        "thingGroupMembership",
        "thingGroupHierarchy",
        "thingType",
    ):
        assert dev.subscribe(f"$aws/events/{kind}/#") == [1]
    yield dev
    dev.close()


def new_ca(name: str) -> ca_mod.IssuedCert:
    return ca_mod.create_root_ca(name, now=datetime.now(UTC))


def device_cert(ca: ca_mod.IssuedCert, tmp_path: Path, common_name: str, **subject: str) -> tuple[Path, Path]:
    """A device certificate with the given subject attributes (country=..., serial=...), signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem or b"", None)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if "country" in subject:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, subject["country"]))
    if "serial" in subject:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, subject["serial"]))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path = tmp_path / f"{common_name}.cert.pem"
    key_path = tmp_path / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def cert_id_of(path: Path) -> str:
    from gateway.identity.certs import certificate_id

    return certificate_id(path.read_bytes())


def verification(ca: ca_mod.IssuedCert, code: str) -> str:
    return ca_mod.issue_device_cert(ca, now=datetime.now(UTC), common_name=code).cert_pem.decode()


def register_ca(iot: Any, ca: ca_mod.IssuedCert, **extra: Any) -> str:
    code = iot.get_registration_code()["registrationCode"]
    out = iot.register_ca_certificate(
        caCertificate=ca.cert_pem.decode(), verificationCertificate=verification(ca, code), **extra
    )
    return str(out["certificateId"])


def connects(gateway: GatewayProcess, client_id: str, cert: Path, key: Path) -> bool:
    """Whether the first connect attempt is accepted (no waiting out paho's reconnects)."""
    dev = Device(gateway.ports["mqtts"], client_id, cert, key, gateway.ca_file)
    try:
        dev.client.connect("127.0.0.1", gateway.ports["mqtts"])
    except OSError:
        return False  # refused during the TLS handshake
    dev.client.loop_start()
    try:
        wait_for(lambda: dev.connected.is_set() or dev.disconnected.is_set())
        return dev.connected.is_set()
    finally:
        dev.close()


# ---- CA registration
def test_registration_code_is_stable_until_deleted(iot: Any) -> None:
    first = iot.get_registration_code()["registrationCode"]
    assert len(first) == 64 and first == iot.get_registration_code()["registrationCode"]
    iot.delete_registration_code()
    assert iot.get_registration_code()["registrationCode"] != first


def test_default_mode_needs_a_verification_certificate(iot: Any) -> None:
    ca = new_ca("Proof CA")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.register_ca_certificate(caCertificate=ca.cert_pem.decode())
    with pytest.raises(iot.exceptions.RegistrationCodeValidationException):
        iot.register_ca_certificate(caCertificate=ca.cert_pem.decode(), verificationCertificate=verification(ca, "x"))
    code = iot.get_registration_code()["registrationCode"]
    impostor = new_ca("Proof CA")  # same subject, another key: no proof of possession of the real CA's key
    with pytest.raises(iot.exceptions.CertificateValidationException):
        iot.register_ca_certificate(
            caCertificate=ca.cert_pem.decode(), verificationCertificate=verification(impostor, code)
        )
    assert iot.list_ca_certificates()["certificates"][-1]["certificateId"] != cert_id_of_pem(ca)
    ca_id = register_ca(iot, ca, setAsActive=True)
    desc = iot.describe_ca_certificate(certificateId=ca_id)
    assert desc["certificateDescription"]["certificateMode"] == "DEFAULT"
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    assert desc["certificateDescription"]["autoRegistrationStatus"] == "DISABLE"
    assert "registrationConfig" not in desc


def cert_id_of_pem(ca: ca_mod.IssuedCert) -> str:
    from gateway.identity.certs import certificate_id

    return certificate_id(ca.cert_pem)


def test_sni_only_needs_no_proof_and_devices_inherit_the_mode(iot: Any) -> None:
    ca = new_ca("SNI CA")
    ca_id = iot.register_ca_certificate(caCertificate=ca.cert_pem.decode(), certificateMode="SNI_ONLY")["certificateId"]
    assert iot.describe_ca_certificate(certificateId=ca_id)["certificateDescription"]["certificateMode"] == "SNI_ONLY"
    dev = ca_mod.issue_device_cert(ca, now=datetime.now(UTC))
    out = iot.register_certificate(certificatePem=dev.cert_pem.decode(), caCertificatePem=ca.cert_pem.decode())
    described = iot.describe_certificate(certificateId=out["certificateId"])["certificateDescription"]
    assert described["certificateMode"] == "SNI_ONLY" and described["caCertificateId"] == ca_id


def test_registration_config_is_stored_updated_and_described(iot: Any) -> None:
    ca = new_ca("Config CA")
    template = json.dumps({"Resources": {}})
    role = "arn:aws:iam::123456789012:role/JITPRole"
    ca_id = register_ca(
        iot, ca, allowAutoRegistration=True, registrationConfig={"templateBody": template, "roleArn": role}
    )
    desc = iot.describe_ca_certificate(certificateId=ca_id)
    assert desc["registrationConfig"] == {"templateBody": template, "roleArn": role}
    assert desc["certificateDescription"]["autoRegistrationStatus"] == "ENABLE"
    iot.update_ca_certificate(
        certificateId=ca_id, registrationConfig={"templateName": "my-jitp"}, removeAutoRegistration=True
    )
    desc = iot.describe_ca_certificate(certificateId=ca_id)
    assert desc["registrationConfig"] == {"templateName": "my-jitp"}
    assert desc["certificateDescription"]["autoRegistrationStatus"] == "DISABLE"
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_ca_certificate(certificateId=ca_id, registrationConfig={"templateBody": "{not json"})
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_ca_certificate(certificateId=ca_id, newStatus="REVOKED")  # a CA is only ACTIVE or INACTIVE
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_ca_certificate(
            certificateId=ca_id, registrationConfig={"roleArn": "arn:aws:iam::12345:role-not-a-role"}
        )


# ---- JITR
def test_jitr_round_trip_with_a_rule_and_a_lambda(
    gateway: GatewayProcess, iot: Any, watcher: Device, tmp_path: Path, unique: str
) -> None:
    lam = client(gateway, "lambda")
    ca = new_ca(f"JITR CA {unique}")
    ca_id = register_ca(iot, ca, setAsActive=True, allowAutoRegistration=True)
    arn = create(lam, f"activate-{unique}", ACTIVATOR, Timeout=60)["FunctionArn"]
    iot.create_topic_rule(
        ruleName=f"jitr_{unique}",
        topicRulePayload=rule(
            f"SELECT * FROM '$aws/events/certificates/registered/{ca_id}'", {"lambda": {"functionArn": arn}}
        ),
    )
    cert, key = device_cert(ca, tmp_path, f"jitr-{unique}")
    cert_id = cert_id_of(cert)
    # Like real firmware, paho reconnects after the first connect is dropped; it gets in once the Lambda is done.
    dev = Device(gateway.ports["mqtts"], f"jitr-{unique}", cert, key, gateway.ca_file).connect(timeout=60)
    assert dev.disconnected.is_set()  # the first attempt was refused
    message = wait_for(lambda: _drain_for(watcher, f"$aws/events/certificates/registered/{ca_id}"))
    event = json.loads(message.payload)
    assert event["certificateId"] == cert_id and event["caCertificateId"] == ca_id
    assert event["certificateStatus"] == "PENDING_ACTIVATION" and event["awsAccountId"] == "123456789012"
    assert isinstance(event["timestamp"], int) and event["certificateRegistrationTimestamp"].isdigit()
    described = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert described["status"] == "ACTIVE" and described["caCertificateId"] == ca_id
    assert iot.list_principal_policies(principal=described["certificateArn"])["policies"]
    assert dev.publish(f"jitr/{unique}", b"in")
    dev.close()


def _drain_for(dev: Device, topic: str) -> Any:
    while not dev.messages.empty():
        message = dev.messages.get_nowait()
        if message.topic == topic:
            return message
    return None


def test_no_auto_registration_from_an_inactive_ca_or_without_allow(
    gateway: GatewayProcess, iot: Any, tmp_path: Path, unique: str
) -> None:
    inactive = new_ca(f"Inactive CA {unique}")
    inactive_id = register_ca(iot, inactive, setAsActive=False, allowAutoRegistration=True)
    closed = new_ca(f"Closed CA {unique}")
    closed_id = register_ca(iot, closed, setAsActive=True)
    for ca, ca_id, name in ((inactive, inactive_id, "inactive"), (closed, closed_id, "closed")):
        cert, key = device_cert(ca, tmp_path, f"{name}-{unique}")
        assert not connects(gateway, f"{name}-{unique}", cert, key)
        assert iot.list_certificates_by_ca(caCertificateId=ca_id)["certificates"] == []


def test_unknown_ca_is_refused_at_tls(gateway: GatewayProcess, iot: Any, tmp_path: Path, unique: str) -> None:
    cert, key = device_cert(new_ca(f"Stranger CA {unique}"), tmp_path, f"stranger-{unique}")
    assert not connects(gateway, f"stranger-{unique}", cert, key)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_certificate(certificateId=cert_id_of(cert))


# ---- registry events
def test_registry_events_only_when_enabled(iot: Any, watcher: Device, unique: str) -> None:
    described = iot.describe_event_configurations()
    assert described["lastModifiedDate"] >= described["creationDate"]
    configs = described["eventConfigurations"]
    assert configs["THING"] == {"Enabled": False} and set(configs) >= {"THING_GROUP_MEMBERSHIP", "CERTIFICATE"}
    while not watcher.messages.empty():  # what earlier tests' devices caused
        watcher.messages.get_nowait()
    iot.create_thing(thingName=f"quiet-{unique}")
    watcher.expect_none(0.5)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_event_configurations(eventConfigurations={"NOT_A_TYPE": {"Enabled": True}})
    iot.update_event_configurations(
        eventConfigurations={
            "THING": {"Enabled": True},
            "THING_GROUP": {"Enabled": True},
            "THING_GROUP_MEMBERSHIP": {"Enabled": True},
            "THING_GROUP_HIERARCHY": {"Enabled": True},
            "THING_TYPE": {"Enabled": True},
        }
    )
    assert iot.describe_event_configurations()["eventConfigurations"]["THING"] == {"Enabled": True}
    thing = f"loud-{unique}"
    thing_id = iot.create_thing(thingName=thing, attributePayload={"attributes": {"a": "1"}})["thingId"]
    created = json.loads(watcher.expect().payload)
    assert created == {
        "eventType": "THING_EVENT",
        "eventId": created["eventId"],
        "timestamp": created["timestamp"],
        "operation": "CREATED",
        "accountId": "123456789012",
        "thingId": thing_id,
        "thingName": thing,
        "versionNumber": 1,
        "thingTypeName": None,
        "attributes": {"a": "1"},
    }
    iot.update_thing(thingName=thing, attributePayload={"attributes": {"b": "2"}, "merge": True})
    message = watcher.expect()
    assert message.topic == f"$aws/events/thing/{thing}/updated"
    assert json.loads(message.payload)["versionNumber"] == 2
    parent, child = f"parent-{unique}", f"child-{unique}"
    parent_id = iot.create_thing_group(thingGroupName=parent)["thingGroupId"]
    assert watcher.expect().topic == f"$aws/events/thingGroup/{parent}/created"
    iot.create_thing_group(thingGroupName=child, parentGroupName=parent)
    group_event = watcher.expect()
    assert group_event.topic == f"$aws/events/thingGroup/{child}/created"
    body = json.loads(group_event.payload)
    assert body["parentGroupName"] == parent and body["parentGroupId"] == parent_id
    assert body["rootToParentThingGroups"] == [
        {"groupArn": f"arn:aws:iot:us-east-1:123456789012:thinggroup/{parent}", "groupId": parent_id}
    ]
    hierarchy = watcher.expect()
    assert hierarchy.topic == f"$aws/events/thingGroupHierarchy/thingGroup/{parent}/childThingGroup/{child}/added"
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=thing)
    added = watcher.expect()
    assert added.topic == f"$aws/events/thingGroupMembership/thingGroup/{child}/thing/{thing}/added"
    membership = json.loads(added.payload)
    assert membership["eventType"] == "THING_GROUP_MEMBERSHIP_EVENT" and membership["operation"] == "ADDED"
    assert membership["thingId"] == thing_id and membership["membershipId"]
    iot.remove_thing_from_thing_group(thingGroupName=child, thingName=thing)
    assert watcher.expect().topic.endswith(f"/thing/{thing}/removed")
    iot.delete_thing(thingName=thing)
    deleted = watcher.expect()
    assert deleted.topic == f"$aws/events/thing/{thing}/deleted"
    assert json.loads(deleted.payload)["operation"] == "DELETED"
    iot.create_thing_type(thingTypeName=f"type-{unique}")
    type_event = json.loads(watcher.expect().payload)
    assert type_event["eventType"] == "THING_TYPE_EVENT" and type_event["isDeprecated"] is False
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": False}})
    iot.create_thing(thingName=f"quiet-again-{unique}")
    watcher.expect_none(0.5)


def test_rules_see_registry_events(gateway: GatewayProcess, iot: Any, watcher: Device, unique: str) -> None:
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": True}})
    iot.create_topic_rule(
        ruleName=f"thing_events_{unique}",
        topicRulePayload=rule(
            "SELECT thingName, operation FROM '$aws/events/thing/+/created'",
            {"republish": {"roleArn": "arn:aws:iam::123456789012:role/r", "topic": f"seen/{unique}", "qos": 1}},
        ),
    )
    assert watcher.subscribe(f"seen/{unique}") == [1]
    iot.create_thing(thingName=f"ruled-{unique}")
    seen = wait_for(lambda: _drain_for(watcher, f"seen/{unique}"))
    assert json.loads(seen.payload) == {"thingName": f"ruled-{unique}", "operation": "CREATED"}
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": False}})


# ---- JITP
JITP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "iot:Connect",
            "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}",
        },
        {
            "Effect": "Allow",
            "Action": "iot:Publish",
            "Resource": "arn:aws:iot:us-east-1:123456789012:topic/fleet/${iot:Connection.Thing.ThingName}/*",
        },
    ],
}


def jitp_template(*extra_parameters: str) -> str:
    """The developer guide's JITP template: thing named by the CN with the country as an attribute, an ACTIVE
    certificate and a policy scoped by thing name."""
    parameters = ["CommonName", "Country", "Id", *extra_parameters]
    attributes: dict[str, Any] = {"version": "v1", "country": {"Ref": "AWS::IoT::Certificate::Country"}}
    for name in extra_parameters:
        attributes[name.lower()] = {"Ref": f"AWS::IoT::Certificate::{name}"}
    return json.dumps(
        {
            "Parameters": {f"AWS::IoT::Certificate::{p}": {"Type": "String"} for p in parameters},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"},
                        "AttributePayload": attributes,
                    },
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
                },
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": json.dumps(JITP_POLICY)}},
            },
        }
    )


def test_jitp_creates_thing_certificate_and_policy_from_the_cas_template(
    gateway: GatewayProcess, iot: Any, tmp_path: Path, unique: str
) -> None:
    ca = new_ca(f"JITP CA {unique}")
    register_ca(
        iot,
        ca,
        setAsActive=True,
        allowAutoRegistration=True,
        registrationConfig={"templateBody": jitp_template(), "roleArn": "arn:aws:iam::123456789012:role/JITP"},
    )
    thing = f"jitp-{unique}"
    cert, key = device_cert(ca, tmp_path, thing, country="DE")
    assert not connects(gateway, thing, cert, key)  # the first connect provisions and is dropped
    described = iot.describe_thing(thingName=thing)
    assert described["attributes"] == {"version": "v1", "country": "DE"}
    cert_id = cert_id_of(cert)
    cert_arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["certificateArn"]
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"
    assert iot.list_thing_principals(thingName=thing)["principals"] == [cert_arn]
    assert iot.list_principal_policies(principal=cert_arn)["policies"]
    dev = Device(gateway.ports["mqtts"], thing, cert, key, gateway.ca_file).connect()
    assert dev.publish(f"fleet/{thing}/status", b"up")
    dev.close()
    assert not connects(gateway, f"someone-else-{unique}", cert, key)  # the template's policy is enforced


def test_jitp_with_a_named_template_and_with_a_missing_parameter(
    gateway: GatewayProcess, iot: Any, tmp_path: Path, unique: str
) -> None:
    name = f"jitp_{unique}"
    role = "arn:aws:iam::123456789012:role/JITP"
    iot.create_provisioning_template(
        templateName=name, templateBody=jitp_template(), provisioningRoleArn=role, enabled=True, type="JITP"
    )
    named = new_ca(f"Named JITP CA {unique}")
    register_ca(iot, named, setAsActive=True, allowAutoRegistration=True, registrationConfig={"templateName": name})
    thing = f"named-{unique}"
    cert, key = device_cert(named, tmp_path, thing, country="FR")
    assert not connects(gateway, thing, cert, key)
    assert iot.describe_thing(thingName=thing)["attributes"]["country"] == "FR"
    assert connects(gateway, thing, cert, key)
    # The template wants the subject's serialNumber; a certificate without one cannot be provisioned.
    strict = new_ca(f"Strict JITP CA {unique}")
    strict_id = register_ca(
        iot,
        strict,
        setAsActive=True,
        allowAutoRegistration=True,
        registrationConfig={"templateBody": jitp_template("SerialNumber"), "roleArn": role},
    )
    lacking = f"lacking-{unique}"
    cert, key = device_cert(strict, tmp_path, lacking, country="IT")
    assert not connects(gateway, lacking, cert, key)
    assert not connects(gateway, lacking, cert, key)
    listed = iot.list_certificates_by_ca(caCertificateId=strict_id)["certificates"]
    assert [c["status"] for c in listed] == ["PENDING_ACTIVATION"]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=lacking)
    complete = f"complete-{unique}"
    cert, key = device_cert(strict, tmp_path, complete, country="IT", serial="SN-42")
    assert not connects(gateway, complete, cert, key)
    assert iot.describe_thing(thingName=complete)["attributes"]["serialnumber"] == "SN-42"


def test_cli_register_ca_with_proof_or_sni_only(gateway: GatewayProcess, iot: Any, tmp_path: Path, unique: str) -> None:
    from test_cli import run

    proven, sni = new_ca(f"CLI CA {unique}"), new_ca(f"CLI SNI CA {unique}")
    for ca, stem in ((proven, "proven"), (sni, "sni")):
        (tmp_path / f"{stem}.pem").write_bytes(ca.cert_pem)
        (tmp_path / f"{stem}.key").write_bytes(ca.key_pem or b"")
    template = tmp_path / "jitp.json"
    template.write_text(jitp_template())
    out = run(
        tmp_path,
        *("certs", "register-ca", str(tmp_path / "proven.pem"), "--ca-key", str(tmp_path / "proven.key")),
        *("--auto-registration", "--template", str(template), "--json"),
        gw=gateway,
    )
    desc = iot.describe_ca_certificate(certificateId=json.loads(out.stdout)["certificateId"])
    assert desc["certificateDescription"]["certificateMode"] == "DEFAULT"
    assert desc["certificateDescription"]["autoRegistrationStatus"] == "ENABLE"
    assert json.loads(desc["registrationConfig"]["templateBody"]) == json.loads(jitp_template())
    out = run(tmp_path, "certs", "register-ca", str(tmp_path / "sni.pem"), "--json", gw=gateway)
    sni_id = json.loads(out.stdout)["certificateId"]
    assert iot.describe_ca_certificate(certificateId=sni_id)["certificateDescription"]["certificateMode"] == "SNI_ONLY"
