"""AWS errors and results rendered the way botocore parses them, per protocol."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from aiohttp import web

from gateway.errors import AwsError, InternalFailureException, InvalidRequestException

log = logging.getLogger("edgesim.api")


def as_aws_error(exc: Exception, where: str) -> AwsError:
    """What a request that raised `exc` answers: its own AWS error, a missing parameter, or an internal failure (the
    store's failure logged in a line, anything else with its traceback). Call it inside the `except` block."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, KeyError):
        return InvalidRequestException(f"Missing required parameter {exc}")
    if isinstance(exc, sqlite3.Error):  # nothing was stored, and the caller is told so
        log.error("%s: the store failed: %s", where, exc)
    else:
        log.exception("internal error serving %s", where)
    return InternalFailureException("Internal service failure")


def rest_json_error(error: AwsError) -> web.Response:
    """REST-JSON (iot, iot-data, lambda): botocore reads the code from x-amzn-ErrorType."""
    return web.Response(
        status=error.http_status,
        body=json.dumps({"message": error.message, "code": error.code}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": error.code},
    )


def json_protocol_error(error: AwsError, namespace: str, query_error: str | None = None) -> web.Response:
    """JSON 1.0/1.1 (kinesis, sqs, firehose): the code travels in `__type`."""
    headers = {"x-amzn-query-error": query_error} if query_error else {}
    return web.Response(
        status=error.http_status,
        body=json.dumps(
            {"__type": f"{namespace}#{error.code}" if namespace else error.code, "message": error.message}
        ).encode(),
        content_type="application/x-amz-json-1.1",
        headers=headers,
    )


def rest_json_result(result: Any) -> web.Response:
    if isinstance(result, web.StreamResponse):
        return result  # type: ignore[return-value]
    if result is None:
        return web.Response(status=200, body=b"{}", content_type="application/json")
    if isinstance(result, (bytes, bytearray)):
        return web.Response(status=200, body=bytes(result), content_type="application/json")
    return web.Response(status=200, body=json.dumps(result).encode(), content_type="application/json")


def signing_service(authorization: str | None) -> str | None:
    """The service name in a SigV4 credential scope: `Credential=AKID/date/region/<service>/aws4_request`."""
    if not authorization or "Credential=" not in authorization:
        return None
    scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return scope[3] if len(scope) >= 5 else None
