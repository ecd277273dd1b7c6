"""The sqs rule action: one SendMessage per message; FIFO queues are refused, as AWS does not support them here."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext


@register("sqs")
class SqsAction:
    kind = "sqs"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        if not isinstance(fields.get("queueUrl"), str) or not fields["queueUrl"]:
            raise InvalidRequestException("sqs.queueUrl is required")
        use_base64 = fields.get("useBase64", False)
        if not isinstance(use_base64, bool):
            raise InvalidRequestException("sqs.useBase64 must be a boolean")
        self.use_base64 = use_base64
        self.fields = TemplatedFields.compile({"queueUrl": fields["queueUrl"]})
        self.sqs = sinks.sqs

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["queueUrl"])

    def begin(self, ctx: EvalContext, output: Any, message: Message) -> asyncio.Future[None] | None:
        url, body = self._message(ctx, output)
        return self.sqs.send_message_now(url, body)

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        await self.sqs.send_message(*self._message(ctx, output))

    def _message(self, ctx: EvalContext, output: Any) -> tuple[str, str]:
        url = str(self.fields.render(ctx)["queueUrl"])
        if self.sqs.is_fifo(url):
            raise ActionError(f"the sqs rule action does not support FIFO queues ({url})")
        data = output_bytes(output)
        if self.use_base64:
            body = base64.b64encode(data).decode("ascii")
        else:
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ActionError("the message is not valid UTF-8 text; set useBase64 to send binary payloads") from exc
        return url, body
