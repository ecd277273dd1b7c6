"""Presigned S3 URLs on edgesim's own S3 API: made for job documents, and held to their expiry when used."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.api.sigv4 import InvalidSignatureException, UnrecognizedClientException
from gateway.identity.sigv4_sign import canonical_headers, signature

DEFAULT_KEY = ("edgesim", "edgesim")


class S3Presigner:
    """Signs GetObject URLs with SigV4 query parameters (the first configured credentials, or a local pair)."""

    def __init__(self, endpoint: Callable[[], str], region: str, credentials: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.region = region
        self.key = next(iter(credentials.items()), DEFAULT_KEY)

    @cache  # noqa: B019 - one client per presigner, for the gateway's lifetime
    def _client(self, endpoint: str) -> Any:
        import botocore.session
        from botocore.config import Config

        return botocore.session.Session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.region,
            aws_access_key_id=self.key[0],
            aws_secret_access_key=self.key[1],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def __call__(self, bucket: str, key: str, expires_s: int) -> str:
        client = self._client(self.endpoint())
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url


def expired(request: web.Request, now_ms: int) -> web.Response | None:
    """S3's answer to a SigV4 presigned URL used after X-Amz-Date + X-Amz-Expires, else None."""
    query = request.rel_url.query
    if "X-Amz-Expires" not in query or "X-Amz-Date" not in query:
        return None
    try:
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires_s = int(query["X-Amz-Expires"])
    except ValueError:
        return None
    if now_ms / 1000 <= signed.timestamp() + expires_s:
        return None
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        "<Message>Request has expired</Message></Error>"
    )
    return web.Response(status=403, body=body.encode(), content_type="application/xml")


def is_presigned(request: web.Request) -> bool:
    return "X-Amz-Signature" in request.rel_url.query and "X-Amz-Credential" in request.rel_url.query


def verify_query(request: web.Request, secrets: Mapping[str, str]) -> None:
    """Check a SigV4 query-string signature (a presigned URL) against the configured secrets; AWS's 403 errors."""
    query = request.rel_url.query
    scope = query.get("X-Amz-Credential", "").split("/")
    secret = secrets.get(scope[0]) if len(scope) == 5 else None
    if secret is None:
        raise UnrecognizedClientException("The AWS access key Id you provided does not exist in our records.")
    # SigV4's canonical query: every parameter but the signature, each side encoded as RFC 3986 asks, sorted.
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items() if k != "X-Amz-Signature")
    signed_headers = query.get("X-Amz-SignedHeaders", "host").split(";")
    expected = signature(
        secret,
        scope[1:],
        query.get("X-Amz-Date", ""),
        method=request.method,
        path=request.rel_url.raw_path or "/",
        query="&".join(f"{k}={v}" for k, v in pairs),
        headers=canonical_headers(request.headers.get, signed_headers),
        signed=signed_headers,
        payload_hash="UNSIGNED-PAYLOAD",
    )
    if not hmac.compare_digest(expected.encode(), query.get("X-Amz-Signature", "").encode("utf-8", "surrogatepass")):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided."
        )
