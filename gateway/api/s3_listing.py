"""ListObjects(V2) paging over sorted keys: prefix, delimiter (common prefixes), max-keys, continuation (pure)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.errors import AwsError

MAX_KEYS = 1000


class InvalidArgument(AwsError):
    code = "InvalidArgument"
    http_status = 400


@dataclass
class Page:
    keys: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str | None = None  # the last key or common prefix returned (the next page starts after it)


def encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode()


def decode_token(token: str) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("The continuation token provided is incorrect") from exc
    if not isinstance(after, str):
        raise InvalidArgument("The continuation token provided is incorrect")
    return after


def page(keys: Iterable[str], prefix: str, delimiter: str, max_keys: int, after: str = "") -> Page:
    """One page of `keys` (sorted) under `prefix`, starting after `after`; with a delimiter, the keys that share a
    prefix up to the delimiter are rolled up into one common prefix, which counts as one entry."""
    out = Page()
    for key in keys:
        if not key.startswith(prefix) or key <= after:
            continue
        entry, is_prefix = key, False
        if delimiter:
            rest = key[len(prefix) :]
            at = rest.find(delimiter)
            if at >= 0:
                entry, is_prefix = prefix + rest[: at + len(delimiter)], True
        if is_prefix and (entry == out.last or (after and after == entry)):
            continue  # rolled into a prefix already returned (on this page or the one before)
        if len(out.keys) + len(out.prefixes) >= max_keys:
            out.truncated = True
            break
        (out.prefixes if is_prefix else out.keys).append(entry)
        out.last = entry
    return out
