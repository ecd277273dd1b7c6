"""Why WHERE did not match: the lines `edgesim rules test` prints (pure)."""

from __future__ import annotations

import pytest

from gateway.rules import EvalContext, compile_rule
from gateway.rules.explain import explain_where


def _explain(sql: str, payload: bytes, version: str = "2016-03-23") -> list[str]:
    return explain_where(compile_rule(sql, version), EvalContext(payload=payload, topic="a/b"))


def test_true_where_or_no_where_explains_nothing() -> None:
    assert _explain("SELECT * FROM 'a/b' WHERE x = 1", b'{"x": 1}') == []
    assert _explain("SELECT * FROM 'a/b'", b"{}") == []


@pytest.mark.parametrize(
    ("where", "payload", "expected"),
    [
        ("x > 1", b"{}", "`x` is Undefined: the payload has no key 'x'"),
        ("a.b[2] = 1", b'{"a": {"b": [1]}}', "`a.b` has 1 element(s), so [2] is out of range"),
        ("a.b.c = 1", b'{"a": {"b": 5}}', "a.b is a number, not an object with a key 'c'"),
        ("x > 1", b'{"x": "abc"}', '`x > 1` is Undefined: > cannot combine a string "abc" and a number 1'),
        ("upper(x) = 'A'", b'{"y": 1}', "`x` is Undefined: the payload has no key 'x'"),
        ("x > 1", b"\x00\x01", "`x` is Undefined: the payload is not JSON, so it has no fields"),
        ("@v = 1", b"{}", "`@v` is Undefined"),
    ],
)
def test_undefined_operands_are_named_with_the_reason(where: str, payload: bytes, expected: str) -> None:
    sql = (
        f"SET @v = missing SELECT * FROM 'a/b' WHERE {where}" if "@v" in where else f"SELECT * FROM 'a/b' WHERE {where}"
    )
    lines = _explain(sql, payload)
    assert any(line.endswith("is Undefined, so the rule does not fire") for line in lines), lines
    assert any(expected in line for line in lines), lines


def test_not_json_payload_is_said_first() -> None:
    lines = _explain("SELECT * FROM 'a/b' WHERE device = 'x'", b"hello")
    assert lines[0].startswith("the payload is not JSON")


def test_false_where_shows_the_compared_values_and_false_conjuncts() -> None:
    lines = _explain("SELECT * FROM 'a/b' WHERE t > 30 AND on", b'{"t": 20, "on": false}')
    assert lines == [
        "WHERE t > 30 AND on is false, so the rule does not fire",
        "`t` is 20",
        "`on` is false",
    ]
