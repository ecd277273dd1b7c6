"""Registry errors. Most registry refusals are the root's IoT errors (gateway.errors); the ones only the registry
raises are here."""

from __future__ import annotations

from gateway.errors import AwsError


class InvalidQueryException(AwsError):
    code = "InvalidQueryException"
    http_status = 400
