"""The republish action: the rule's output published through the broker, `$$` reaching `$aws/...` topics."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.limits import MAX_MESSAGE_EXPIRY_S
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.topics import validate_topic_name
from mqttwire import properties as mp
from mqttwire.topics import topic_name_error

MAX_HOPS = 8


@register("republish")
class RepublishAction:
    kind = "republish"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        if not isinstance(fields.get("topic"), str) or not fields["topic"]:
            raise InvalidRequestException("republish.topic is required")
        qos = fields.get("qos", 0)
        if qos not in (0, 1):
            raise InvalidRequestException("republish.qos must be 0 or 1")
        self.fields = TemplatedFields.compile({"topic": fields["topic"], **_header_fields(fields.get("headers"))})
        self.qos = int(qos)
        self.clock = sinks.clock
        self.router = sinks.router

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    @staticmethod
    def _topic(rendered: Mapping[str, Any]) -> str:
        topic = str(rendered["topic"])
        # AWS spells a `$` topic as `$$` in the action, since `${` starts a template.
        return "$" + topic[2:] if topic.startswith("$$") else topic

    def resource(self, ctx: EvalContext) -> str:
        return self._topic(self.fields.render(ctx))

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        rendered = self.fields.render(ctx)  # the topic and the MQTT 5 headers, rendered once
        topic = self._topic(rendered)
        try:
            validate_topic_name(topic)
        except InvalidRequestException as exc:
            raise ActionError(f"republish topic {topic!r}: {exc.message}") from exc
        if topic.startswith("$aws/jobs/"):
            raise ActionError("republishing to reserved job topics is not allowed")
        hops = message.hops + 1
        if hops > MAX_HOPS:
            raise ActionError(f"rule loop: the message has been republished {MAX_HOPS} times; dropped")
        message = Message(
            topic, output_bytes(output), self.qos, False, ctx.client_id, ctx.principal, self.clock.wall_ms(),
            "republish", hops,
        )  # fmt: skip
        if len(rendered) > 1:
            message.properties, expiry = _mqtt5_properties(rendered)
            if expiry is not None:
                message.expires_ms = message.received_ms + 1000 * expiry
        self.router.route(message)


_HEADERS = ("payloadFormatIndicator", "contentType", "responseTopic", "correlationData", "messageExpiry")


def _header_fields(headers: Any) -> dict[str, Any]:
    """The republish action's MQTT 5 `headers` (AWS's MqttHeaders) as flat template fields, checked at create time."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise InvalidRequestException("republish.headers must be an object")
    unknown = set(headers) - {*_HEADERS, "userProperties"}
    if unknown:
        raise InvalidRequestException(f"republish.headers: unknown field(s) {', '.join(sorted(unknown))}")
    flat: dict[str, Any] = {}
    for name in _HEADERS:
        value = headers.get(name)
        if value is not None:
            if not isinstance(value, str) or len(value) > 1024:
                raise InvalidRequestException(f"republish.headers.{name} must be a string of at most 1024 characters")
            flat[name] = value
    pfi = flat.get("payloadFormatIndicator")
    if pfi is not None and "${" not in pfi and pfi not in ("UNSPECIFIED_BYTES", "UTF8_DATA"):
        raise InvalidRequestException("republish.headers.payloadFormatIndicator must be UNSPECIFIED_BYTES or UTF8_DATA")
    pairs = headers.get("userProperties") or []
    if not isinstance(pairs, list) or not all(
        isinstance(p, dict) and isinstance(p.get("key"), str) and isinstance(p.get("value"), str) for p in pairs
    ):
        raise InvalidRequestException("republish.headers.userProperties must be a list of {key, value} strings")
    for i, pair in enumerate(pairs):
        flat[f"userProperties.{i}.key"] = pair["key"]
        flat[f"userProperties.{i}.value"] = pair["value"]
    return flat


def _mqtt5_properties(rendered: Mapping[str, Any]) -> tuple[dict[int, Any] | None, int | None]:
    """The rendered headers as MQTT 5 properties, and the message expiry in seconds; ActionError if a template
    rendered into something invalid."""
    props: dict[int, Any] = {}
    expiry: int | None = None
    pfi = rendered.get("payloadFormatIndicator")
    if pfi is not None:
        if pfi not in ("UNSPECIFIED_BYTES", "UTF8_DATA"):
            raise ActionError(f"republish header payloadFormatIndicator {pfi!r} is not UNSPECIFIED_BYTES or UTF8_DATA")
        props[mp.PAYLOAD_FORMAT_INDICATOR] = 1 if pfi == "UTF8_DATA" else 0
    if rendered.get("contentType") is not None:
        props[mp.CONTENT_TYPE] = str(rendered["contentType"])
    response = rendered.get("responseTopic")
    if response is not None:
        if topic_name_error(str(response)) is not None:
            raise ActionError(f"republish header responseTopic {response!r} is not a valid topic name")
        props[mp.RESPONSE_TOPIC] = str(response)
    correlation = rendered.get("correlationData")
    if correlation is not None:
        try:
            props[mp.CORRELATION_DATA] = base64.b64decode(str(correlation), validate=True)
        except binascii.Error:
            raise ActionError("republish header correlationData must be base64") from None
    if rendered.get("messageExpiry") is not None:
        try:
            expiry = min(max(int(str(rendered["messageExpiry"])), 1), MAX_MESSAGE_EXPIRY_S)
        except ValueError:
            raise ActionError(f"republish header messageExpiry {rendered['messageExpiry']!r} is not a number") from None
    pairs = []
    i = 0
    while f"userProperties.{i}.key" in rendered:
        pairs.append((str(rendered[f"userProperties.{i}.key"]), str(rendered[f"userProperties.{i}.value"])))
        i += 1
    if pairs:
        props[mp.USER_PROPERTY] = pairs
    return props or None, expiry
