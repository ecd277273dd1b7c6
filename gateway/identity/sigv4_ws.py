"""SigV4 on the MQTT WebSocket upgrade: a presigned `/mqtt?X-Amz-Algorithm=AWS4-HMAC-SHA256&...` URL (the session
token, when there is one, appended after signing as AWS IoT wants it) or an `Authorization` header. The access key's
permissions are the IoT policies attached to it (`attach-policy --target ACCESS_KEY_ID`), standing in for the IAM
policies that govern SigV4 clients on AWS."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from gateway.errors import EdgesimError
from gateway.identity.authn import Authentication, Credentials
from gateway.identity.authorizer import ConnectionContext
from gateway.identity.policy_doc import PolicyDocument
from gateway.identity.sigv4_sign import canonical_headers, signature

KIND = "sigv4"
MAX_SKEW_S = 15 * 60
MAX_EXPIRES_S = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class SignatureRefused(EdgesimError):
    """Why a signed upgrade is refused (HTTP 403 before the WebSocket opens)."""


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw_query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key.replace("+", "%20")), unquote(value.replace("+", "%20"))))
    return pairs


def _expected(method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str], signed: list[str],
              amz_date: str, scope: list[str], secret: str, payload_hash: str) -> str:  # fmt: skip
    lowered = {k.lower(): v for k, v in headers.items()}
    return signature(
        secret,
        scope,
        amz_date,
        method=method,
        path=quote(path or "/", safe="/~"),
        query="&".join(f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in query)),
        headers=canonical_headers(lowered.get, signed),
        signed=signed,
        payload_hash=payload_hash,
    )


def is_signed(creds: Credentials) -> bool:
    auth = next((v for k, v in creds.headers.items() if k.lower() == "authorization"), "")
    return creds.query.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256" or auth.startswith("AWS4-HMAC-SHA256 ")


def verify_upgrade(
    creds: Credentials, secrets: Mapping[str, str], now: datetime, tokens: Mapping[str, str] | None = None
) -> str:
    """The access key that signed this upgrade request; SignatureRefused says why not. Temporary credentials
    (`tokens`: access key -> session token) must come with their session token."""
    lowered = {k.lower(): v for k, v in creds.headers.items()}
    query = _pairs(creds.raw_query)
    params = dict(query)
    if params.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256":
        credential = params.get("X-Amz-Credential", "")
        signed = params.get("X-Amz-SignedHeaders", "host").split(";")
        signature = params.get("X-Amz-Signature", "")
        amz_date = params.get("X-Amz-Date", "")
        expires_text = params.get("X-Amz-Expires")
        unsigned = [(k, v) for k, v in query if k != "X-Amz-Signature"]
        variants = [unsigned]
        if "X-Amz-Security-Token" in params:  # appended after signing (AWS IoT), or signed with the rest
            variants.insert(0, [(k, v) for k, v in unsigned if k != "X-Amz-Security-Token"])
    else:
        header = lowered.get("authorization", "")
        fields = dict(p.strip().split("=", 1) for p in header[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in p)
        credential, signature = fields.get("Credential", ""), fields.get("Signature", "")
        signed = fields.get("SignedHeaders", "host").split(";")
        amz_date = lowered.get("x-amz-date", "")
        expires_text = None
        variants = [query]
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureRefused("the credential must be ACCESS_KEY/date/region/service/aws4_request")
    access_key, scope = parts[0], parts[1:]
    secret = secrets.get(access_key)
    if secret is None:
        raise SignatureRefused(f"the access key {access_key} is not known to this gateway (--require-sigv4)")
    wanted_token = (tokens or {}).get(access_key)
    if wanted_token is not None:
        given = params.get("X-Amz-Security-Token") or lowered.get("x-amz-security-token") or ""
        if not hmac.compare_digest(given.encode(), wanted_token.encode()):
            raise SignatureRefused("the security token included in the request is invalid")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRefused("X-Amz-Date is missing or malformed") from None
    if expires_text is not None:
        try:
            expires = int(expires_text)
        except ValueError:
            raise SignatureRefused("X-Amz-Expires is not a number") from None
        if not 1 <= expires <= MAX_EXPIRES_S:
            raise SignatureRefused(f"X-Amz-Expires must be between 1 and {MAX_EXPIRES_S}")
        if now > signed_at + timedelta(seconds=expires) or signed_at - now > timedelta(seconds=MAX_SKEW_S):
            raise SignatureRefused("the presigned URL has expired")
    elif abs((now - signed_at).total_seconds()) > MAX_SKEW_S:
        raise SignatureRefused("the signature has expired: the request time is too far from the server time")
    payload_hashes = [lowered.get("x-amz-content-sha256") or EMPTY_SHA256, "UNSIGNED-PAYLOAD"]
    for variant in variants:
        for payload_hash in payload_hashes:
            expected = _expected(creds.method, creds.path, variant, creds.headers, signed, amz_date, scope, secret,
                                 payload_hash)  # fmt: skip
            if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
                return access_key
    raise SignatureRefused("the request signature we calculated does not match the signature you provided")


class SigV4Authenticator:
    """SigV4-signed WebSocket upgrades; the principal is the access key, its policies those attached to it."""

    kind = KIND

    def __init__(self, secrets: Callable[[], Mapping[str, str]], policies: Callable[[str], tuple[PolicyDocument, ...]],
                 now: Callable[[], datetime], region: str, account: str,
                 tokens: Callable[[], Mapping[str, str]] = dict) -> None:  # fmt: skip
        self.secrets = secrets
        self.tokens = tokens
        self.policies = policies
        self.now = now
        self.region = region
        self.account = account

    def claims(self, creds: Credentials) -> bool:
        return creds.door == "wss" and creds.cert_der is None and is_signed(creds)

    def grant(self, creds: Credentials) -> Authentication:
        try:
            access_key = verify_upgrade(creds, self.secrets(), self.now(), self.tokens())
        except SignatureRefused as exc:
            return Authentication.refused(KIND, str(exc))
        return self._for_key(access_key, creds.client_id, creds.source_ip)

    def _for_key(self, access_key: str, client_id: str, source_ip: str | None) -> Authentication:
        context = ConnectionContext(client_id=client_id, region=self.region, account=self.account,
                                    source_ip=source_ip)  # fmt: skip
        return Authentication(KIND, principal=access_key, context=context, documents=self.policies(access_key),
                              reload=lambda cid, ip: self._for_key(access_key, cid, ip))  # fmt: skip

    async def authenticate(self, creds: Credentials) -> Authentication:
        return self.grant(creds)
