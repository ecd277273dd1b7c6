"""Digests and opaque identifiers for SQS: the MD5s clients check, dedup IDs, message IDs, receipt handles (pure)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.sinks.sqs.attributes import MessageAttribute
from gateway.sinks.sqs.exceptions import ReceiptHandleIsInvalid

_STRING_TRANSPORT = 1
_BINARY_TRANSPORT = 2


def md5_of_body(body: str) -> str:
    """`MD5OfMessageBody`: hex MD5 of the UTF-8 body (reference §8, vector M1)."""
    return hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()


def md5_of_attributes(attrs: Mapping[str, MessageAttribute]) -> str:
    """`MD5OfMessageAttributes` / `MD5OfMessageSystemAttributes` (reference §8, vectors M2-M4).

    Attributes sorted by name; each is length-prefixed (4-byte big-endian) name, length-prefixed full DataType
    (custom labels included, e.g. `String.x`), one transport byte (1 String/Number, 2 Binary), length-prefixed value.
    """
    digest = hashlib.md5(usedforsecurity=False)

    def put(data: bytes) -> None:
        digest.update(struct.pack("!I", len(data)))
        digest.update(data)

    for name in sorted(attrs):
        attr = attrs[name]
        put(name.encode("utf-8"))
        put(attr.data_type.encode("utf-8"))
        if attr.data_type.startswith("Binary"):
            digest.update(bytes([_BINARY_TRANSPORT]))
            put(attr.binary_value or b"")
        else:
            digest.update(bytes([_STRING_TRANSPORT]))
            put((attr.string_value or "").encode("utf-8"))
    return digest.hexdigest()


def content_dedup_id(body: str) -> str:
    """The deduplication ID of a FIFO queue with ContentBasedDeduplication: SHA-256 of the body (attributes ignored)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def derive_message_id(seed: str, counter: int) -> str:
    """A UUID-shaped message ID, deterministic in (`seed`, `counter`) so the core needs no randomness."""
    raw = bytearray(hashlib.sha256(f"{seed}\x00{counter}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4 layout, as AWS's IDs look
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def queue_tag(arn: str) -> str:
    """A short tag binding receipt handles to one queue."""
    return hashlib.sha256(arn.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ReceiptHandle:
    """What a receipt handle encodes: the queue, the message, and which receive produced it."""

    queue_tag: str
    message_id: str
    receive_count: int
    received_at: int

    def encode(self) -> str:
        text = f"v1|{self.queue_tag}|{self.message_id}|{self.receive_count}|{self.received_at}"
        return base64.urlsafe_b64encode(text.encode()).decode()

    @staticmethod
    def decode(handle: str, expected_tag: str) -> ReceiptHandle:
        """Parse a handle; ReceiptHandleIsInvalid if it is malformed or belongs to another queue."""
        try:
            parts = base64.urlsafe_b64decode(handle.encode("ascii")).decode().split("|")
            if len(parts) != 5 or parts[0] != "v1" or parts[1] != expected_tag:
                raise ValueError(handle)
            return ReceiptHandle(parts[1], parts[2], int(parts[3]), int(parts[4]))
        except (ValueError, UnicodeError, binascii.Error):
            raise ReceiptHandleIsInvalid(
                f'The input receipt handle "{handle}" is not a valid receipt handle.'
            ) from None
