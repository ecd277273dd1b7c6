"""The action interface: a sink issue adds a module and registers its factory; the engine never changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway import jsonutil
from gateway.errors import EdgesimError
from gateway.messages import Message
from gateway.rules import EvalContext, Template, compile_template

if TYPE_CHECKING:
    from gateway.app import Gateway


class ActionError(EdgesimError):
    """An action could not deliver; the message becomes one of the rule's errorAction failures."""


class Action(Protocol):
    kind: str

    @property
    def failed_action_name(self) -> str: ...

    def resource(self, ctx: EvalContext) -> str: ...

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None: ...


ActionFactory = Callable[[dict[str, Any], "Gateway"], Action]
FACTORIES: dict[str, ActionFactory] = {}


def register(kind: str) -> Callable[[ActionFactory], ActionFactory]:
    def add(factory: ActionFactory) -> ActionFactory:
        FACTORIES[kind] = factory
        return factory

    return add


# Action types AWS has and that later sinks provide; until then a rule naming one is accepted and its runs fail.
KNOWN_KINDS = {
    "republish",
    "kinesis",
    "sqs",
    "lambda",
    "firehose",
    "s3",
    "dynamoDB",
    "dynamoDBv2",
    "sns",
    "cloudwatchMetric",
    "cloudwatchAlarm",
    "cloudwatchLogs",
    "elasticsearch",
    "openSearch",
    "salesforce",
    "iotAnalytics",
    "iotEvents",
    "iotSiteWise",
    "stepFunctions",
    "timestream",
    "http",
    "kafka",
    "location",
}


def failed_action_name(kind: str) -> str:
    return kind[0].upper() + kind[1:] + "Action"


@dataclass(frozen=True)
class TemplatedFields:
    """An action's string fields, with `${…}` substitution templates compiled once."""

    templates: dict[str, Template]
    constants: dict[str, Any]

    @classmethod
    def compile(cls, fields: dict[str, Any]) -> TemplatedFields:
        templates: dict[str, Template] = {}
        constants: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, str) and "${" in value:
                templates[name] = compile_template(value)
            else:
                constants[name] = value
        return cls(templates, constants)

    def render(self, ctx: EvalContext) -> dict[str, Any]:
        out = dict(self.constants)
        for name, template in self.templates.items():
            out[name] = template.render(ctx)
        return out


class UnavailableAction:
    """An AWS action type whose sink edgesim does not provide (yet): every run fails into errorAction."""

    def __init__(self, kind: str, fields: dict[str, Any]) -> None:
        self.kind = kind
        self.fields = fields

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        for key in ("streamName", "queueUrl", "functionArn", "deliveryStreamName", "bucketName", "topic"):
            if key in self.fields:
                return str(self.fields[key])
        return self.kind

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        raise ActionError(f"the {self.kind} action is not available in this edgesim build yet")


def make_action(kind: str, fields: dict[str, Any], gateway: Gateway) -> Action:
    factory = FACTORIES.get(kind)
    if factory is None:
        return UnavailableAction(kind, fields)
    return factory(fields, gateway)


def output_bytes(output: Any) -> bytes:
    """The outgoing payload: raw bytes stay raw (binary passthrough), anything else is compact JSON."""
    if isinstance(output, (bytes, bytearray)):
        return bytes(output)
    return jsonutil.dumps(output)
