"""AWS-worded validation of registry names and attributes."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.errors import InvalidRequestException

THING_NAME = re.compile(r"[a-zA-Z0-9:_-]+")
POLICY_NAME = re.compile(r"[\w+=,.@-]+")
ATTRIBUTE_NAME = re.compile(r"[a-zA-Z0-9_.,@/:#-]+")
ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]*")
CERT_ID = re.compile(r"(0x)?[a-fA-F0-9]+")


def _constraint(value: str, field: str, constraint: str) -> InvalidRequestException:
    return InvalidRequestException(
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
    )


def check_name(value: str, field: str, pattern: re.Pattern[str] = THING_NAME, max_len: int = 128) -> str:
    if not 1 <= len(value) <= max_len:
        raise _constraint(
            value, field, f"Member must have length less than or equal to {max_len} and greater than or equal to 1"
        )
    if not pattern.fullmatch(value):
        raise _constraint(value, field, f"Member must satisfy regular expression pattern: {pattern.pattern}")
    return value


def check_attributes(attributes: Mapping[str, str], field: str = "attributePayload.attributes") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequestException(f"{field}: attribute names and values must be strings")
        check_name(name, f"{field}.{name}", ATTRIBUTE_NAME, 128)
        if len(value) > 800:
            raise _constraint(value, f"{field}.{name}", "Member must have length less than or equal to 800")
        if not ATTRIBUTE_VALUE.fullmatch(value):
            raise _constraint(
                value, f"{field}.{name}", f"Member must satisfy regular expression pattern: {ATTRIBUTE_VALUE.pattern}"
            )
        out[name] = value
    return out


def check_certificate_id(value: str) -> str:
    if len(value) != 64 or not CERT_ID.fullmatch(value):
        raise _constraint(value, "certificateId", "Member must have length 64 and be hexadecimal")
    return value.lower()
