"""AWS's event-stream binary framing (`application/vnd.amazon.eventstream`), the encoding botocore decodes for
SubscribeToShard: prelude (total length, headers length, CRC32), string headers, payload, message CRC32 (pure)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name)]) + raw_name + bytes([_STRING]) + len(raw_value).to_bytes(2, "big") + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(encoded).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + encoded + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def event(event_type: str, body: Any) -> bytes:
    return frame(
        {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"},
        json.dumps(body).encode(),
    )


def exception(error_type: str, message: str) -> bytes:
    return frame(
        {":message-type": "exception", ":exception-type": error_type, ":content-type": "application/json"},
        json.dumps({"message": message}).encode(),
    )
