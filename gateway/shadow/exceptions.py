"""Shadow errors: the typed AWS errors of the HTTP API and `ShadowRejected`, the `/rejected` document of the MQTT
protocol."""

from __future__ import annotations

from typing import Final

from gateway.errors import (
    AwsError,
    ConflictException,
    EdgesimError,
    ForbiddenException,
    InternalFailureException,
    InvalidRequestException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    ServiceUnavailableException,
    ThrottlingException,
    UnauthorizedException,
)


class UnsupportedDocumentEncodingException(AwsError):
    code = "UnsupportedDocumentEncodingException"
    http_status = 415


class MethodNotAllowedException(AwsError):
    code = "MethodNotAllowedException"
    http_status = 405


_AWS_ERRORS: Final[dict[int, type[AwsError]]] = {
    400: InvalidRequestException,
    401: UnauthorizedException,
    403: ForbiddenException,
    404: ResourceNotFoundException,
    405: MethodNotAllowedException,
    409: ConflictException,
    413: RequestEntityTooLargeException,
    415: UnsupportedDocumentEncodingException,
    429: ThrottlingException,
    500: InternalFailureException,
    503: ServiceUnavailableException,
}


class ShadowRejected(EdgesimError):
    """A shadow request the service refuses: AWS's numeric `code`, its exact `message`, and where it went wrong.

    `path` names the offending JSON field (for logs; AWS's message does not carry it) and `client_token` is
    the request's token when it could be read, so the `/rejected` document can echo it.
    """

    def __init__(self, code: int, message: str, *, client_token: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_token = client_token
        self.path = path

    @property
    def http_status(self) -> int:
        return self.code

    @property
    def rest_error_type(self) -> str:
        """The `x-amzn-ErrorType` boto3 needs to raise the matching `client.exceptions.*` (reference §4.5)."""
        return _AWS_ERRORS.get(self.code, InternalFailureException).code

    def to_aws_error(self) -> AwsError:
        return _AWS_ERRORS.get(self.code, InternalFailureException)(self.message)

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"{self.code} {self.message}{where}"
