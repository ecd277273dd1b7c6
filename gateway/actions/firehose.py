"""The firehose rule action: PutRecord of the output plus separator; batchMode sends an array's elements as a batch."""

from __future__ import annotations

from typing import Any

from gateway.actions.base import TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext

SEPARATORS = (",", "\t", "\n", "\r\n")


@register("firehose")
class FirehoseAction:
    kind = "firehose"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        name = fields.get("deliveryStreamName")
        if not isinstance(name, str) or not name:
            raise InvalidRequestException("firehose.deliveryStreamName is required")
        separator = fields.get("separator")
        if separator is not None and separator not in SEPARATORS:
            raise InvalidRequestException(
                f"firehose.separator must be one of ',', '\\t', '\\n', '\\r\\n'; got {separator!r}"
            )
        batch_mode = fields.get("batchMode", False)
        if not isinstance(batch_mode, bool):
            raise InvalidRequestException("firehose.batchMode must be true or false")
        self.fields = TemplatedFields.compile({"deliveryStreamName": name})
        self.separator = (separator or "").encode()
        self.batch_mode = batch_mode
        self.firehose = sinks.firehose

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["deliveryStreamName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        name = str(self.fields.render(ctx)["deliveryStreamName"])
        batch = self.batch_mode and isinstance(output, list)
        items = output if batch else [output]
        await self.firehose.put(name, [output_bytes(item) + self.separator for item in items], batch)
