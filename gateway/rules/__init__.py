"""The AWS IoT SQL core: compile rules and substitution templates once, evaluate them per message (reference §5)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Generic, NamedTuple, TypeVar, overload

from gateway.rules.ast import UNDEFINED, V2, Rule, is_true, parse_json
from gateway.rules.compiler import NO_VARIABLES, Env, compile_statement
from gateway.rules.parser import SQL_VERSIONS, check_version
from gateway.rules.parser import parse_rule as _parse_rule
from gateway.rules.printer import format_sql
from gateway.rules.template import Template, compile_template
from gateway.rules.tokens import SqlEvaluationError, SqlParseError

__all__ = [
    "SQL_VERSIONS",
    "UNDEFINED",
    "CompiledRule",
    "EvalContext",
    "Evaluation",
    "SqlEvaluationError",
    "SqlParseError",
    "Template",
    "compile_rule",
    "compile_template",
    "format_sql",
    "parse_rule",
]


T = TypeVar("T")


def _uuid4() -> str:
    return str(uuid.uuid4())


class _once(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """cached_property without 3.11's per-instance lock (which costs more than parsing a small payload)."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, instance: None, owner: type) -> _once[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> T | _once[T]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)  # later reads skip this non-data descriptor
        return value


@dataclass(frozen=True)
class EvalContext:
    """One message as rules see it. The payload is parsed as JSON at most once per SQL version, on first use.

    `topic` is the topic the rule sees (for Basic Ingest, the part after `$aws/rules/<rule>/`). `client_id`
    None means the message did not come over MQTT (clientid() is then "n/a"); an empty `trace_id` makes
    traceid() Undefined. `get_thing_shadow(thing, shadow_name_or_None)` and `aws_lambda(function_arn, payload)`
    serve the functions of the same names; without them those functions raise SqlEvaluationError.
    """

    payload: bytes
    topic: str
    client_id: str | None = None
    principal: str | None = None
    timestamp_ms: int = 0
    trace_id: str = ""
    uuid_factory: Callable[[], str] = _uuid4
    get_thing_shadow: Callable[[str, str | None], Any] | None = None
    aws_lambda: Callable[[str, Any], Any] | None = None
    account_id: str | None = None
    rand: Callable[[], float] = field(default=random.random)
    mqtt_properties: Mapping[str, Any] | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_message(
        cls,
        *,
        payload: bytes,
        topic: str,
        client_id: str | None = None,
        principal: str | None = None,
        timestamp_ms: int = 0,
        trace_id: str = "",
        get_thing_shadow: Callable[[str, str | None], Any] | None = None,
        mqtt_properties: Mapping[str, Any] | None = None,
        user_properties: tuple[tuple[str, str], ...] = (),
    ) -> EvalContext:
        """The same context as EvalContext(...) with these fields, built the cheap way: a frozen dataclass's
        __init__ pays an object.__setattr__ per field, and the rules engine makes one context per routed message."""
        ctx = object.__new__(cls)
        fields = ctx.__dict__
        fields.update(_DEFAULTS)
        fields["payload"] = payload
        fields["topic"] = topic
        fields["client_id"] = client_id
        fields["principal"] = principal
        fields["timestamp_ms"] = timestamp_ms
        fields["trace_id"] = trace_id
        fields["get_thing_shadow"] = get_thing_shadow
        fields["mqtt_properties"] = mqtt_properties
        fields["user_properties"] = user_properties
        return ctx

    def _document(self, v2: bool) -> Any:
        try:
            return parse_json(self.payload, v2)
        except (ValueError, RecursionError):  # not JSON (or not UTF-8): a binary payload, whose fields are Undefined
            return bytes(self.payload)

    @_once
    def document_v1(self) -> Any:
        """The payload as SQL 2015-10-08 reads it (decimals stay decimals), or the raw bytes."""
        return self._document(v2=False)

    @_once
    def document_v2(self) -> Any:
        """The payload as SQL 2016-03-23 reads it (10.0 is the Int 10), or the raw bytes."""
        return self._document(v2=True)

    @_once
    def topic_levels(self) -> list[str]:
        return self.topic.split("/")


_DEFAULTS = {f.name: f.default for f in dataclass_fields(EvalContext) if f.default is not MISSING}
_REQUIRED = {f.name for f in dataclass_fields(EvalContext) if f.default is MISSING}
_FIELDS = _DEFAULTS.keys() | _REQUIRED


class Evaluation(NamedTuple):
    """A rule's verdict on one message: `output` is JSON-compatible, or bytes for a raw (non-JSON) payload.

    Undefined members are left out of objects; a bare Undefined output (SELECT VALUE missing) is b"", the empty
    payload AWS sends. `variables` holds the SET values, for the actions' substitution templates. The output
    may share objects with the parsed payload (SELECT * returns it as is): treat it as read-only.
    """

    matched: bool
    output: Any = None
    variables: Mapping[str, Any] = NO_VARIABLES


NOT_MATCHED = Evaluation(False)


class CompiledRule:
    """A rule compiled once; `evaluate` only runs closures and never raises except SqlEvaluationError."""

    __slots__ = ("_statement", "rule", "select_value", "sql", "sql_version", "topic_filter")

    def __init__(self, sql: str, rule: Rule, version: str) -> None:
        self.sql = sql
        self.rule = rule
        self.sql_version = version
        self.topic_filter = rule.topic
        self.select_value = rule.select.value
        self._statement = compile_statement(rule, version, sql)

    def __repr__(self) -> str:
        return f"CompiledRule({self.sql!r}, sql_version={self.sql_version!r})"

    def evaluate(self, ctx: EvalContext) -> Evaluation:
        """SET, then WHERE (Undefined, Null or false: not matched), then the SELECT output."""
        statement = self._statement
        doc = ctx.document_v2 if statement.v2 else ctx.document_v1
        try:
            if statement.assignments:
                variables: dict[str, Any] = {}
                env = Env(ctx, variables)
                for name, fn in statement.assignments:
                    variables[name] = fn(doc, env)
            else:
                env = Env(ctx, NO_VARIABLES)
            if statement.where is not None and not is_true(statement.where(doc, env)):
                return NOT_MATCHED
            output = statement.project(doc, env)
        except RecursionError:  # a payload nested deeper than the interpreter can compare
            return NOT_MATCHED
        return Evaluation(True, b"" if output is UNDEFINED else output, env.vars)


def parse_rule(sql: str, sql_version: str = V2) -> Rule:
    """The syntax tree of a rule statement; raises SqlParseError."""
    return _parse_rule(sql, sql_version)


def compile_rule(sql: str, sql_version: str = V2) -> CompiledRule:
    """Parse and compile a rule once; raises SqlParseError (code SqlParseException, HTTP 400) with a caret."""
    version = check_version(sql, sql_version)
    return CompiledRule(sql, _parse_rule(sql, version), version)
