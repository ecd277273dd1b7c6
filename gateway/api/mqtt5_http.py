"""MQTT 5 fields of an HTTP publish (HTTPS publish door and iot-data Publish), as boto3 sends them (reference §1.6):
query parameters contentType, responseTopic, messageExpiry; headers x-amz-mqtt5-user-properties (base64 of JSON,
which botocore JSON-encodes once more), x-amz-mqtt5-payload-format-indicator and x-amz-mqtt5-correlation-data."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import InvalidRequestException
from mqttwire import properties as mp
from mqttwire.topics import topic_name_error

USER_PROPERTIES_HEADER = "x-amz-mqtt5-user-properties"
FORMAT_HEADER = "x-amz-mqtt5-payload-format-indicator"
CORRELATION_HEADER = "x-amz-mqtt5-correlation-data"


def user_properties(encoded: str) -> list[tuple[str, str]]:
    """`[{"name": "value"}, ...]` (or a JSON string of it), base64-encoded, as (name, value) pairs in order."""
    try:
        value: Any = orjson.loads(base64.b64decode(encoded, validate=True))
        if isinstance(value, str):
            value = orjson.loads(value)
    except (binascii.Error, ValueError):
        raise InvalidRequestException("userProperties must be base64-encoded JSON") from None
    if not isinstance(value, list):
        raise InvalidRequestException("userProperties must be a JSON array of objects")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidRequestException("userProperties must be a JSON array of objects")
        for name, text in item.items():
            if not isinstance(text, str):
                raise InvalidRequestException(f"userProperties value of {name!r} must be a string")
            pairs.append((name, text))
    return pairs


def properties(
    content_type: str | None,
    response_topic: str | None,
    message_expiry: int | str | None,
    user_props: str | None,
    payload_format: str | None,
    correlation: str | None,
) -> mp.Properties | None:
    """The message properties these fields describe, None when there are none; InvalidRequestException if bad."""
    props: mp.Properties = {}
    if payload_format is not None:
        if payload_format not in ("UNSPECIFIED_BYTES", "UTF8_DATA"):
            raise InvalidRequestException("payloadFormatIndicator must be UNSPECIFIED_BYTES or UTF8_DATA")
        props[mp.PAYLOAD_FORMAT_INDICATOR] = 1 if payload_format == "UTF8_DATA" else 0
    if content_type is not None:
        props[mp.CONTENT_TYPE] = content_type
    if response_topic is not None:
        problem = topic_name_error(response_topic)
        if problem is not None:
            raise InvalidRequestException(f"responseTopic: {problem}")
        props[mp.RESPONSE_TOPIC] = response_topic
    if correlation is not None:
        try:
            props[mp.CORRELATION_DATA] = base64.b64decode(correlation, validate=True)
        except binascii.Error:
            raise InvalidRequestException("correlationData must be base64") from None
    if message_expiry is not None:
        try:
            expiry = int(message_expiry)
        except ValueError:
            raise InvalidRequestException("messageExpiry must be a number of seconds") from None
        if expiry < 0:
            raise InvalidRequestException("messageExpiry must not be negative")
        props[mp.MESSAGE_EXPIRY_INTERVAL] = expiry
    if user_props is not None:
        props[mp.USER_PROPERTY] = user_properties(user_props)
    return props or None


def from_request(query: Mapping[str, str], headers: Mapping[str, str]) -> mp.Properties | None:
    return properties(
        query.get("contentType"),
        query.get("responseTopic"),
        query.get("messageExpiry"),
        headers.get(USER_PROPERTIES_HEADER),
        headers.get(FORMAT_HEADER),
        headers.get(CORRELATION_HEADER),
    )
