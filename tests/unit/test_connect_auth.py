"""Custom authorizer answers, token signatures, SigV4-signed upgrades (signed by botocore), and the sweeper that
enforces disconnectAfterInSeconds and refreshAfterInSeconds on live connections (time passed in)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.broker.connect_auth import ConnectAuth, _Timers
from gateway.identity import custom_auth, sigv4_ws
from gateway.identity.authn import Authentication, Credentials
from gateway.identity.authorizer import ConnectionContext
from gateway.identity.policy_doc import parse_policy_document
from mqttwire import reasons

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


def policy(topic: str) -> str:
    arn = "arn:aws:iot:us-east-1:123456789012:"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn + "client/*"},
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": arn + f"topic/{topic}"}]})  # fmt: skip


def answer(**changes: Any) -> bytes:
    body: dict[str, Any] = {"isAuthenticated": True, "principalId": "abc123", "policyDocuments": [policy("a")],
                            "disconnectAfterInSeconds": 3600, "refreshAfterInSeconds": 300}  # fmt: skip
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_answers_are_checked_as_aws_does() -> None:
    parsed = custom_auth.parse_answer(answer())
    assert (parsed.is_authenticated, parsed.principal_id, parsed.refresh_after_s) == (True, "abc123", 300)
    assert len(parsed.documents) == 1
    for bad in (
        b"not json",
        b"[]",
        answer(isAuthenticated="true"),
        answer(principalId="with-dash"),
        answer(principalId="x" * 129),
        answer(refreshAfterInSeconds=299),
        answer(disconnectAfterInSeconds=86_401),
        answer(policyDocuments=["{not a policy"]),
        answer(policyDocuments=[policy("a")] * 11),
        answer(policyDocuments=[policy("a" * 2100)]),
        b"[" * 100_000,  # deeper than the JSON parser goes
    ):
        with pytest.raises(custom_auth.InvalidAnswer):
            custom_auth.parse_answer(bad)


def test_credentials_are_found_where_devices_put_them() -> None:
    creds = Credentials(
        door="alpn", username="me?x-amz-customauthorizer-name=A&tok=t%2B1&x-amz-customauthorizer-signature=s%3D"
    )
    assert custom_auth.presented(creds, "tok") == custom_auth.Presented("A", "t+1", "s=", creds.username)
    headers = Credentials(door="wss", headers={"X-Amz-CustomAuthorizer-Name": "B", "tok": "v"})
    assert custom_auth.presented(headers, "tok").authorizer == "B"
    query = Credentials(door="wss", query={"x-amz-customauthorizer-name": "C", "tok": "q"})
    assert (custom_auth.presented(query, "tok").authorizer, custom_auth.presented(query, "tok").token) == ("C", "q")
    assert custom_auth.names_authorizer(Credentials(door="alpn", username="plain")) is None


def test_token_signatures() -> None:
    signature = base64.b64encode(KEY.sign(b"tok", padding.PKCS1v15(), hashes.SHA256())).decode()
    assert custom_auth.signature_valid("tok", signature, {"k": PEM})
    assert not custom_auth.signature_valid("tok2", signature, {"k": PEM})
    assert not custom_auth.signature_valid("tok", "!!not base64", {"k": PEM})
    assert not custom_auth.signature_valid("tok", signature, {})


# ---- SigV4 on the upgrade, signed by botocore
NOW = datetime.now(UTC)  # botocore signs with the real clock
SECRETS = {"AKIAEXAMPLEKEY000001": "secret"}


def _creds(url: str, headers: dict[str, str]) -> Credentials:
    parts = urlsplit(url)
    return Credentials(door="wss", headers=headers, raw_query=parts.query, path=parts.path,
                       query=dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p))  # fmt: skip


def _signed(presign: bool, secret: str = "secret", token: str | None = None) -> Credentials:
    request = AWSRequest(method="GET", url="https://127.0.0.1:8084/mqtt", headers={"Host": "127.0.0.1:8084"})
    signer_type = SigV4QueryAuth if presign else SigV4Auth
    signer = signer_type(BotoCredentials("AKIAEXAMPLEKEY000001", secret), "iotdevicegateway", "us-east-1")
    signer.add_auth(request)
    url = request.url + (f"&X-Amz-Security-Token={token}" if token else "")
    return _creds(url, dict(request.headers))


def test_sigv4_presigned_and_header_signed_upgrades() -> None:
    assert sigv4_ws.verify_upgrade(_signed(presign=True), SECRETS, NOW) == "AKIAEXAMPLEKEY000001"
    assert sigv4_ws.verify_upgrade(_signed(presign=True, token="abc"), SECRETS, NOW) == "AKIAEXAMPLEKEY000001"
    assert sigv4_ws.verify_upgrade(_signed(presign=False), SECRETS, NOW) == "AKIAEXAMPLEKEY000001"
    with pytest.raises(sigv4_ws.SignatureRefused, match="does not match"):
        sigv4_ws.verify_upgrade(_signed(presign=True, secret="other"), SECRETS, NOW)
    with pytest.raises(sigv4_ws.SignatureRefused, match="expired"):
        sigv4_ws.verify_upgrade(_signed(presign=False), SECRETS, NOW + timedelta(hours=1))
    temporary = {"AKIAEXAMPLEKEY000001": "abc"}
    assert sigv4_ws.verify_upgrade(_signed(presign=True, token="abc"), SECRETS, NOW, temporary)
    with pytest.raises(sigv4_ws.SignatureRefused, match="security token"):
        sigv4_ws.verify_upgrade(_signed(presign=True, token="abd"), SECRETS, NOW, temporary)
    with pytest.raises(sigv4_ws.SignatureRefused, match="not known"):
        sigv4_ws.verify_upgrade(_signed(presign=True), {}, NOW)
    good = _signed(presign=True)
    forged = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=%C3%A9", good.raw_query)
    with pytest.raises(sigv4_ws.SignatureRefused, match="does not match"):  # not a TypeError from the comparison
        sigv4_ws.verify_upgrade(_creds(f"https://127.0.0.1:8084/mqtt?{forged}", dict(good.headers)), SECRETS, NOW)


# ---- disconnectAfterInSeconds and refreshAfterInSeconds
class FakeConn:
    def __init__(self) -> None:
        self.closed = False
        self.client_id = "dev1"
        self.peer_ip = "127.0.0.1"
        self.generation = 0
        self.identity: Authentication | None = None
        self.principal: str | None = None
        self.authorizer: Any = None
        self.disconnect_reason: str | None = None
        self.closed_with: tuple[str, int | None] | None = None

    def close(self, reason: str, code: int | None = None) -> None:
        self.closed, self.closed_with = True, (reason, code)


class FakeBroker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.registry = type("R", (), {"generation": 0})()
        self.denials: list[str] = []

    def denied(self, action: str) -> None:
        self.denials.append(action)


class FakeCustom:
    kind = "custom-authorizer"

    def __init__(self) -> None:
        self.next: Authentication | None = None
        self.calls = 0

    async def authenticate(self, creds: Credentials) -> Authentication:
        self.calls += 1
        assert self.next is not None
        return self.next


def identity(topic: str, refusal: str | None = None) -> Authentication:
    context = ConnectionContext(client_id="dev1", region="us-east-1", account="123456789012")
    if refusal:
        return Authentication.refused("custom-authorizer", refusal)
    return Authentication("custom-authorizer", principal="abc", context=context,
                          documents=(parse_policy_document(policy(topic)),), disconnect_after_s=3600,
                          refresh_after_s=300)  # fmt: skip


def test_refresh_applies_new_policies_then_refusal_and_ttl_disconnect() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        custom = FakeCustom()
        hook = ConnectAuth(FakeBroker(loop), custom, None)  # type: ignore[arg-type]
        conn, other = FakeConn(), FakeConn()
        for c in (conn, other):
            c.identity = identity("a")
            assert hook.authorize(c) is None  # type: ignore[arg-type]
            hook._timed[c] = _Timers(Credentials(door="alpn"), 3600.0, 300.0)  # type: ignore[index]
        assert conn.authorizer.can_publish("a") and not conn.authorizer.can_publish("b")
        hook.sweep(299.0)
        assert custom.calls == 0
        custom.next = identity("b")
        hook.sweep(300.0)
        await asyncio.sleep(0.01)
        assert custom.calls == 2 and not conn.closed
        assert conn.authorizer.can_publish("b") and not conn.authorizer.can_publish("a")  # new policies, live
        custom.next = identity("b", refusal="token revoked")
        hook._timed[conn].refresh_at = 600.0  # type: ignore[index]
        hook.sweep(600.0)
        await asyncio.sleep(0.01)
        assert conn.closed and conn.closed_with is not None and conn.closed_with[1] == reasons.NOT_AUTHORIZED
        hook.sweep(3600.0)
        assert other.closed and other.disconnect_reason == "CUSTOMAUTH_TTL_EXPIRATION"
        assert other.closed_with is not None and other.closed_with[1] == reasons.MAXIMUM_CONNECT_TIME
        assert not hook._timed

    asyncio.run(scenario())
