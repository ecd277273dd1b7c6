"""The Jobs service's errors, with AWS's codes (control plane, HTTPS data plane) and MQTT reject codes."""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.errors import (
    AwsError,
    ConflictException,
    InvalidRequestException,
    LimitExceededException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionConflictException,
)

__all__ = [
    "CertificateValidationException",
    "ConflictException",
    "InvalidRequestException",
    "InvalidStateTransitionException",
    "JobsRejected",
    "LimitExceededException",
    "ResourceAlreadyExistsException",
    "ResourceNotFoundException",
    "TerminalStateException",
    "VersionConflictException",
    "mqtt_code",
]


class InvalidStateTransitionException(AwsError):
    code = "InvalidStateTransitionException"
    http_status = 409

    def __init__(self, message: str, execution_state: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.execution_state = execution_state


class TerminalStateException(AwsError):
    """The data plane's answer when a job execution asked about has reached a terminal state."""

    code = "TerminalStateException"
    http_status = 410


class CertificateValidationException(AwsError):
    code = "CertificateValidationException"
    http_status = 400


class JobsRejected(AwsError):
    """A data-plane request refused before it reached the service (bad topic, bad JSON)."""

    code = "InvalidRequestException"
    http_status = 400
    mqtt: ClassVar[str] = "InvalidRequest"

    def __init__(self, mqtt_code: str, message: str) -> None:
        super().__init__(message)
        self.mqtt_reject = mqtt_code


_MQTT_CODES = {
    "InvalidRequestException": "InvalidRequest",
    "ResourceNotFoundException": "ResourceNotFound",
    "InvalidStateTransitionException": "InvalidStateTransition",
    "VersionConflictException": "VersionMismatch",
    "TerminalStateException": "TerminalStateReached",
    "ThrottlingException": "RequestThrottled",
    "SerializationException": "InvalidJson",
}


def mqtt_code(error: AwsError) -> str:
    """The `code` of a `/rejected` payload for an error the HTTPS API would have raised."""
    if isinstance(error, JobsRejected):
        return error.mqtt_reject
    return _MQTT_CODES.get(error.code, "InternalError")
