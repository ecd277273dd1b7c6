"""A topic rule as AWS's `topicRulePayload` describes it, validated (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequestException

RULE_NAME = re.compile(r"[a-zA-Z0-9_]+")
SQL_VERSIONS = ("2015-10-08", "2016-03-23", "beta")
DEFAULT_SQL_VERSION = "2015-10-08"


@dataclass(frozen=True)
class ActionSpec:
    """One entry of `actions[]`: its type (`republish`, `kinesis`, …) and that type's fields."""

    kind: str
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {self.kind: self.fields}


@dataclass(frozen=True)
class TopicRule:
    name: str
    sql: str
    actions: tuple[ActionSpec, ...]
    error_action: ActionSpec | None = None
    description: str = ""
    disabled: bool = False
    sql_version: str = DEFAULT_SQL_VERSION
    created_ms: int = 0

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sql": self.sql,
            "description": self.description,
            "actions": [a.to_json() for a in self.actions],
            "ruleDisabled": self.disabled,
            "awsIotSqlVersion": self.sql_version,
        }
        if self.error_action is not None:
            out["errorAction"] = self.error_action.to_json()
        return out


def check_rule_name(name: str) -> str:
    if not 1 <= len(name) <= 128 or not RULE_NAME.fullmatch(name):
        raise InvalidRequestException(
            f"1 validation error detected: Value '{name}' at 'ruleName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9_]+$"
        )
    return name


def _action(entry: Any, where: str) -> ActionSpec:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise InvalidRequestException(f"{where}: each action must be an object with exactly one action type")
    ((kind, fields),) = entry.items()
    if not isinstance(fields, dict):
        raise InvalidRequestException(f"{where}.{kind}: the action's fields must be an object")
    return ActionSpec(kind, dict(fields))


def parse_rule_payload(name: str, payload: Any, created_ms: int = 0) -> TopicRule:
    """Validate a `topicRulePayload`; SQL is compiled separately so its errors carry positions."""
    check_rule_name(name)
    if not isinstance(payload, dict):
        raise InvalidRequestException("topicRulePayload must be an object")
    sql = payload.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequestException("topicRulePayload.sql is required")
    actions = payload.get("actions", [])
    if not isinstance(actions, list):
        raise InvalidRequestException("topicRulePayload.actions must be a list")
    if len(actions) > 10:
        raise InvalidRequestException("A rule can have at most 10 actions")
    version = payload.get("awsIotSqlVersion") or DEFAULT_SQL_VERSION
    if version not in SQL_VERSIONS:
        raise InvalidRequestException(f"awsIotSqlVersion must be one of {', '.join(SQL_VERSIONS)}")
    error = payload.get("errorAction")
    return TopicRule(
        name=name,
        sql=sql,
        actions=tuple(_action(a, f"actions[{i}]") for i, a in enumerate(actions)),
        error_action=None if error is None else _action(error, "errorAction"),
        description=str(payload.get("description") or ""),
        disabled=bool(payload.get("ruleDisabled", False)),
        sql_version=version,
        created_ms=created_ms,
    )
