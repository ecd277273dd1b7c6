"""Compact JSON encoding for the per-message paths (orjson, ~10x the standard library's speed)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; integers beyond 64 bits (valid JSON, rare) fall back to the standard encoder."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


MAX_DEPTH = 1024  # orjson's nesting limit; nothing AWS accepts comes near it


def loads_body(body: bytes | str) -> Any:
    """Parse untrusted JSON (a request body): ValueError for anything that is not UTF-8 JSON text, nests deeper than
    MAX_DEPTH, or holds an escaped lone surrogate (no Unicode text: it could be neither stored nor sent on).
    Integers beyond 64 bits come back as floats."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
