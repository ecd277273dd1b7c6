"""The action interface: a sink issue adds a module and registers its factory; the engine never changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import jsonutil
from gateway.actions.sinks import ActionSinks
from gateway.errors import EdgesimError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext, Template, compile_template


class ActionError(EdgesimError):
    """An action could not deliver; the message becomes one of the rule's errorAction failures."""


class Action(Protocol):
    kind: str

    @property
    def failed_action_name(self) -> str: ...

    def resource(self, ctx: EvalContext) -> str: ...

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None: ...


class StartsNow(Protocol):
    """An action that can usually do its work synchronously and only wait for a commit (local durable sinks)."""

    def begin(self, ctx: EvalContext, output: Any, message: Message) -> asyncio.Future[None] | None:
        """Do the work now: the future is done once it is durable, or fails with the commit's error. None: it cannot
        be done now (a throttled shard, a remote backend), so `run` is awaited instead. Raises when it fails."""
        ...


ActionFactory = Callable[[dict[str, Any], ActionSinks], Action]
FACTORIES: dict[str, ActionFactory] = {}


def register(kind: str) -> Callable[[ActionFactory], ActionFactory]:
    def add(factory: ActionFactory) -> ActionFactory:
        FACTORIES[kind] = factory
        return factory

    return add


# Every action type AWS has. The ones edgesim runs register a factory; the others are refused at create time.
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
# Action types only the aws sink backend runs: the local backend has no such service.
BACKEND_ONLY = {"dynamoDBv2": "DynamoDB"}


def unsupported_reason(kind: str, remote: bool | None) -> str | None:
    """Why a rule naming this action type cannot be created here, or None when it can run.

    `remote` None means the sink backend is not known (offline checks): backend-only actions then pass.
    """
    if kind not in KNOWN_KINDS:
        return f"Unknown action type {kind!r}"
    if kind in BACKEND_ONLY:
        if remote is False:
            return (
                f"The {kind} action needs {BACKEND_ONLY[kind]}, which the local sink backend does not provide; "
                "start the gateway with --sink-backend aws [--sink-endpoint-url URL] to forward it"
            )
        return None
    if kind not in FACTORIES:
        supported = ", ".join(sorted({*FACTORIES, *BACKEND_ONLY}))
        return f"The {kind} action is not supported by edgesim (supported: {supported})"
    return None


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

    def render(self, ctx: EvalContext) -> Mapping[str, Any]:
        """The fields for this message (read-only: without templates it is the shared constants)."""
        if not self.templates:
            return self.constants
        out = dict(self.constants)
        for name, template in self.templates.items():
            out[name] = template.render(ctx)
        return out


def make_action(kind: str, fields: dict[str, Any], sinks: ActionSinks) -> Action:
    reason = unsupported_reason(kind, sinks.remote)
    if reason is not None:
        raise InvalidRequestException(reason)
    return FACTORIES[kind](fields, sinks)


def output_bytes(output: Any) -> bytes:
    """The outgoing payload: raw bytes stay raw (binary passthrough), anything else is compact JSON."""
    if isinstance(output, (bytes, bytearray)):
        return bytes(output)
    return jsonutil.dumps(output)
