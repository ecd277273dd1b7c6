"""Offline evaluation of a rule against one message: what `edgesim rules test` and the dashboard's test box show."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from gateway.actions.base import TemplatedFields
from gateway.rules import EvalContext, compile_rule
from gateway.rules.model import DEFAULT_SQL_VERSION, TopicRule
from gateway.rules.mqtt5 import sql_properties
from gateway.topics import matches, split_basic_ingest


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"binary": bytes(value).hex()}
    return value


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
    evaluation = compiled.evaluate(ctx)
    actions = []
    if evaluation.matched and reaches:
        for spec in rule.actions:
            actions.append({spec.kind: TemplatedFields.compile(spec.fields).render(ctx)})
    return {
        "rule": rule.name,
        "sqlVersion": rule.sql_version,
        "topicFilter": compiled.topic_filter,
        "topicMatches": reaches,
        "whereMatched": evaluation.matched,
        "output": _jsonable(evaluation.output) if evaluation.matched else None,
        "actions": actions,
        "disabled": rule.disabled,
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
