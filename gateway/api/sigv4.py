"""SigV4 request verification, for gateways started with --require-sigv4 (pure: no I/O, time passed in)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from gateway.errors import AwsError
from gateway.identity.sigv4_sign import canonical_headers
from gateway.identity.sigv4_sign import signature as sign

MAX_SKEW_S = 15 * 60


class InvalidSignatureException(AwsError):
    code = "InvalidSignatureException"
    http_status = 403


class UnrecognizedClientException(AwsError):
    code = "UnrecognizedClientException"
    http_status = 403


class MissingAuthenticationTokenException(AwsError):
    code = "MissingAuthenticationTokenException"
    http_status = 403


def _parse_authorization(header: str) -> tuple[str, list[str], list[str], str]:
    """(access key, credential scope parts, signed headers, signature) of an AWS4-HMAC-SHA256 header."""
    if not header.startswith("AWS4-HMAC-SHA256 "):
        raise MissingAuthenticationTokenException("Authorization header is not AWS4-HMAC-SHA256")
    fields = dict(part.strip().split("=", 1) for part in header[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in part)
    try:
        credential = fields["Credential"].split("/")
        return credential[0], credential[1:], fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, IndexError) as exc:
        raise InvalidSignatureException("Authorization header is incomplete") from exc


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    now: datetime,
) -> str:
    """Check a request's signature the way AWS does; returns the access key, raises 403 errors otherwise."""
    header = headers.get("Authorization")
    if not header:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    access_key, scope, signed_headers, signature = _parse_authorization(header)
    secret = secrets.get(access_key)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    if len(scope) != 4 or scope[3] != "aws4_request":
        raise InvalidSignatureException("Credential scope must be date/region/service/aws4_request")
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidSignatureException("X-Amz-Date is missing or malformed") from exc
    if abs((now - signed_at).total_seconds()) > MAX_SKEW_S:
        raise InvalidSignatureException("Signature expired: the request time is too far from the server time")
    pairs = sorted(part.partition("=")[::2] for part in raw_query.split("&") if part)
    payload_hash = headers.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest()
    expected = sign(
        secret,
        scope,
        amz_date,
        method=method,
        # S3 signs the path as sent; every other service encodes it once more.
        path=(raw_path or "/") if scope[2] == "s3" else quote(raw_path or "/", safe="/~"),
        query="&".join(f"{k}={v}" for k, v in pairs),
        headers=canonical_headers(headers.get, signed_headers),
        signed=signed_headers,
        payload_hash=payload_hash,
    )
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided."
        )
    return access_key
