"""AWS IoT policy documents: parsing and validation into frozen dataclasses (reference §3.1)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from gateway.errors import MalformedPolicyException
from gateway.limits import MAX_POLICY_DOCUMENT_CHARS

__all__ = [
    "SUPPORTED_VERSIONS",
    "PolicyDocument",
    "Statement",
    "parse_policy_document",
]

SUPPORTED_VERSIONS = ("2012-10-17", "2008-10-17")

Effect = Literal["Allow", "Deny"]

# `greengrass:` actions appear in the IoT policies of Greengrass core and client devices.
_ACTION_RE = re.compile(r"\*|(?:iot|greengrass):[A-Za-z0-9*?]+", re.IGNORECASE)
_TOP_KEYS = frozenset({"Version", "Statement", "Id"})
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"})
_JSON_WHITESPACE = " \t\r\n"

_EMPTY_CONDITIONS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement; exactly one of `actions`/`not_actions` and of `resources`/`not_resources` is non-empty."""

    effect: Effect
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    # operator -> condition key -> values (JSON booleans and numbers become their JSON text).
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(
        default_factory=lambda: _EMPTY_CONDITIONS, hash=False
    )
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A parsed policy document."""

    version: str
    statements: tuple[Statement, ...]


def _fault(path: str, message: str) -> MalformedPolicyException:
    return MalformedPolicyException(f"{path}: {message}" if path else message)


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _string_list(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        if not value:
            raise _fault(path, "must not be an empty list")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _fault(f"{path}[{i}]", f"must be a string, got {_show(item)}")
        return tuple(value)
    raise _fault(path, f"must be a string or a list of strings, got {_show(value)}")


def _actions(value: object, path: str) -> tuple[str, ...]:
    actions = _string_list(value, path)
    single = isinstance(value, str)
    for i, action in enumerate(actions):
        if not _ACTION_RE.fullmatch(action):
            where = path if single else f"{path}[{i}]"
            expected = 'expected "iot:<Name>" or a glob such as "iot:*"'
            raise _fault(where, f"{_show(action)} is not a valid action ({expected})")
    return actions


def _resources(value: object, path: str) -> tuple[str, ...]:
    resources = _string_list(value, path)
    single = isinstance(value, str)
    for i, resource in enumerate(resources):
        if resource != "*" and not resource.startswith("arn:"):
            where = path if single else f"{path}[{i}]"
            raise _fault(where, f'must be "*" or an ARN starting with "arn:", got {_show(resource)}')
    return resources


def _condition_value(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise _fault(path, f"must be a string, number or boolean, got {_show(value)}")


def _conditions(value: object, path: str) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
    if not isinstance(value, dict):
        raise _fault(path, f"must be an object of condition operators, got {_show(value)}")
    out: dict[str, Mapping[str, tuple[str, ...]]] = {}
    for operator, block in value.items():
        op_path = f"{path}.{operator}"
        if not operator:
            raise _fault(path, "condition operator must not be empty")
        if not isinstance(block, dict) or not block:
            raise _fault(op_path, f"must be a non-empty object of condition keys, got {_show(block)}")
        keys: dict[str, tuple[str, ...]] = {}
        for key, raw in block.items():
            key_path = f"{op_path}.{key}"
            if not key:
                raise _fault(op_path, "condition key must not be empty")
            if isinstance(raw, list):
                if not raw:
                    raise _fault(key_path, "must not be an empty list")
                keys[key] = tuple(_condition_value(item, f"{key_path}[{i}]") for i, item in enumerate(raw))
            else:
                keys[key] = (_condition_value(raw, key_path),)
        out[operator] = MappingProxyType(keys)
    return MappingProxyType(out)


def _statement(raw: object, path: str) -> Statement:
    if not isinstance(raw, dict):
        raise _fault(path, f"must be an object, got {_show(raw)}")
    for key in raw:
        if key not in _STATEMENT_KEYS:
            raise _fault(f"{path}.{key}", "unknown statement element")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        if "Effect" not in raw:
            raise _fault(f"{path}.Effect", 'is required ("Allow" or "Deny")')
        raise _fault(f"{path}.Effect", f'must be "Allow" or "Deny", got {_show(effect)}')
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise _fault(f"{path}.Sid", f"must be a string, got {_show(sid)}")

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    if "Action" in raw and "NotAction" in raw:
        raise _fault(path, "has both Action and NotAction")
    if "Action" in raw:
        actions = _actions(raw["Action"], f"{path}.Action")
    elif "NotAction" in raw:
        not_actions = _actions(raw["NotAction"], f"{path}.NotAction")
    else:
        raise _fault(path, "needs Action or NotAction")

    if "Resource" in raw and "NotResource" in raw:
        raise _fault(path, "has both Resource and NotResource")
    if "Resource" in raw:
        resources = _resources(raw["Resource"], f"{path}.Resource")
    elif "NotResource" in raw:
        not_resources = _resources(raw["NotResource"], f"{path}.NotResource")
    else:
        raise _fault(path, "needs Resource or NotResource")

    conditions = _conditions(raw["Condition"], f"{path}.Condition") if "Condition" in raw else _EMPTY_CONDITIONS
    return Statement(
        effect="Allow" if effect == "Allow" else "Deny",
        actions=actions,
        not_actions=not_actions,
        resources=resources,
        not_resources=not_resources,
        conditions=conditions,
        sid=sid,
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def parse_policy_document(text: str, *, max_chars: int = MAX_POLICY_DOCUMENT_CHARS) -> PolicyDocument:
    """Parse and validate a policy document, raising `MalformedPolicyException` naming the faulty JSON path.

    `max_chars` bounds the document's length not counting whitespace. A missing `Version` is read as
    "2012-10-17".
    """
    size = len(text) - sum(text.count(c) for c in _JSON_WHITESPACE)
    if size > max_chars:
        raise _fault("", f"Policy document is {size} characters long excluding whitespace; the maximum is {max_chars}")
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _fault("", f"Invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        raise _fault("", f"Invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise _fault("", f"Policy document must be a JSON object, got {_show(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise _fault(key, "unknown policy element")

    version = raw.get("Version", SUPPORTED_VERSIONS[0])
    if version not in SUPPORTED_VERSIONS:
        raise _fault("Version", f'must be "2012-10-17" or "2008-10-17", got {_show(version)}')
    if "Id" in raw and not isinstance(raw["Id"], str):
        raise _fault("Id", f"must be a string, got {_show(raw['Id'])}")

    if "Statement" not in raw:
        raise _fault("Statement", "is required")
    body = raw["Statement"]
    statements: tuple[Statement, ...]
    if isinstance(body, dict):
        statements = (_statement(body, "Statement"),)
    elif isinstance(body, list):
        if not body:
            raise _fault("Statement", "must not be an empty list")
        statements = tuple(_statement(item, f"Statement[{i}]") for i, item in enumerate(body))
    else:
        raise _fault("Statement", f"must be an object or a list of objects, got {_show(body)}")
    return PolicyDocument(version=str(version), statements=statements)
