"""The firehose rule action: PutRecord of the output plus separator; batchMode sends an array's elements as a batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.errors import AwsError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.firehose.service import MAX_BATCH_RECORDS

if TYPE_CHECKING:
    from gateway.app import Gateway

SEPARATORS = (",", "\t", "\n", "\r\n")


@register("firehose")
class FirehoseAction:
    kind = "firehose"

    def __init__(self, fields: dict[str, Any], gateway: Gateway) -> None:
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
        self.gateway = gateway

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["deliveryStreamName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        name = str(self.fields.render(ctx)["deliveryStreamName"])
        firehose = self.gateway.firehose
        if self.gateway.remote_sinks is not None:
            items = output if self.batch_mode and isinstance(output, list) else [output]
            records = [output_bytes(item) + self.separator for item in items]
            for start in range(0, len(records), MAX_BATCH_RECORDS):
                await self.gateway.remote_sinks.firehose_put(name, records[start : start + MAX_BATCH_RECORDS])
            return
        try:
            if self.batch_mode and isinstance(output, list):
                records = [output_bytes(item) + self.separator for item in output]
                for start in range(0, len(records), MAX_BATCH_RECORDS):
                    firehose.put_record_batch(name, records[start : start + MAX_BATCH_RECORDS])
            else:
                firehose.put_record(name, output_bytes(output) + self.separator)
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
