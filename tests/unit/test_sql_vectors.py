"""Rules SQL as data: §12.2 vectors Q1-Q22, statement vectors, and per-operator/per-function cases, per SQL version."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.rules import UNDEFINED, EvalContext, SqlEvaluationError, SqlParseError, compile_rule, compile_template
from gateway.rules.functions import SIGNATURES
from gateway.topics import split_basic_ingest

DATA = Path(__file__).parent / "data"
V1, V2 = "2015-10-08", "2016-03-23"
VERSIONS = (V1, V2)


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


REFERENCE: list[dict[str, Any]] = _load("sql_vectors.json")["vectors"]
STATEMENTS: list[dict[str, Any]] = _load("sql_statements.json")["vectors"]
_CASES_FILE = _load("sql_cases.json")
CASES: list[dict[str, Any]] = _CASES_FILE["cases"]
DEFAULT_PAYLOAD: dict[str, Any] = _CASES_FILE["payload"]


def _canonical(value: Any) -> str:
    """json.dumps keeps 1, 1.0 and true apart (== does not); raw bytes are tagged."""
    if isinstance(value, bytes):
        value = {"$bytes_base64": base64.b64encode(value).decode()}
    return json.dumps(value, sort_keys=True)


def _payload(spec: dict[str, Any]) -> bytes:
    if "payload_base64" in spec:
        return base64.b64decode(spec["payload_base64"])
    if "payload_text" in spec:
        return str(spec["payload_text"]).encode()
    return json.dumps(spec.get("payload", DEFAULT_PAYLOAD), separators=(",", ":")).encode()


def _context(spec: dict[str, Any], payload: bytes) -> EvalContext:
    overrides = dict(spec.get("context", {}))
    topic = overrides.pop("topic", spec.get("topic", "t"))
    if "published_topic" in spec:
        _, topic = split_basic_ingest(spec["published_topic"])
    extra: dict[str, Any] = {}
    if "uuid" in overrides:
        fixed_uuid = overrides.pop("uuid")
        extra["uuid_factory"] = lambda: fixed_uuid
    if "rand" in overrides:
        fixed_rand = overrides.pop("rand")
        extra["rand"] = lambda: fixed_rand
    if "user_properties" in overrides:
        extra["user_properties"] = tuple(tuple(pair) for pair in overrides.pop("user_properties"))
    timestamp = overrides.pop("timestamp", spec.get("timestamp", 1_700_000_000_000))
    return EvalContext(payload=payload, topic=topic, timestamp_ms=timestamp, **overrides, **extra)


def _check_statement(vector: dict[str, Any], version: str) -> None:
    payload = _payload(vector)
    ctx = _context(vector, payload)
    expected = vector.get("expect_by_version", {}).get(version, vector.get("expect"))
    if "template" in vector:
        assert compile_template(vector["template"], version).render(ctx) == vector["expect_text"]
        return
    if expected == "parse_error":
        with pytest.raises(SqlParseError):
            compile_rule(vector["sql"], version)
        return
    if expected == "evaluation_error":
        with pytest.raises(SqlEvaluationError):
            compile_rule(vector["sql"], version).evaluate(ctx)
        return
    evaluation = compile_rule(vector["sql"], version).evaluate(ctx)
    if expected == "no_match":
        assert not evaluation.matched, evaluation
        return
    assert evaluation.matched, vector["sql"]
    if isinstance(expected, dict) and "$bytes_base64" in expected:
        expected = base64.b64decode(expected["$bytes_base64"])
    assert _canonical(evaluation.output) == _canonical(expected)


def _select(vectors: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    return [v for v in vectors if version in v.get("versions", VERSIONS)]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vectors]


@pytest.mark.parametrize("vector", _select(REFERENCE, V2), ids=_ids(_select(REFERENCE, V2)))
def test_reference_vectors_2016_03_23(vector: dict[str, Any]) -> None:
    _check_statement(vector, V2)


@pytest.mark.parametrize("vector", _select(REFERENCE, V1), ids=_ids(_select(REFERENCE, V1)))
def test_reference_vectors_2015_10_08(vector: dict[str, Any]) -> None:
    _check_statement(vector, V1)


@pytest.mark.parametrize("vector", _select(STATEMENTS, V2), ids=_ids(_select(STATEMENTS, V2)))
def test_statement_vectors_2016_03_23(vector: dict[str, Any]) -> None:
    _check_statement(vector, V2)


@pytest.mark.parametrize("vector", _select(STATEMENTS, V1), ids=_ids(_select(STATEMENTS, V1)))
def test_statement_vectors_2015_10_08(vector: dict[str, Any]) -> None:
    _check_statement(vector, V1)


def _case_params(version: str) -> list[Any]:
    return [
        pytest.param(case, id=f"{case['group']}: {case['expr']}")
        for case in CASES
        if version in case.get("versions", VERSIONS)
    ]


def _check_case(case: dict[str, Any], version: str) -> None:
    sql = f"SELECT {case['expr']} AS r FROM 't'"
    payload = _payload(case)
    evaluation = compile_rule(sql, version).evaluate(_context(case, payload))
    assert evaluation.matched
    assert isinstance(evaluation.output, dict)
    result = evaluation.output.get("r", UNDEFINED)
    if case.get("undefined"):
        assert result is UNDEFINED, f"{case['expr']} gave {result!r}"
        return
    key = "expect_v1" if version == V1 else "expect_v2"
    expected = case[key] if key in case else case["expect"]
    assert _canonical(result) == _canonical(expected), case["expr"]


@pytest.mark.parametrize("case", _case_params(V2))
def test_expression_cases_2016_03_23(case: dict[str, Any]) -> None:
    _check_case(case, V2)


@pytest.mark.parametrize("case", _case_params(V1))
def test_expression_cases_2015_10_08(case: dict[str, Any]) -> None:
    _check_case(case, V1)


def test_every_builtin_function_has_cases() -> None:
    covered = {case["group"].lower() for case in CASES}
    missing = sorted(name for name, spec in SIGNATURES.items() if not spec.external and name not in covered)
    assert missing == []


def test_every_operator_has_cases() -> None:
    covered = {case["group"] for case in CASES}
    operators = {"AND", "OR", "NOT", "=", "<>", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "unary -", "CASE"}
    assert operators <= covered


def test_the_data_files_hold_enough_vectors() -> None:
    assert {f"Q{n}" for n in range(1, 23)} <= {v["id"].rstrip("ab") for v in REFERENCE}
    assert len(REFERENCE) + len(STATEMENTS) + len(CASES) >= 150
