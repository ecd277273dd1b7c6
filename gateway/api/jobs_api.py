"""IoT Jobs over HTTP: the `iot` control-plane operations (registered into the REST dispatcher's table) and the
`iot-jobs-data` data plane, which boto3 signs as `iot-jobs-data` and the front door hands here."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.api.guard import read_body
from gateway.api.model import load_service, match_route, parse_input, validate_input
from gateway.api.presign import S3Presigner
from gateway.api.targets import REST_HANDLERS
from gateway.api.wire import as_aws_error, rest_json_error, rest_json_result
from gateway.errors import InvalidRequestException
from gateway.jobs.service import JobsService

if TYPE_CHECKING:
    from gateway.api.parts import JobsHost

log = logging.getLogger("edgesim.api")


def _control(name: str) -> Callable[[JobsHost, dict[str, Any]], Any]:
    def handler(gw: JobsHost, params: dict[str, Any]) -> Any:
        return getattr(gw.jobs.control, name)(params)

    return handler


CONTROL_OPERATIONS = {
    "CreateJob": "create_job",
    "DescribeJob": "describe_job",
    "GetJobDocument": "get_job_document",
    "ListJobs": "list_jobs",
    "UpdateJob": "update_job",
    "CancelJob": "cancel_job",
    "DeleteJob": "delete_job",
    "DescribeJobExecution": "describe_job_execution",
    "ListJobExecutionsForJob": "list_job_executions_for_job",
    "ListJobExecutionsForThing": "list_job_executions_for_thing",
    "CancelJobExecution": "cancel_job_execution",
    "DeleteJobExecution": "delete_job_execution",
    "CreateJobTemplate": "create_job_template",
    "DescribeJobTemplate": "describe_job_template",
    "ListJobTemplates": "list_job_templates",
    "DeleteJobTemplate": "delete_job_template",
}


def register() -> None:
    for operation, method in CONTROL_OPERATIONS.items():
        REST_HANDLERS[("iot", operation)] = _control(method)


def build(gw: JobsHost) -> JobsService:
    """The Jobs service wired into the gateway: broker hook, registry listener, HTTP operations."""
    cfg = gw.config
    presign = S3Presigner(lambda: f"http://{cfg.host}:{gw.ports.get('api', cfg.api_port)}", cfg.region,
                          cfg.sigv4_credentials)  # fmt: skip
    jobs = JobsService(gw.store, gw.registry, gw.clock, gw.broker.route, presign=presign, read_s3=gw.s3.get)
    gw.broker.message_hooks.append(jobs.mqtt.on_message)
    gw.registry.subscribe(jobs.on_registry_change)
    register()
    return jobs


# ---- iot-jobs-data
DATA_MODEL = "iot-jobs-data"


def _as_string(result: dict[str, Any]) -> dict[str, Any]:
    """The HTTPS data plane carries the job document as a JSON string (the MQTT API as an object)."""
    for holder in (result.get("execution"), result):
        if isinstance(holder, dict) and "jobDocument" in holder:
            holder["jobDocument"] = json.dumps(holder["jobDocument"])
    return result


def _data_call(jobs: JobsService, operation: str, params: dict[str, Any]) -> Any:
    thing = params["thingName"]
    device = jobs.device
    if operation == "GetPendingJobExecutions":
        return device.get_pending(thing)
    if operation == "StartNextPendingJobExecution":
        return _as_string(device.start_next(thing, params))
    if operation == "DescribeJobExecution":
        # Over HTTPS the document comes only when asked for (over MQTT unless declined).
        return _as_string(device.describe(thing, params["jobId"], {"includeJobDocument": False, **params}))
    if operation == "UpdateJobExecution":
        return _as_string(device.update(thing, params["jobId"], params))
    raise InvalidRequestException(f"{operation} is not supported by edgesim yet")


async def handle_data_plane(
    request: web.Request, jobs: JobsService, check: Callable[[web.Request, bytes], None]
) -> web.StreamResponse:
    try:
        model = load_service(DATA_MODEL)
        query = dict(request.rel_url.query)
        found = match_route(model, request.method, request.rel_url.raw_path, query)
        if found is None:
            raise InvalidRequestException(f"No operation matches {request.method} {request.rel_url.path}")
        route, labels = found
        body = await read_body(request)
        check(request, body)
        params = parse_input(model, route, labels, query, request.headers, body)
        validate_input(model, route.input_shape, params)
        result = _data_call(jobs, route.operation, params)
        if asyncio.iscoroutine(result):
            result = await result
        return rest_json_result(result)
    except Exception as exc:
        return rest_json_error(as_aws_error(exc, f"iot-jobs-data {request.method} {request.rel_url.path}"))
