"""Offline evaluation of a rule against one message: what `edgesim rules test` and the dashboard's test box show."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from gateway.actions.base import TemplatedFields, unsupported_reason
from gateway.rules import EvalContext, SqlEvaluationError, compile_rule
from gateway.rules.explain import explain_where
from gateway.rules.model import DEFAULT_SQL_VERSION, TopicRule
from gateway.rules.mqtt5 import sql_properties
from gateway.topics import matches, split_basic_ingest


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"binary": bytes(value).hex()}
    return value


def action_problems(rule: TopicRule) -> list[str]:
    """Why CreateTopicRule would refuse this rule's action types (the backend unknown: dynamoDBv2 passes)."""
    from gateway.rules import engine as _engine  # noqa: F401 - registers every action type edgesim runs

    specs = [*rule.actions, *([rule.error_action] if rule.error_action else [])]
    return [reason for spec in specs if (reason := unsupported_reason(spec.kind, None)) is not None]


def evaluate_rule(
    rule: TopicRule,
    topic: str,
    payload: bytes,
    client_id: str | None,
    principal: str | None,
    timestamp_ms: int,
    *,
    properties: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """WHERE result, SQL output and each action rendered (nothing runs); SqlParseError for bad SQL."""
    compiled = compile_rule(rule.sql, rule.sql_version)
    named, pairs = sql_properties(properties)
    ingest_rule, rest = split_basic_ingest(topic)
    if ingest_rule:
        reaches = ingest_rule == rule.name
    else:
        reaches = compiled.topic_filter is not None and matches(compiled.topic_filter, topic)
    base: dict[str, Any] = {
        "rule": rule.name,
        "sqlVersion": rule.sql_version,
        "topicFilter": compiled.topic_filter,
        "topicMatches": reaches,
        "disabled": rule.disabled,
    }
    problems = action_problems(rule)
    if problems:
        base["actionProblems"] = problems
    if not reaches:
        seen_by = f"FROM {compiled.topic_filter!r}" if compiled.topic_filter else "no FROM (Basic Ingest only)"
        if ingest_rule:
            seen_by = f"Basic Ingest for rule {ingest_rule!r}"
        why = f"the topic {topic!r} does not reach this rule ({seen_by}): the rule would not see this message"
        return {**base, "whereMatched": None, "output": None, "actions": [], "explanation": [why]}
    ctx = EvalContext(
        payload=payload,
        topic=rest if ingest_rule else topic,
        client_id=client_id,
        principal=principal,
        timestamp_ms=timestamp_ms,
        trace_id=str(uuid.uuid4()),
        mqtt_properties=named,
        user_properties=pairs,
    )
    try:
        evaluation = compiled.evaluate(ctx)
    except SqlEvaluationError as exc:
        # What the gateway would log as the rule's evaluation error: no action runs.
        return {**base, "whereMatched": None, "output": None, "actions": [], "error": str(exc), "explanation": []}
    actions = []
    if evaluation.matched:
        for spec in rule.actions:
            actions.append({spec.kind: TemplatedFields.compile(spec.fields).render(ctx)})
    return {
        **base,
        "whereMatched": evaluation.matched,
        "output": _jsonable(evaluation.output) if evaluation.matched else None,
        "actions": actions,
        "explanation": [] if evaluation.matched else explain_where(compiled, ctx),
    }


def evaluate_sql(
    sql: str,
    topic: str,
    payload: bytes,
    *,
    client_id: str | None = None,
    timestamp_ms: int,
    sql_version: str = DEFAULT_SQL_VERSION,
) -> dict[str, Any]:
    """The same, for bare SQL with no actions (the dashboard's "test this rule" box)."""
    rule = TopicRule(name="dashboard_test", sql=sql, actions=(), sql_version=sql_version)
    return evaluate_rule(rule, topic, payload, client_id, None, timestamp_ms)
