"""Presigned S3 URLs: made with botocore for edgesim's S3 API, verified and expired the way S3 does."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.api import presign
from gateway.api.sigv4 import InvalidSignatureException, UnrecognizedClientException


def _request(url: str) -> object:
    parts = urlsplit(url)
    return make_mocked_request("GET", f"{parts.path}?{parts.query}", headers=CIMultiDict({"Host": parts.netloc}))


def test_a_presigned_url_verifies_until_tampered_or_expired() -> None:
    signer = presign.S3Presigner(lambda: "http://127.0.0.1:4566", "us-east-1", {"AKID": "s3cret"})
    url = signer("fw-bucket", "images/v2 final.bin", 120)
    request = _request(url)
    assert presign.is_presigned(request)  # type: ignore[arg-type]
    presign.verify_query(request, {"AKID": "s3cret"})  # type: ignore[arg-type]
    with pytest.raises(InvalidSignatureException):
        presign.verify_query(_request(url.replace("fw-bucket", "other")), {"AKID": "s3cret"})  # type: ignore[arg-type]
    with pytest.raises(UnrecognizedClientException):
        presign.verify_query(request, {"OTHER": "s3cret"})  # type: ignore[arg-type]
    signed_at = presign.datetime.strptime(request.rel_url.query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")  # type: ignore[attr-defined]
    at_ms = int(signed_at.replace(tzinfo=presign.UTC).timestamp() * 1000)
    assert presign.expired(request, at_ms + 120_000) is None  # type: ignore[arg-type]
    denied = presign.expired(request, at_ms + 121_000)  # type: ignore[arg-type]
    assert denied is not None and denied.status == 403 and b"Request has expired" in denied.body  # type: ignore[operator]
