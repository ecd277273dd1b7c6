"""The lambda rule action: an asynchronous invoke (InvocationType Event) with the rule's output as the event."""

from __future__ import annotations

from typing import Any

from gateway.actions.base import TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext


@register("lambda")
class LambdaAction:
    kind = "lambda"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        if not isinstance(fields.get("functionArn"), str) or not fields["functionArn"]:
            raise InvalidRequestException("lambda.functionArn is required")
        self.fields = TemplatedFields.compile({"functionArn": fields["functionArn"]})
        self.lambda_ = sinks.lambda_

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["functionArn"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        # A `:alias` or `:version` suffix is accepted and ignored: edgesim runs $LATEST.
        arn = str(self.fields.render(ctx)["functionArn"])
        await self.lambda_.invoke_event(arn, output_bytes(output))
