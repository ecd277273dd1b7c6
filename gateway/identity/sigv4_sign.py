"""SigV4's signature over a canonical request (pure): the one derivation behind the REST API's Authorization header,
presigned URLs and the MQTT WebSocket upgrade. Each caller builds the parts its service canonicalizes its own way
(S3 signs the path as sent, the others encode it once more; a presigned URL leaves its signature out of the query)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

ALGORITHM = "AWS4-HMAC-SHA256"


def canonical_headers(get: Callable[[str, str], str], signed: Sequence[str]) -> str:
    """The signed headers as SigV4 lists them: `name:value` with runs of spaces folded, one per line."""
    return "".join(f"{name}:{' '.join(get(name, '').split())}\n" for name in signed)


def signature(
    secret: str,
    scope: Sequence[str],
    amz_date: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: str,
    signed: Sequence[str],
    payload_hash: str,
) -> str:
    """The hex signature of a request whose canonical path, query and headers are given (scope: date, region,
    service, aws4_request)."""
    canonical = "\n".join([method.upper(), path, query, headers, ";".join(signed), payload_hash])
    to_sign = "\n".join([ALGORITHM, amz_date, "/".join(scope), hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
