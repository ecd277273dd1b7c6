"""Dispatch of REST-JSON requests (boto3 `iot` and `iot-data`) to the handler named after the operation."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import jsonutil
from gateway.api import (  # noqa: F401 - service modules register targets
    firehose,
    fleet_api,
    greengrass,
    iot,
    iot_authorizers,
    iot_data,
    iot_rules,
    kinesis,
    sigv4,
    sqs,
)
from gateway.api import lambda_ as lambda_api
from gateway.api.auth import TOKEN_CHECKED
from gateway.api.guard import read_body
from gateway.api.model import WrongTypeError, load_service, match_route, parse_input, validate_input
from gateway.api.targets import JSON_TARGETS, REST_HANDLERS
from gateway.api.wire import as_aws_error, json_protocol_error, rest_json_error, rest_json_result, signing_service
from gateway.errors import (
    AwsError,
    InvalidRequestException,
    SerializationException,
)

if TYPE_CHECKING:
    from gateway.api.parts import RestParts

log = logging.getLogger("edgesim.api")


def _check_members(model_name: str | None, operation: str, params: dict[str, Any]) -> None:
    """JSON types of every member, from the botocore model, before any handler runs."""
    if model_name is None:
        return
    model = load_service(model_name)
    spec = model.operations.get(operation)
    if spec is None:
        return
    try:
        # Missing members are left to the handlers, which word them as each service does.
        validate_input(model, spec.get("input", {}).get("shape"), params, required=False)
    except WrongTypeError as exc:
        raise SerializationException(exc.message) from exc


class UnknownOperationException(AwsError):
    code = "UnknownOperationException"
    http_status = 400


# The signing names boto3 puts in the credential scope, mapped to the botocore model they belong to.
SIGNING_NAMES = {
    "iot": ("iot",),
    "iotdata": ("iot-data",),
    "iotdevicegateway": ("iot-data",),
    "lambda": ("lambda",),
    "greengrass": ("greengrass", "greengrassv2"),
}


class RestDispatcher:
    def __init__(self, gateway: RestParts) -> None:
        self.gateway = gateway
        self.models = {name: load_service(name) for name in ("iot-data", "iot", "lambda", "greengrassv2", "greengrass")}

    def _find(self, request: web.Request) -> Iterator[tuple[str, Any, dict[str, str]]]:
        """The (service, route, labels) the request matches, in model order, found lazily: two services may share a
        path (greengrass and greengrassv2 do for connectivity info), and the one whose input validates wins."""
        wanted = SIGNING_NAMES.get(signing_service(request.headers.get("Authorization")) or "")
        raw_path = request.rel_url.raw_path
        query = dict(request.rel_url.query)
        for name, model in self.models.items():
            if wanted is not None and name not in wanted:
                continue
            found = match_route(model, request.method, raw_path, query)
            if found is not None:
                yield name, found[0], found[1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "X-Amz-Target" in request.headers:
            return await self._json_target(request)
        try:
            candidates = self._find(request)
            first = next(candidates, None)
            if first is None:
                raise InvalidRequestException(f"No operation matches {request.method} {request.rel_url.path}")
            body = await read_body(request)
            self._verify(request, body)
            first_error: InvalidRequestException | None = None
            for service, route, labels in itertools.chain([first], candidates):
                params = parse_input(
                    self.models[service], route, labels, dict(request.rel_url.query), request.headers, body
                )
                try:
                    validate_input(self.models[service], route.input_shape, params)
                    break
                except InvalidRequestException as invalid:
                    first_error = first_error or invalid
            else:
                assert first_error is not None
                raise first_error
            result = self._call(service, route.operation, params)
            if asyncio.iscoroutine(result):
                result = await result
            return rest_json_result(result)
        except Exception as exc:
            return rest_json_error(as_aws_error(exc, f"{request.method} {request.rel_url.path}"))

    def _verify(self, request: web.Request, body: bytes) -> None:
        if self.gateway.config.sigv4_credentials and not request.get(TOKEN_CHECKED):
            self.verify_signature(request, body)

    def verify_signature(self, request: web.Request, body: bytes) -> None:
        """SigV4 against the configured credentials (SignatureDoesNotMatch and friends when it fails)."""
        if self.gateway.config.sigv4_credentials:
            sigv4.verify(
                request.method,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                request.headers,
                body,
                self.gateway.config.sigv4_credentials,
                datetime.fromtimestamp(self.gateway.clock.wall_ms() / 1000, tz=UTC),
            )

    async def _json_target(self, request: web.Request) -> web.StreamResponse:
        """JSON 1.0/1.1 services: the operation is named in X-Amz-Target, errors travel in `__type`."""
        name = request.headers["X-Amz-Target"]
        prefix, _, operation = name.partition(".")
        target = JSON_TARGETS.get(prefix)
        if target is None:
            return json_protocol_error(UnknownOperationException(f"{name} is not supported by edgesim"), "")
        try:
            body = await read_body(request)
            self._verify(request, body)
            try:
                params = jsonutil.loads_body(body or b"{}")
            except ValueError as exc:
                raise SerializationException(f"The request body is not valid JSON: {exc}") from exc
            if not isinstance(params, dict):
                raise SerializationException("Start of structure or map expected: the body must be a JSON object")
            handler = target.handlers.get(operation)
            if handler is None:
                raise UnknownOperationException(f"{name} is not supported by edgesim")
            _check_members(target.model, operation, params)
            result = handler(target.service(self.gateway), params)
            if asyncio.iscoroutine(result):
                result = await result
            return web.Response(
                body=jsonutil.dumps(result if result is not None else {}), content_type=target.content_type
            )
        except Exception as exc:
            return target.error(as_aws_error(exc, name))

    def _call(self, service: str, operation: str, params: dict[str, Any]) -> Any:
        gw = self.gateway
        extra = REST_HANDLERS.get((service, operation))
        if extra is not None:
            return extra(gw, params)
        if service == "iot":
            if operation == "DescribeEndpoint":
                return {"endpointAddress": f"{gw.config.host}"}
            handler = iot.HANDLERS.get(operation)
            if handler is not None:
                return handler(gw.registry, params)
            rule_handler = iot_rules.HANDLERS.get(operation)
            if rule_handler is not None:
                return rule_handler(gw.rules, params)
        elif service == "lambda":
            lambda_handler = lambda_api.HANDLERS.get(operation)
            if lambda_handler is not None:
                return lambda_handler(gw, params)
        else:
            data_handler = iot_data.HANDLERS.get(operation)
            if data_handler is not None:
                return data_handler(gw, params)
        raise InvalidRequestException(f"{operation} is not supported by edgesim yet")
