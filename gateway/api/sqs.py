"""boto3 `sqs` (JSON 1.0, `X-Amz-Target: AmazonSQS.<Operation>`, query-compatible errors): one handler per operation."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.api.model import load_service, validate_input
from gateway.api.targets import JsonTarget, register
from gateway.errors import AwsError, InvalidRequestException
from gateway.sinks.sqs.attributes import MessageAttribute
from gateway.sinks.sqs.exceptions import InvalidParameterValue, MissingParameter, SqsError
from gateway.sinks.sqs.queue import Received, SendResult
from gateway.sinks.sqs.service import SendEntry, SqsService

TARGET_PREFIX = "AmazonSQS"
NAMESPACE = "com.amazonaws.sqs"

Params = dict[str, Any]
Handler = Callable[[SqsService, Params], Any]


def _required(p: Params, name: str) -> Any:
    value = p.get(name)
    if value is None:
        raise MissingParameter(f"The request must contain the parameter {name}.")
    return value


def _attributes(raw: Any, what: str = "MessageAttributes") -> dict[str, MessageAttribute] | None:
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise InvalidParameterValue(f"{what} must be a map.")
    out: dict[str, MessageAttribute] = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise InvalidParameterValue(f"The message attribute '{name}' is invalid.")
        data_type = str(value.get("DataType") or "")
        if value.get("BinaryValue") is not None:
            try:
                binary = base64.b64decode(value["BinaryValue"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise InvalidParameterValue(f"The message attribute '{name}' has an invalid binary value.") from exc
            out[name] = MessageAttribute(data_type, binary_value=binary)
        else:
            string = value.get("StringValue")
            out[name] = MessageAttribute(data_type, string_value=None if string is None else str(string))
    return out


def _attribute_json(attr: MessageAttribute) -> dict[str, str]:
    if attr.binary_value is not None:
        return {"DataType": attr.data_type, "BinaryValue": base64.b64encode(attr.binary_value).decode()}
    return {"DataType": attr.data_type, "StringValue": attr.string_value or ""}


def _entry(p: Params) -> SendEntry:
    body = p.get("MessageBody")
    if body is None:
        raise MissingParameter("The request must contain the parameter MessageBody.")
    return SendEntry(
        body=str(body),
        attributes=_attributes(p.get("MessageAttributes")),
        delay_seconds=p.get("DelaySeconds"),
        group_id=p.get("MessageGroupId"),
        dedup_id=p.get("MessageDeduplicationId"),
        system_attributes=_attributes(p.get("MessageSystemAttributes"), "MessageSystemAttributes"),
    )


def _sent(result: SendResult) -> dict[str, Any]:
    out: dict[str, Any] = {"MessageId": result.message_id, "MD5OfMessageBody": result.md5_of_body}
    if result.md5_of_message_attributes is not None:
        out["MD5OfMessageAttributes"] = result.md5_of_message_attributes
    if result.md5_of_message_system_attributes is not None:
        out["MD5OfMessageSystemAttributes"] = result.md5_of_message_system_attributes
    if result.sequence_number is not None:
        out["SequenceNumber"] = result.sequence_number
    return out


def _failure(entry_id: str, error: SqsError) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": error.sender_fault, "Code": error.code, "Message": error.message}


def _batch_entries(p: Params) -> list[Params]:
    entries = p.get("Entries")
    if entries is None:
        return []  # the query protocol cannot send an empty list: no entries at all is the empty batch
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidParameterValue("Entries must be a list of structures.")
    return entries


def _send_message_batch(s: SqsService, p: Params) -> Any:
    entries = [(str(_required(e, "Id")), _entry(e)) for e in _batch_entries(p)]
    ok, failed = s.send_message_batch(_required(p, "QueueUrl"), entries)
    return {
        "Successful": [{"Id": entry_id, **_sent(result)} for entry_id, result in ok],
        "Failed": [_failure(entry_id, error) for entry_id, error in failed],
    }


def _received(msg: Received) -> dict[str, Any]:
    out: dict[str, Any] = {
        "MessageId": msg.message_id,
        "ReceiptHandle": msg.receipt_handle,
        "MD5OfBody": msg.md5_of_body,
        "Body": msg.body,
    }
    if msg.attributes:
        out["Attributes"] = msg.attributes
    if msg.message_attributes:
        out["MessageAttributes"] = {k: _attribute_json(v) for k, v in msg.message_attributes.items()}
        out["MD5OfMessageAttributes"] = msg.md5_of_message_attributes
    return out


async def _receive_message(s: SqsService, p: Params) -> Any:
    names = list(p.get("AttributeNames") or []) + list(p.get("MessageSystemAttributeNames") or [])
    messages = await s.receive_message(
        _required(p, "QueueUrl"),
        p.get("MaxNumberOfMessages"),
        p.get("VisibilityTimeout"),
        p.get("WaitTimeSeconds"),
        names,
        list(p.get("MessageAttributeNames") or []),
    )
    return {"Messages": [_received(m) for m in messages]} if messages else {}


def _delete_message_batch(s: SqsService, p: Params) -> Any:
    entries = [(str(_required(e, "Id")), str(_required(e, "ReceiptHandle"))) for e in _batch_entries(p)]
    ok, failed = s.delete_message_batch(_required(p, "QueueUrl"), entries)
    return {"Successful": [{"Id": i} for i in ok], "Failed": [_failure(i, e) for i, e in failed]}


def _change_visibility_batch(s: SqsService, p: Params) -> Any:
    entries = [
        (str(_required(e, "Id")), str(_required(e, "ReceiptHandle")), int(e.get("VisibilityTimeout") or 0))
        for e in _batch_entries(p)
    ]
    ok, failed = s.change_message_visibility_batch(_required(p, "QueueUrl"), entries)
    return {"Successful": [{"Id": i} for i in ok], "Failed": [_failure(i, e) for i, e in failed]}


def _string_map(raw: Any) -> Mapping[str, str]:
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise InvalidParameterValue("Attributes must be a map.")
    return {str(k): str(v) for k, v in raw.items()}


_HANDLERS: dict[str, Handler] = {
    "CreateQueue": lambda s, p: s.create_queue(_required(p, "QueueName"), _string_map(p.get("Attributes"))),
    "GetQueueUrl": lambda s, p: s.get_queue_url(_required(p, "QueueName")),
    "ListQueues": lambda s, p: s.list_queues(p.get("QueueNamePrefix"), p.get("MaxResults"), p.get("NextToken")),
    "DeleteQueue": lambda s, p: s.delete_queue(_required(p, "QueueUrl")),
    "GetQueueAttributes": lambda s, p: s.get_queue_attributes(_required(p, "QueueUrl"), p.get("AttributeNames")),
    "SetQueueAttributes": lambda s, p: s.set_queue_attributes(
        _required(p, "QueueUrl"), _string_map(_required(p, "Attributes"))
    ),
    "ListDeadLetterSourceQueues": lambda s, p: s.list_dead_letter_source_queues(_required(p, "QueueUrl")),
    "PurgeQueue": lambda s, p: s.purge_queue(_required(p, "QueueUrl")),
    "SendMessage": lambda s, p: _sent(s.send_message(_required(p, "QueueUrl"), _entry(p))),
    "SendMessageBatch": _send_message_batch,
    "ReceiveMessage": _receive_message,
    "DeleteMessage": lambda s, p: s.delete_message(_required(p, "QueueUrl"), _required(p, "ReceiptHandle")),
    "DeleteMessageBatch": _delete_message_batch,
    "ChangeMessageVisibility": lambda s, p: s.change_message_visibility(
        _required(p, "QueueUrl"), _required(p, "ReceiptHandle"), int(_required(p, "VisibilityTimeout"))
    ),
    "ChangeMessageVisibilityBatch": _change_visibility_batch,
    "StartMessageMoveTask": lambda s, p: s.moves.start(
        str(_required(p, "SourceArn")), p.get("DestinationArn"), p.get("MaxNumberOfMessagesPerSecond")
    ),
    "ListMessageMoveTasks": lambda s, p: s.moves.list(str(_required(p, "SourceArn")), p.get("MaxResults")),
    "CancelMessageMoveTask": lambda s, p: s.moves.cancel(str(_required(p, "TaskHandle"))),
}


def _durably(handler: Handler) -> Handler:
    """Answer only once the operation's changes are committed (group commit shares one fsync across requests)."""

    async def run(s: SqsService, p: Params) -> Any:
        result = handler(s, p)
        if asyncio.iscoroutine(result):
            result = await result
        await s.durable()
        return result

    return run


def _typed(operation: str, handler: Handler) -> Handler:
    """Move-task operations check their members' types against the model (InvalidParameterValue, never a 500)."""
    shape = load_service("sqs").operations[operation]["input"]["shape"]

    def run(s: SqsService, p: Params) -> Any:
        try:
            validate_input(load_service("sqs"), shape, {k: v for k, v in p.items() if v is not None})
        except InvalidRequestException as exc:
            if "must not be null" in exc.message:
                raise MissingParameter(
                    f"The request must contain the parameter {exc.message.split(chr(39))[1]}."
                ) from exc
            raise InvalidParameterValue(exc.message) from exc
        return handler(s, p)

    return run


for _op in ("StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask"):
    _HANDLERS[_op] = _typed(_op, _HANDLERS[_op])

HANDLERS: dict[str, Handler] = {name: _durably(handler) for name, handler in _HANDLERS.items()}


@dataclass(frozen=True)
class SqsTarget(JsonTarget):
    """SQS errors: `__type` carries the modeled shape name, `x-amzn-query-error` the legacy query code (§0)."""

    def error(self, error: AwsError) -> web.Response:
        if isinstance(error, SqsError):
            code, query_code, sender = error.code, error.query_code, error.sender_fault
        else:
            code = query_code = error.code
            sender = error.http_status < 500
        return web.Response(
            status=error.http_status,
            body=json.dumps({"__type": f"{NAMESPACE}#{code}", "message": error.message}).encode(),
            content_type=self.content_type,
            headers={"x-amzn-query-error": f"{query_code};{'Sender' if sender else 'Receiver'}"},
        )


register(TARGET_PREFIX, SqsTarget(HANDLERS, lambda gw: gw.sqs, content_type="application/x-amz-json-1.0", model="sqs"))
