"""SQS over the query protocol (`Action=SendMessage&...`, XML responses): what older botocore, the AWS CLI v1 and
other SDKs send. The same handlers as the JSON protocol answer; only the wire differs."""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from gateway.api.model import load_service
from gateway.api.query import QueryCodec, WireNames
from gateway.api.sqs import HANDLERS
from gateway.errors import AwsError, InternalFailureException, InvalidRequestException
from gateway.sinks.sqs.exceptions import SqsError

if TYPE_CHECKING:
    from gateway.sinks.sqs.service import SqsService

log = logging.getLogger("edgesim.api")

XMLNS = "http://queue.amazonaws.com/doc/2012-11-05/"

_BATCHES = ("SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
# The wire names of SQS's query model (2012-11-05), which the JSON model no longer carries.
NAMES = WireNames(
    members={
        ("ReceiveMessageResult", "Messages"): "Message",
        ("Message", "Attributes"): "Attribute",
        ("Message", "MessageAttributes"): "MessageAttribute",
        ("GetQueueAttributesResult", "Attributes"): "Attribute",
        ("CreateQueueRequest", "Attributes"): "Attribute",
        ("CreateQueueRequest", "tags"): "Tag",
        ("SetQueueAttributesRequest", "Attributes"): "Attribute",
        ("SendMessageRequest", "MessageAttributes"): "MessageAttribute",
        ("SendMessageRequest", "MessageSystemAttributes"): "MessageSystemAttribute",
        ("SendMessageBatchRequestEntry", "MessageAttributes"): "MessageAttribute",
        ("SendMessageBatchRequestEntry", "MessageSystemAttributes"): "MessageSystemAttribute",
        ("TagQueueRequest", "Tags"): "Tag",
        ("ListQueueTagsResult", "Tags"): "Tag",
        ("ListMessageMoveTasksResult", "Results"): "ListMessageMoveTasksResultEntry",
        **{(f"{op}Request", "Entries"): f"{op}RequestEntry" for op in _BATCHES},
        **{(f"{op}Result", "Successful"): f"{op}ResultEntry" for op in _BATCHES},
        **{(f"{op}Result", "Failed"): "BatchResultErrorEntry" for op in _BATCHES},
    },
    list_members={
        "AttributeNameList": "AttributeName",
        "MessageAttributeNameList": "MessageAttributeName",
        "MessageSystemAttributeList": "MessageSystemAttributeName",
        "QueueUrlList": "QueueUrl",
        "TagKeyList": "TagKey",
        "StringList": "StringListValue",
        "BinaryList": "BinaryListValue",
        "AWSAccountIdList": "AWSAccountId",
        "ActionNameList": "ActionName",
    },
    map_entries={"TagMap": ("Key", "Value")},
)


@cache
def codec() -> QueryCodec:
    model = load_service("sqs")
    names = WireNames(
        members=NAMES.members,
        list_members=NAMES.list_members,
        map_entries={
            **{name: ("Name", "Value") for name, shape in model.shapes.items() if shape.get("type") == "map"},
            **NAMES.map_entries,
        },
    )
    return QueryCodec(
        {"metadata": {"xmlNamespace": XMLNS}, "operations": model.operations, "shapes": model.shapes}, names
    )


def _queue_url_from_path(request: web.Request) -> str | None:
    """Older SDKs post to the queue's own URL (`/<account>/<name>`) instead of passing QueueUrl."""
    parts = [p for p in request.rel_url.path.split("/") if p]
    if len(parts) == 2:
        return f"{request.scheme}://{request.host}/{parts[0]}/{unquote(parts[1])}"
    return None


async def handle(request: web.Request, service: SqsService, form: dict[str, str]) -> web.StreamResponse:
    query = codec()
    action = form.get("Action", "")
    try:
        handler = HANDLERS.get(action)
        if handler is None or query.operation(action) is None:
            raise InvalidAction(f"The action {action} is not valid for this endpoint.")
        params: dict[str, Any] = query.read_input(action, form)
        if "QueueUrl" not in params and (url := _queue_url_from_path(request)) is not None:
            params["QueueUrl"] = url
        result = handler(service, params)
        if asyncio.iscoroutine(result):
            result = await result
        return web.Response(body=query.response(action, result), content_type="text/xml")
    except AwsError as error:
        return _error(query, error, action)
    except Exception:
        log.exception("internal error serving SQS %s", action)
        return _error(query, InternalFailureException("Internal service failure"), action)


class InvalidAction(AwsError):
    code = "InvalidAction"
    http_status = 400


def _error(query: QueryCodec, error: AwsError, action: str) -> web.Response:
    if isinstance(error, SqsError):
        code, sender = error.query_code, error.sender_fault
    elif isinstance(error, InvalidAction):
        code, sender = ("InvalidAction" if action else "MissingAction"), True
    elif isinstance(error, InvalidRequestException):
        code, sender = "InvalidParameterValue", True
    else:
        code, sender = error.code, error.http_status < 500
    return web.Response(
        status=error.http_status, body=query.error(code, error.message, sender), content_type="text/xml"
    )
