"""boto3 `iot` against the gateway's HTTP API: the control plane, its error classes and pagination."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device

POLICY = json.dumps(allow_all_policy())


def client(gw: GatewayProcess, service: str, key: str = "test", secret: str = "test") -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def iot(gateway: GatewayProcess) -> Iterator[Any]:
    yield client(gateway, "iot")


def test_thing_crud_and_errors(iot: Any, unique: str) -> None:
    name = f"thing-{unique}"
    created = iot.create_thing(thingName=name, attributePayload={"attributes": {"site": "berlin"}})
    assert created["thingArn"].endswith(f":thing/{name}")
    described = iot.describe_thing(thingName=name)
    assert (described["attributes"], described["version"], described["defaultClientId"]) == (
        {"site": "berlin"},
        1,
        name,
    )
    iot.update_thing(thingName=name, attributePayload={"attributes": {"floor": "2"}, "merge": True})
    assert iot.describe_thing(thingName=name)["attributes"] == {"site": "berlin", "floor": "2"}
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName=name, attributePayload={"attributes": {}}, expectedVersion=1)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing(thingName=name, attributePayload={"attributes": {"site": "paris"}})
    iot.delete_thing(thingName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)


def test_list_things_paginates_and_filters(iot: Any, unique: str) -> None:
    for i in range(5):
        iot.create_thing(thingName=f"page-{unique}-{i}", attributePayload={"attributes": {"batch": unique}})
    paginator = iot.get_paginator("list_things")
    names = [
        t["thingName"]
        for page in paginator.paginate(attributeName="batch", attributeValue=unique, PaginationConfig={"PageSize": 2})
        for t in page["things"]
    ]
    assert names == [f"page-{unique}-{i}" for i in range(5)]


def test_types_and_groups(iot: Any, unique: str) -> None:
    iot.create_thing_type(thingTypeName=f"type-{unique}", thingTypeProperties={"thingTypeDescription": "lamps"})
    assert (
        iot.describe_thing_type(thingTypeName=f"type-{unique}")["thingTypeProperties"]["thingTypeDescription"]
        == "lamps"
    )
    iot.create_thing(thingName=f"lamp-{unique}", thingTypeName=f"type-{unique}")
    iot.create_thing_group(thingGroupName=f"root-{unique}")
    iot.create_thing_group(thingGroupName=f"child-{unique}", parentGroupName=f"root-{unique}")
    iot.add_thing_to_thing_group(thingGroupName=f"child-{unique}", thingName=f"lamp-{unique}")
    assert iot.list_things_in_thing_group(thingGroupName=f"root-{unique}", recursive=True)["things"] == [
        f"lamp-{unique}"
    ]
    assert iot.list_things_in_thing_group(thingGroupName=f"root-{unique}")["things"] == []


def test_certificates_policies_and_principals(gateway: GatewayProcess, iot: Any, unique: str) -> None:
    cert = iot.create_keys_and_certificate(setAsActive=True)
    assert len(cert["certificateId"]) == 64 and "PrivateKey" in cert["keyPair"]
    iot.create_policy(policyName=f"pol-{unique}", policyDocument=POLICY)
    iot.attach_policy(policyName=f"pol-{unique}", target=cert["certificateArn"])
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert["certificateArn"])["policies"]] == [
        f"pol-{unique}"
    ]
    iot.create_thing(thingName=f"dev-{unique}")
    iot.attach_thing_principal(thingName=f"dev-{unique}", principal=cert["certificateArn"])
    assert iot.list_thing_principals(thingName=f"dev-{unique}")["principals"] == [cert["certificateArn"]]
    desc = iot.describe_certificate(certificateId=cert["certificateId"])["certificateDescription"]
    assert desc["status"] == "ACTIVE"
    # The certificate made through the API connects over mTLS.
    home = gateway.home / "api-devices"
    home.mkdir(exist_ok=True)
    (home / "c.pem").write_text(cert["certificatePem"])
    (home / "k.pem").write_text(cert["keyPair"]["PrivateKey"])
    dev = Device(gateway.ports["mqtts"], f"dev-{unique}", home / "c.pem", home / "k.pem", gateway.ca_file).connect()
    iot.update_certificate(certificateId=cert["certificateId"], newStatus="INACTIVE")
    assert dev.disconnected.wait(5)
    dev.client.loop_stop()
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_certificate(certificateId=cert["certificateId"])
    iot.detach_thing_principal(thingName=f"dev-{unique}", principal=cert["certificateArn"])
    iot.delete_certificate(certificateId=cert["certificateId"], forceDelete=True)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_certificate(certificateId=cert["certificateId"])


def test_policy_versions_and_malformed_documents(iot: Any, unique: str) -> None:
    iot.create_policy(policyName=f"v-{unique}", policyDocument=POLICY)
    v2 = iot.create_policy_version(policyName=f"v-{unique}", policyDocument=POLICY, setAsDefault=True)
    assert v2["policyVersionId"] == "2"
    assert iot.get_policy(policyName=f"v-{unique}")["defaultVersionId"] == "2"
    bad = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Alow", "Action": "iot:*", "Resource": "*"}]})
    with pytest.raises(iot.exceptions.MalformedPolicyException) as info:
        iot.create_policy(policyName=f"bad-{unique}", policyDocument=bad)
    assert "Statement[0].Effect" in str(info.value)


def test_register_certificate_made_elsewhere(gateway: GatewayProcess, iot: Any) -> None:
    from datetime import UTC, datetime

    from gateway.identity import ca as ca_mod

    other_ca = ca_mod.create_root_ca("Vendor CA", now=datetime.now(UTC))
    device_cert = ca_mod.issue_device_cert(other_ca, now=datetime.now(UTC))
    with pytest.raises(iot.exceptions.CertificateValidationException):
        iot.register_certificate(certificatePem=device_cert.cert_pem.decode())
    iot.register_ca_certificate(caCertificate=other_ca.cert_pem.decode(), setAsActive=True, certificateMode="SNI_ONLY")
    out = iot.register_certificate(certificatePem=device_cert.cert_pem.decode(), setAsActive=True)
    assert (
        out["certificateId"]
        == iot.describe_certificate(certificateId=out["certificateId"])["certificateDescription"]["certificateId"]
    )


def test_describe_endpoint(iot: Any) -> None:
    assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == "127.0.0.1"


def test_require_sigv4_checks_signatures(tmp_path: Any) -> None:
    gw = GatewayProcess(tmp_path, extra_args=["--require-sigv4", "AKIDEDGESIM:s3cret"]).start()
    try:
        good = boto3.client(
            "iot",
            endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
            region_name="eu-west-1",
            aws_access_key_id="AKIDEDGESIM",
            aws_secret_access_key="s3cret",
        )
        good.create_thing(thingName="signed", attributePayload={"attributes": {"a": "b.c"}})
        assert good.list_things(maxResults=5)["things"][0]["thingName"] == "signed"
        data = boto3.client(
            "iot-data",
            endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
            region_name="eu-west-1",
            aws_access_key_id="AKIDEDGESIM",
            aws_secret_access_key="s3cret",
        )
        data.publish(topic="a/b c/$x", qos=1, payload=b"signed publish")
        wrong = client(gw, "iot")
        with pytest.raises(wrong.exceptions.ClientError) as info:
            wrong.list_things()
        assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
        forged = boto3.client(
            "iot",
            endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
            region_name="us-east-1",
            aws_access_key_id="AKIDEDGESIM",
            aws_secret_access_key="guess",
        )
        with pytest.raises(forged.exceptions.ClientError) as info:
            forged.list_things()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    finally:
        gw.stop()


def _raw(gw: GatewayProcess, method: str, path: str, body: bytes | None) -> tuple[int, str, dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{gw.ports['api']}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, "", json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("x-amzn-ErrorType", ""), json.loads(error.read())


@pytest.mark.parametrize(
    "body",
    [
        b'{"attributePayload": {"attributes": ["not", "a", "map"]}}',
        b'{"attributePayload": {"attributes": {"a": 5}}}',
        b'{"thingTypeName": 42}',
        b"{not json",
        b"[1, 2]",
    ],
)
def test_malformed_requests_get_aws_errors_and_change_nothing(
    gateway: GatewayProcess, iot: Any, unique: str, body: bytes
) -> None:
    status, error_type, payload = _raw(gateway, "POST", f"/things/raw-{unique}", body)
    assert (status, error_type) == (400, "InvalidRequestException")
    assert payload["message"]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=f"raw-{unique}")


def test_gateway_keeps_serving_after_bad_requests(gateway: GatewayProcess, iot: Any) -> None:
    for method, path in (("GET", "/no/such/route"), ("DELETE", "/things"), ("PUT", "/certificates/zz?newStatus=x")):
        status, _, _ = _raw(gateway, method, path, None)
        assert 400 <= status < 500
    assert "things" in iot.list_things()
