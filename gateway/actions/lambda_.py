"""The lambda rule action: an asynchronous invoke (InvocationType Event) with the rule's output as the event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.errors import AwsError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext

if TYPE_CHECKING:
    from gateway.app import Gateway


@register("lambda")
class LambdaAction:
    kind = "lambda"

    def __init__(self, fields: dict[str, Any], gateway: Gateway) -> None:
        if not isinstance(fields.get("functionArn"), str) or not fields["functionArn"]:
            raise InvalidRequestException("lambda.functionArn is required")
        self.fields = TemplatedFields.compile({"functionArn": fields["functionArn"]})
        self.gateway = gateway

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["functionArn"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        # A `:alias` or `:version` suffix is accepted and ignored: edgesim runs $LATEST.
        arn = str(self.fields.render(ctx)["functionArn"])
        if self.gateway.remote_sinks is not None:
            await self.gateway.remote_sinks.invoke_event(arn, output_bytes(output))
            return
        try:
            self.gateway.lambdas.enqueue_event(arn, output_bytes(output))
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
