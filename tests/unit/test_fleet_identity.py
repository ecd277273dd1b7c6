"""Fleet files that say how devices get an identity (`provisioning:`, `auth:`), and what devices send from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.claim import ClaimOptions
from devices.custom_auth import AuthOptions
from devices.spec import FleetFileError, expand, parse_fleet

TYPES = """
device_types:
  - name: s
    count: 2
"""


def test_claim_provisioning_with_parameters() -> None:
    spec = parse_fleet("fleet: f\nprovisioning: {by: claim, template: t1, parameters: {Serial: 'sn-{i}'}}" + TYPES)
    assert spec.provisioning is not None and spec.provisioning.template == "t1"
    options = ClaimOptions("t1", Path("c"), Path("k"), {k: v.text for k, v in spec.provisioning.parameters.items()})
    assert options.render(expand(spec)[1]) == {"Serial": "sn-1"}
    default = parse_fleet("fleet: f\nprovisioning: {by: claim, template: t1}" + TYPES).provisioning
    assert default is not None and {k: v.text for k, v in default.parameters.items()} == {"ThingName": "{thing_name}"}


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        ("provisioning: {by: jitp}", "needs a `template`"),
        ("provisioning: {by: claim, template: 'bad name'}", "provisioning.template"),
        ("provisioning: {by: magic, template: t}", "provisioning.by"),
        ("provisioning: {by: claim, template: t, parameters: {X: '{nope}'}}", "nope"),
        ("auth: {by: custom-authorizer, authorizer: a}\nprovisioning: {by: jitr}", "not both"),
    ],
)
def test_bad_identity_settings_name_the_problem(head: str, problem: str) -> None:
    with pytest.raises(FleetFileError) as caught:
        parse_fleet("fleet: f\n" + head + TYPES, "f.yaml")
    assert problem in str(caught.value) and "f.yaml:" in str(caught.value)


def test_jitr_needs_no_template() -> None:
    spec = parse_fleet("fleet: f\nprovisioning: {by: jitr}" + TYPES)
    assert spec.provisioning is not None and spec.provisioning.template is None


def test_custom_authorizer_credentials() -> None:
    spec = parse_fleet(
        "fleet: f\nauth: {by: custom-authorizer, authorizer: 'my=auth', password: pw, username: 'u-{i}',"
        " token_key_name: tok, token: 'a b', signature: 's+/='}" + TYPES
    )
    assert spec.auth is not None
    username, password = AuthOptions.from_spec(spec.auth).credentials(expand(spec)[1])
    assert username == (
        "u-1?x-amz-customauthorizer-name=my%3Dauth&tok=a%20b&x-amz-customauthorizer-signature=s%2B%2F%3D"
    )
    assert password == b"pw"
    bare = AuthOptions("a").credentials(expand(spec)[0])
    assert bare == ("f-s-0000?x-amz-customauthorizer-name=a", None)


def test_sigv4_presigned_path_adds_the_token_after_signing() -> None:
    spec = parse_fleet("fleet: f\nauth: {by: sigv4-websocket, access_key_id: AKID, secret_access_key: s}" + TYPES)
    assert spec.auth is not None
    plain = AuthOptions.from_spec(spec.auth).websocket_path("127.0.0.1", 8084)
    assert plain.startswith("/mqtt?X-Amz-Algorithm=AWS4-HMAC-SHA256&") and "X-Amz-Signature=" in plain
    assert "iotdevicegateway" in plain and "X-Amz-Security-Token" not in plain
    with_token = AuthOptions.from_spec(spec.auth.model_copy(update={"session_token": "t/1"}))
    assert with_token.websocket_path("127.0.0.1", 8084).endswith("&X-Amz-Security-Token=t%2F1")
    assert AuthOptions.from_spec(spec.auth).credentials(expand(spec)[0]) is None


def test_websocket_frames_are_masked_and_sized() -> None:
    from mqttwire.websocket import frame

    for size in (0, 5, 125, 126, 70000):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        data = frame(payload)
        assert data[0] == 0x82 and data[1] & 0x80  # final binary frame, masked
        offset = {True: 2, False: 4 if size < 65536 else 10}[size < 126]
        mask, body = data[offset : offset + 4], data[offset + 4 :]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload
