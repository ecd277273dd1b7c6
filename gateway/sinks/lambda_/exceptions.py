"""Lambda errors: AWS codes, and the JSON body members (Type, Reason) AWS sends with them."""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.errors import AwsError


class LambdaError(AwsError):
    """A Lambda error; `extra` members are added to the JSON body (Type, Reason), as AWS sends them."""

    extra: ClassVar[dict[str, str]] = {"Type": "User"}

    def body(self) -> dict[str, Any]:
        return {"Type": "User", "message": self.message, **self.extra}


class LambdaNotFound(LambdaError):
    code = "ResourceNotFoundException"
    http_status = 404


class ResourceConflictException(LambdaError):
    code = "ResourceConflictException"
    http_status = 409


class InvalidParameterValueException(LambdaError):
    code = "InvalidParameterValueException"
    http_status = 400


class InvalidRequestContentException(LambdaError):
    code = "InvalidRequestContentException"
    http_status = 400


class RequestTooLargeException(LambdaError):
    code = "RequestTooLargeException"
    http_status = 413


class ServiceException(LambdaError):
    code = "ServiceException"
    http_status = 500
    extra = {"Type": "Service"}


class TooManyRequestsException(LambdaError):
    code = "TooManyRequestsException"
    http_status = 429

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {"Type": "User", "message": self.message, "Reason": self.reason}


class PreconditionFailedException(LambdaError):
    code = "PreconditionFailedException"
    http_status = 412
