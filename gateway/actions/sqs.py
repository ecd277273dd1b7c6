"""The sqs rule action: one SendMessage per message; FIFO queues are refused, as AWS does not support them here."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.errors import AwsError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.sqs.service import SendEntry

if TYPE_CHECKING:
    from gateway.app import Gateway


@register("sqs")
class SqsAction:
    kind = "sqs"

    def __init__(self, fields: dict[str, Any], gateway: Gateway) -> None:
        if not isinstance(fields.get("queueUrl"), str) or not fields["queueUrl"]:
            raise InvalidRequestException("sqs.queueUrl is required")
        use_base64 = fields.get("useBase64", False)
        if not isinstance(use_base64, bool):
            raise InvalidRequestException("sqs.useBase64 must be a boolean")
        self.use_base64 = use_base64
        self.fields = TemplatedFields.compile({"queueUrl": fields["queueUrl"]})
        self.gateway = gateway

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["queueUrl"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        url = str(self.fields.render(ctx)["queueUrl"])
        service = self.gateway.sqs
        name = service.name_from_url(url)
        queue = service.queues.get(name)
        if name.endswith(".fifo") or (queue is not None and queue.fifo):
            raise ActionError(f"the sqs rule action does not support FIFO queues ({url})")
        data = output_bytes(output)
        if self.use_base64:
            body = base64.b64encode(data).decode("ascii")
        else:
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ActionError("the message is not valid UTF-8 text; set useBase64 to send binary payloads") from exc
        if self.gateway.remote_sinks is not None:
            await self.gateway.remote_sinks.send_message(url, body)
            return
        try:
            service.send_message(url, SendEntry(body=body))
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
        await service.durable()
