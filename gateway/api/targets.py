"""JSON 1.0/1.1 services (kinesis, sqs, firehose): `X-Amz-Target: <Prefix>.<Operation>` → a handler table.

A service module registers its prefix here; the dispatcher needs no change for a new service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.api.wire import json_protocol_error
from gateway.errors import AwsError


@dataclass(frozen=True)
class JsonTarget:
    handlers: Mapping[str, Callable[[Any, dict[str, Any]], Any]]
    service: Callable[[Any], Any]  # picks the service out of the API's parts (gateway.api.parts.RestParts)
    content_type: str = "application/x-amz-json-1.1"
    model: str | None = None  # the botocore service model members are type-checked against

    def error(self, error: AwsError) -> web.Response:
        """How this service's errors look on the wire; SQS overrides it to add x-amzn-query-error."""
        return json_protocol_error(error, "")


JSON_TARGETS: dict[str, JsonTarget] = {}


def register(prefix: str, target: JsonTarget) -> None:
    JSON_TARGETS[prefix] = target


# REST-JSON operations answered with the whole gateway at hand, by (botocore service, operation); consulted before
# the per-service tables (fleet indexing, Greengrass).
REST_HANDLERS: dict[tuple[str, str], Callable[[Any, dict[str, Any]], Any]] = {}
