"""The republish action: the rule's output published through the broker, `$$` reaching `$aws/...` topics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.topics import validate_topic_name

if TYPE_CHECKING:
    from gateway.app import Gateway

MAX_HOPS = 8


@register("republish")
class RepublishAction:
    kind = "republish"

    def __init__(self, fields: dict[str, Any], gateway: Gateway) -> None:
        if not isinstance(fields.get("topic"), str) or not fields["topic"]:
            raise InvalidRequestException("republish.topic is required")
        qos = fields.get("qos", 0)
        if qos not in (0, 1):
            raise InvalidRequestException("republish.qos must be 0 or 1")
        self.fields = TemplatedFields.compile({"topic": fields["topic"]})
        self.qos = int(qos)
        self.headers = fields.get("headers") or {}
        self.gateway = gateway

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def _topic(self, ctx: EvalContext) -> str:
        topic = str(self.fields.render(ctx)["topic"])
        # AWS spells a `$` topic as `$$` in the action, since `${` starts a template.
        return "$" + topic[2:] if topic.startswith("$$") else topic

    def resource(self, ctx: EvalContext) -> str:
        return self._topic(ctx)

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        topic = self._topic(ctx)
        try:
            validate_topic_name(topic)
        except InvalidRequestException as exc:
            raise ActionError(f"republish topic {topic!r}: {exc.message}") from exc
        if topic.startswith("$aws/jobs/"):
            raise ActionError("republishing to reserved job topics is not allowed")
        hops = message.hops + 1
        if hops > MAX_HOPS:
            raise ActionError(f"rule loop: the message has been republished {MAX_HOPS} times; dropped")
        gw = self.gateway
        gw.broker.route(
            Message(
                topic,
                output_bytes(output),
                self.qos,
                False,
                ctx.client_id,
                ctx.principal,
                gw.clock.wall_ms(),
                "republish",
                hops,
            )
        )
