"""Why the intake refused a message, each with its AWS error (HTTP doors) and MQTT 5 reason code (MQTT doors).

An MQTT 3.1.1 client has no way to hear a reason: its connection is closed, as AWS IoT does.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import AwsError, ForbiddenException, InvalidRequestException
from mqttwire import reasons


class PublishRefused(AwsError):
    """Base of every intake refusal."""

    reason_code: ClassVar[int] = reasons.UNSPECIFIED_ERROR
    # True when an MQTT 5 client is disconnected with the reason instead of getting it in its PUBACK.
    disconnects: ClassVar[bool] = False


class TopicNameInvalid(PublishRefused, InvalidRequestException):
    reason_code = reasons.TOPIC_NAME_INVALID


class PayloadTooLarge(PublishRefused, InvalidRequestException):
    reason_code = reasons.PACKET_TOO_LARGE
    disconnects = True


class PayloadFormatInvalid(PublishRefused, InvalidRequestException):
    reason_code = reasons.PAYLOAD_FORMAT_INVALID


class PublishNotAuthorized(PublishRefused, ForbiddenException):
    """`iot:Publish` (or `iot:RetainPublish` for a retained message) is not allowed."""

    reason_code = reasons.NOT_AUTHORIZED

    def __init__(self, message: str, action: str = "iot:Publish") -> None:
        super().__init__(message)
        self.action = action
