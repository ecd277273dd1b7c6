"""boto3 `lambda` operations (REST-JSON): parameters as RestDispatcher parsed them from botocore's model → the service.

Invoke answers with its own status codes and headers (200/202/204, X-Amz-Function-Error, X-Amz-Log-Result), so it
returns an aiohttp Response, which `rest_json_result` passes through. Lambda's errors carry `Type` (and `Reason` for
throttles) in the body next to `message`, so they are rendered here too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.sinks.lambda_.exceptions import InvalidParameterValueException, LambdaError

if TYPE_CHECKING:
    from gateway.api.parts import LambdaApiParts

Handler = Callable[["LambdaApiParts", dict[str, Any]], Any]
HANDLERS: dict[str, Handler] = {}


def lambda_error(error: LambdaError) -> web.Response:
    return web.Response(
        status=error.http_status,
        body=json.dumps(error.body()).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": error.code},
    )


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register a handler; Lambda errors it raises become Lambda-shaped responses."""

    def add(handler: Handler) -> Handler:
        if asyncio.iscoroutinefunction(handler):

            async def run_async(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
                try:
                    return await handler(gw, params)
                except LambdaError as error:
                    return lambda_error(error)

            HANDLERS[name] = run_async
        else:

            def run(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
                try:
                    return handler(gw, params)
                except LambdaError as error:
                    return lambda_error(error)

            HANDLERS[name] = run
        return handler

    return add


@operation("CreateFunction")
def create_function(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return web.json_response(gw.lambdas.create_function(params), status=201)


@operation("UpdateFunctionCode")
def update_function_code(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.update_function_code(params)


@operation("UpdateFunctionConfiguration")
def update_function_configuration(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.update_function_configuration(params)


@operation("GetFunction")
def get_function(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.get_function(params["FunctionName"])


@operation("GetFunctionConfiguration")
def get_function_configuration(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.get_function_configuration(params["FunctionName"])


@operation("ListFunctions")
def list_functions(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.list_functions(params.get("Marker"), params.get("MaxItems"))


@operation("DeleteFunction")
def delete_function(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    gw.lambdas.delete_function(params["FunctionName"])
    return web.Response(status=204)


@operation("PutFunctionConcurrency")
def put_function_concurrency(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.put_function_concurrency(params["FunctionName"], params["ReservedConcurrentExecutions"])


@operation("DeleteFunctionConcurrency")
def delete_function_concurrency(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    gw.lambdas.delete_function_concurrency(params["FunctionName"])
    return web.Response(status=204)


@operation("GetFunctionConcurrency")
def get_function_concurrency(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.get_function_concurrency(params["FunctionName"])


# ---- asynchronous invocation config (retries, maximum event age, destinations)
@operation("PutFunctionEventInvokeConfig")
def put_function_event_invoke_config(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.put_function_event_invoke_config(params)


@operation("UpdateFunctionEventInvokeConfig")
def update_function_event_invoke_config(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.put_function_event_invoke_config(params, update=True)


@operation("GetFunctionEventInvokeConfig")
def get_function_event_invoke_config(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.get_function_event_invoke_config(params["FunctionName"], params.get("Qualifier"))


@operation("DeleteFunctionEventInvokeConfig")
def delete_function_event_invoke_config(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    gw.lambdas.delete_function_event_invoke_config(params["FunctionName"], params.get("Qualifier"))
    return web.Response(status=204)


@operation("ListFunctionEventInvokeConfigs")
def list_function_event_invoke_configs(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.lambdas.list_function_event_invoke_configs(params["FunctionName"])


@operation("Invoke")
async def invoke(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    name = params["FunctionName"]
    payload = params.get("Payload") or b""
    if isinstance(payload, str):
        payload = payload.encode()
    kind = params.get("InvocationType") or "RequestResponse"
    if kind == "DryRun":
        gw.lambdas.dry_run(name)
        return web.Response(status=204)
    if kind == "Event":
        request_id = gw.lambdas.enqueue_event(name, bytes(payload))
        return web.Response(status=202, headers={"x-amzn-RequestId": request_id})
    if kind != "RequestResponse":
        raise InvalidParameterValueException(
            f"1 validation error detected: Value '{kind}' at 'invocationType' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
        )
    result = await gw.lambdas.invoke(name, bytes(payload))
    headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": result.request_id}
    if result.function_error:
        headers["X-Amz-Function-Error"] = result.function_error
    if params.get("LogType") == "Tail":
        headers["X-Amz-Log-Result"] = result.log_tail()
    return web.Response(status=200, body=result.payload, headers=headers, content_type="application/json")


# ---- event source mappings
@operation("CreateEventSourceMapping")
def create_event_source_mapping(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return web.json_response(gw.event_sources.create_event_source_mapping(params), status=202)


@operation("GetEventSourceMapping")
def get_event_source_mapping(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.event_sources.get_event_source_mapping(params["UUID"])


@operation("ListEventSourceMappings")
def list_event_source_mappings(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return gw.event_sources.list_event_source_mappings(params.get("FunctionName"), params.get("EventSourceArn"))


@operation("UpdateEventSourceMapping")
def update_event_source_mapping(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return web.json_response(gw.event_sources.update_event_source_mapping(params["UUID"], params), status=202)


@operation("DeleteEventSourceMapping")
def delete_event_source_mapping(gw: LambdaApiParts, params: dict[str, Any]) -> Any:
    return web.json_response(gw.event_sources.delete_event_source_mapping(params["UUID"]), status=202)
