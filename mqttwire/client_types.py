"""What users of mqttwire.client handle: its errors, the incoming message, publish properties by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mqttwire import properties as mp
from mqttwire import reasons
from mqttwire.frame import decode_varint
from mqttwire.packets import V5, V311
from mqttwire.properties import Properties

__all__ = ["ConnectError", "Done", "Message", "MqttError", "PublishError", "call_done", "property_bytes",
           "publish_properties"]  # fmt: skip

log = logging.getLogger("mqttwire.client")


class MqttError(Exception):
    """An MQTT operation failed: not connected, connection lost, refused, or no answer in time. `reason_code` is the
    MQTT 5 reason the broker gave, when it gave one (a refused PUBLISH, a server DISCONNECT)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectError(MqttError):
    """The broker refused CONNECT; `rc` is the CONNACK's return code (3.1.1) or reason code (5)."""

    def __init__(self, rc: int, version: int = V311, reason_string: str | None = None) -> None:
        if version == V5:
            text = f"Connection Refused: {reasons.name(rc)} (CONNACK reason 0x{rc:02X})"
        else:
            text = f"Connection Refused: {reasons.V3_NAMES.get(rc, 'unknown reason')} (CONNACK rc={rc})"
        super().__init__(f"{text}: {reason_string}" if reason_string else text, rc)
        self.rc = rc


class PublishError(MqttError):
    """The broker refused a QoS 1 PUBLISH: an MQTT 5 PUBACK with a reason code of 0x80 or above."""


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH; `properties` (MQTT 5) keyed by mqttwire.properties identifiers, topic alias resolved."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = None

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return list(self.properties.get(mp.USER_PROPERTY, ())) if self.properties else []


Done = Callable[["MqttError | None"], None]


def publish_properties(
    *,
    user_properties: Sequence[tuple[str, str]] = (),
    content_type: str | None = None,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry: int | None = None,
    payload_format: int | None = None,
) -> Properties:
    """An MQTT 5 PUBLISH's properties by name; `mp.encode_properties` of it can be handed to publish() as bytes, to
    encode once for many messages."""
    props: Properties = {}
    if payload_format is not None:
        props[mp.PAYLOAD_FORMAT_INDICATOR] = payload_format
    if message_expiry is not None:
        props[mp.MESSAGE_EXPIRY_INTERVAL] = message_expiry
    if content_type is not None:
        props[mp.CONTENT_TYPE] = content_type
    if response_topic is not None:
        props[mp.RESPONSE_TOPIC] = response_topic
    if correlation_data is not None:
        props[mp.CORRELATION_DATA] = correlation_data
    if user_properties:
        props[mp.USER_PROPERTY] = list(user_properties)
    return props


def property_bytes(properties: Properties | bytes | None) -> bytes:
    """The properties themselves, without the block's length."""
    if properties is None:
        return b""
    if not isinstance(properties, bytes):
        if mp.TOPIC_ALIAS in properties:
            raise ValueError("the client assigns topic aliases itself (topic_aliases=True)")
        properties = mp.encode_properties(properties)
    _, start = decode_varint(properties, 0, len(properties))
    return properties[start:]


def call_done(done: Done, error: MqttError | None, client_id: str) -> None:
    try:
        done(error)
    except Exception:
        log.exception("%s: publish callback failed", client_id)
