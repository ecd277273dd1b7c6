"""Typed errors: one root, and one class per AWS error code with its HTTP status."""

from __future__ import annotations

from typing import ClassVar


class EdgesimError(Exception):
    """Root of every error edgesim raises on purpose."""


class AwsError(EdgesimError):
    """An error a client sees, carrying AWS's error code, HTTP status and wording."""

    code: ClassVar[str] = "InternalFailureException"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidRequestException(AwsError):
    code = "InvalidRequestException"
    http_status = 400


class ResourceNotFoundException(AwsError):
    code = "ResourceNotFoundException"
    http_status = 404


class ResourceAlreadyExistsException(AwsError):
    code = "ResourceAlreadyExistsException"
    http_status = 409


class ConflictException(AwsError):
    code = "ConflictException"
    http_status = 409


class VersionConflictException(AwsError):
    code = "VersionConflictException"
    http_status = 409


class DeleteConflictException(AwsError):
    code = "DeleteConflictException"
    http_status = 409


class CertificateStateException(AwsError):
    code = "CertificateStateException"
    http_status = 406


class CertificateValidationException(AwsError):
    code = "CertificateValidationException"
    http_status = 400


class RegistrationCodeValidationException(AwsError):
    code = "RegistrationCodeValidationException"
    http_status = 400


class CertificateConflictException(AwsError):
    code = "CertificateConflictException"
    http_status = 409


class MalformedPolicyException(AwsError):
    code = "MalformedPolicyException"
    http_status = 400


class VersionsLimitExceededException(AwsError):
    code = "VersionsLimitExceededException"
    http_status = 409


class LimitExceededException(AwsError):
    code = "LimitExceededException"
    http_status = 410


class UnauthorizedException(AwsError):
    code = "UnauthorizedException"
    http_status = 401


class ForbiddenException(AwsError):
    code = "ForbiddenException"
    http_status = 403


class ThrottlingException(AwsError):
    code = "ThrottlingException"
    http_status = 429


class ServiceUnavailableException(AwsError):
    code = "ServiceUnavailableException"
    http_status = 503


class SerializationException(AwsError):
    """A JSON 1.0/1.1 service's answer to a body that is not JSON or whose members have the wrong JSON types."""

    code = "SerializationException"
    http_status = 400


class RequestEntityTooLargeException(AwsError):
    code = "RequestEntityTooLargeException"
    http_status = 413


class InternalFailureException(AwsError):
    code = "InternalFailureException"
    http_status = 500


# The JSON 1.1 services (Kinesis, Firehose) answer every client error with HTTP 400, "not found" included.
class InvalidArgumentException(AwsError):
    code = "InvalidArgumentException"
    http_status = 400


class JsonResourceNotFoundException(AwsError):
    code = "ResourceNotFoundException"
    http_status = 400


class ResourceInUseException(AwsError):
    code = "ResourceInUseException"
    http_status = 400


class ConfigError(EdgesimError):
    """The configuration (file, environment or flags) is invalid."""
