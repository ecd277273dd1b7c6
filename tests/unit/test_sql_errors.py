"""SQL errors point at the input: line/column, a caret under the token, what was expected, and hints."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import AwsError, EdgesimError
from gateway.rules import (
    EvalContext,
    SqlEvaluationError,
    SqlParseError,
    compile_rule,
    compile_template,
    format_sql,
    parse_rule,
)


def _error(sql: str, version: str = "2016-03-23") -> SqlParseError:
    with pytest.raises(SqlParseError) as caught:
        compile_rule(sql, version)
    return caught.value


def test_error_is_an_aws_sql_parse_exception() -> None:
    err = _error("SELECT FROM 'a'")
    assert isinstance(err, AwsError)
    assert err.code == "SqlParseException"
    assert err.http_status == 400
    assert err.sql == "SELECT FROM 'a'"
    assert str(err).startswith("SqlParseException: ")


def test_caret_sits_under_the_offending_token() -> None:
    err = _error("SELECT a b FROM 'x'")
    assert (err.line, err.column, err.offset) == (1, 10, 9)
    lines = err.message.split("\n")
    assert lines[1] == "  SELECT a b FROM 'x'"
    assert lines[2] == "  " + " " * 9 + "^"
    assert "expected ',', FROM or WHERE" in lines[0]
    assert "(line 1, column 10)" in lines[0]


def test_positions_count_lines_and_columns_from_one() -> None:
    err = _error("SELECT a\nFROM 'x'\nWHERE a >")
    assert (err.line, err.column) == (3, 10)
    assert err.message.split("\n")[1:3] == ["  WHERE a >", "           ^"]


def test_caret_follows_tabs() -> None:
    err = _error("SELECT\ta,\tFROM 'x'")
    assert err.message.split("\n")[2] == "  " + "      \t ^"


@pytest.mark.parametrize(
    ("sql", "column", "reason", "hint"),
    [
        ('SELECT * FROM "a/b"', 15, "double quotes", "write FROM 'a/b'"),
        ("SELECT * FROM a/b WHERE x > 1", 15, "not quoted", "write FROM 'a/b'"),
        ("SELECT * FROM topic/#", 15, "not quoted", "write FROM 'topic/#'"),
        ("SELECT tmestamp() AS t FROM 'a'", 8, "Unknown function tmestamp()", "did you mean timestamp()?"),
        ("SELECT uper(x) FROM 'a'", 8, "Unknown function uper()", "did you mean upper()?"),
        ("SELECT FROM 'a'", 8, "Missing SELECT list", "SELECT * selects the whole payload"),
        ("SELECT a, FROM 'a'", 9, "Trailing comma", "remove the ',' before FROM"),
        ("SELECT upper(a,) FROM 'a'", 15, "Trailing comma", "remove the ','"),
        ("SET @a = 1, SELECT @a FROM 'a'", 11, "Trailing comma", "remove the ',' before SELECT"),
        ("SELECT a FROM 'x' WHERE a IS NULL", 27, "Unexpected 'IS'", "isNull(x)"),
        ("SELECT a FROM 'x' WHERE a LIKE 'b%'", 27, "Unexpected 'LIKE'", "regexp_matches"),
        ("SELECT a b FROM 'x'", 10, "Unexpected 'b'", "did you forget AS"),
        ("SELEC * FROM 'x'", 1, "Unexpected 'SELEC'", "did you mean SELECT?"),
        ("SELECT a.0 FROM 'x'", 10, "cannot start with a digit", "get(x, '0')"),
        ("SELECT a[i] FROM 'x'", 10, "non-negative integer", "get(array, expression)"),
        ("SELECT a FROM 'x';", 18, "Unexpected ';'", "single statement"),
        ("SELECT a FROM 'x' WHERE a == 1", 27, "Unexpected '=='", "use = for equality"),
        ("SELECT cast(a AS Strin) FROM 'x'", 18, "Unknown cast type Strin", "did you mean String?"),
        ("SELECT @v FROM 'x'", 8, "Unknown variable @v", "SET @v ="),
        ("SET @v = 1, @v = 2 SELECT @v FROM 'x'", 13, "assigned twice", "immutable"),
        ("SELECT * AS x FROM 'x'", 10, "cannot take an alias", "alias a field instead"),
        ("SELECT a AS 'x' FROM 'x'", 13, "Unexpected", "backticks"),
        ("SELECT a FROM 'x' WHERE", 24, "Unexpected end of input", None),
    ],
)
def test_hints_for_common_mistakes(sql: str, column: int, reason: str, hint: str | None) -> None:
    err = _error(sql)
    assert err.column == column, err.message
    assert reason in err.reason
    if hint is None:
        assert err.hint is None
    else:
        assert err.hint is not None
        assert hint in err.hint
        assert "Hint: " + err.hint in err.message


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT substring('a') FROM 't'", "substring() takes 2 to 3 arguments but 1 was given"),
        ("SELECT topic(1, 2) FROM 't'", "topic() takes 0 to 1 arguments but 2 were given"),
        ("SELECT md5() FROM 't'", "md5() takes 1 argument but 0 were given"),
        ("SELECT timestamp(1) FROM 't'", "timestamp() takes 0 arguments but 1 was given"),
        ("SELECT get_thing_shadow('a') FROM 't'", "get_thing_shadow() takes 2 to 3 arguments but 1 was given"),
    ],
)
def test_wrong_arity_is_a_compile_time_error_at_the_call(sql: str, message: str) -> None:
    err = _error(sql)
    assert err.reason == message
    assert err.column == 8


@pytest.mark.parametrize(
    ("sql", "feature"),
    [
        ("SELECT {'a': 1} AS o FROM 't'", "Object literals"),
        ("SELECT [1] AS a FROM 't'", "Array literals"),
        ("SELECT (SELECT VALUE n FROM e) AS s FROM 't'", "Nested SELECT"),
        ("SET @a = 1 SELECT @a FROM 't'", "SET variables"),
        ("SELECT isUndefined(a) FROM 't'", "isUndefined()"),
        ("SELECT encode(*, 'base64') FROM 't'", "encode()"),
        ("SELECT cast(a AS Boolean) FROM 't'", "Casts to Boolean"),
    ],
)
def test_2016_features_are_rejected_in_2015(sql: str, feature: str) -> None:
    err = _error(sql, "2015-10-08")
    assert feature in err.reason
    assert "2016-03-23" in err.reason
    compile_rule(sql, "2016-03-23")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "Unexpected end of input"),
        ("SELECT a FROM 'x' WHERE", "Unexpected end of input"),
        ("SELECT 'abc FROM x", "Unterminated string literal"),
        ("SELECT `abc FROM x", "Unterminated quoted identifier"),
        ("SELECT a FROM", "Missing topic filter"),
        ("SELECT * FROM 'a/#/b'", "Invalid topic filter"),
        ("SELECT a + * FROM 'x'", "'*' is only allowed"),
        ("SELECT a.* + 1 FROM 'x'", "Unexpected '+'"),
        ("SELECT upper(a.*) FROM 'x'", "'.*' is only allowed"),
        ("SELECT CASE WHEN a THEN 1 FROM 'x'", "Unexpected 'FROM'"),
        ("SELECT CASE a END FROM 'x'", "Unexpected 'END'"),
        ("SELECT 1e999 FROM 'x'", "out of range"),
        ("SELECT @ FROM 'x'", "variable name"),
        ("SELECT # FROM 'x'", "Unexpected '#'"),
        ("SELECT (SELECT a) AS x FROM 'x'", "Unexpected ')'"),
    ],
)
def test_other_errors(sql: str, reason: str) -> None:
    err = _error(sql)
    assert reason in err.reason
    assert 0 <= err.offset <= len(sql)


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    err = _error("SELECT " + "(" * 500 + "1" + ")" * 500 + " FROM 'x'")
    assert "nested more than" in err.reason


def test_unknown_sql_version() -> None:
    err = _error("SELECT * FROM 'x'", "2020-01-01")
    assert "Unsupported SQL version" in err.reason
    assert err.hint is not None and "2016-03-23" in err.hint


def test_template_errors_are_positioned_within_the_template() -> None:
    with pytest.raises(SqlParseError) as caught:
        compile_template("prefix/${topic(}/x")
    err = caught.value
    assert err.sql == "prefix/${topic(}/x"
    assert (err.line, err.column) == (1, 16)

    with pytest.raises(SqlParseError) as caught:
        compile_template("a/${topic()")
    assert "Unterminated substitution" in caught.value.reason
    assert caught.value.column == 3

    with pytest.raises(SqlParseError) as caught:
        compile_template("${}")
    assert "Empty substitution" in caught.value.reason

    with pytest.raises(SqlParseError) as caught:
        compile_template("${nosuch(1)}")
    assert caught.value.column == 3


def test_external_functions_are_refused_in_error_action_templates() -> None:
    compile_template("${get_thing_shadow('a', 'arn')}")
    with pytest.raises(SqlParseError) as caught:
        compile_template("k/${upper(aws_lambda('arn', *))}", allow_external=False)
    assert "not allowed in error action templates" in caught.value.reason
    assert caught.value.column == 11


# ---- evaluation errors: only the documented "not supported locally" / hook failures ------------------------------


def _ctx(**kwargs: Any) -> EvalContext:
    return EvalContext(payload=b'{"id": "t1", "n": 2}', topic="a/b", **kwargs)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT get_dynamodb('T', 'id', id, 'arn:aws:iam::1:role/r') AS x FROM 'a/b'",
        "SELECT get_secret('s', 'SecretString', 'arn:aws:iam::1:role/r') AS x FROM 'a/b'",
        "SELECT machinelearning_predict('m', 'arn:aws:iam::1:role/r', *) AS x FROM 'a/b'",
    ],
)
def test_aws_only_functions_raise_not_supported_locally(sql: str) -> None:
    rule = compile_rule(sql)
    with pytest.raises(SqlEvaluationError, match="not supported locally") as caught:
        rule.evaluate(_ctx())
    assert isinstance(caught.value, EdgesimError)
    assert not isinstance(caught.value, AwsError)


def test_select_value_array_in_2015_is_a_positioned_error_not_an_empty_payload() -> None:
    rule = compile_rule("SELECT VALUE\n  arr FROM 't'", "2015-10-08")
    with pytest.raises(SqlEvaluationError) as caught:
        rule.evaluate(EvalContext(payload=b'{"arr": [1, 2]}', topic="t"))
    text = str(caught.value)
    assert "2015-10-08 cannot output" in text and "(line 2, column 3)" in text and text.endswith("\n    ^")
    # A non-array value is fine in 2015-10-08, and the same array is the output in 2016-03-23.
    assert rule.evaluate(EvalContext(payload=b'{"arr": 5}', topic="t")).output == 5
    v2 = compile_rule("SELECT VALUE arr FROM 't'")
    assert v2.evaluate(EvalContext(payload=b'{"arr": [1]}', topic="t")).output == [1]


def test_missing_hooks_raise_not_supported_locally() -> None:
    shadow = compile_rule("SELECT get_thing_shadow(id, 'arn:aws:iam::1:role/r').state AS s FROM 'a/b'")
    with pytest.raises(SqlEvaluationError, match=r"get_thing_shadow\(\): not supported locally"):
        shadow.evaluate(_ctx())
    lam = compile_rule("SELECT aws_lambda('arn:aws:lambda:us-east-1:1:function:f', {'n': n}) AS r FROM 'a/b'")
    with pytest.raises(SqlEvaluationError, match=r"aws_lambda\(\): not supported locally"):
        lam.evaluate(_ctx())


def test_hooks_receive_their_arguments() -> None:
    calls: list[tuple[Any, ...]] = []

    def shadow(thing: str, name: str | None) -> Any:
        calls.append(("shadow", thing, name))
        return {"state": {"reported": {"alarm": "ON"}}}

    def lam(arn: str, payload: Any) -> Any:
        calls.append(("lambda", arn, payload))
        return {"doubled": payload["n"] * 2}

    ctx = _ctx(get_thing_shadow=shadow, aws_lambda=lam)
    rule = compile_rule(
        "SELECT aws_lambda('arn:f', {'n': n}).doubled AS d, get_thing_shadow(id, 'night', 'arn:r').state AS s "
        "FROM 'a/b' WHERE get_thing_shadow(id, 'arn:r').state.reported.alarm = 'ON'"
    )
    evaluation = rule.evaluate(ctx)
    assert evaluation.matched
    assert evaluation.output == {"d": 4, "s": {"reported": {"alarm": "ON"}}}
    assert calls == [
        ("shadow", "t1", None),
        ("lambda", "arn:f", {"n": 2}),
        ("shadow", "t1", "night"),
    ]


def test_hook_failures_become_sql_evaluation_errors() -> None:
    def broken(thing: str, name: str | None) -> Any:
        raise KeyError(thing)

    rule = compile_rule("SELECT get_thing_shadow('x', 'arn') AS s FROM 'a/b'")
    with pytest.raises(SqlEvaluationError, match="hook failed") as caught:
        rule.evaluate(_ctx(get_thing_shadow=broken))
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_hook_answering_none_is_undefined() -> None:
    rule = compile_rule("SELECT get_thing_shadow('x', 'arn') AS s, 1 AS one FROM 'a/b'")
    assert rule.evaluate(_ctx(get_thing_shadow=lambda thing, name: None)).output == {"one": 1}


def test_external_calls_do_not_run_when_where_fails() -> None:
    rule = compile_rule("SELECT get_secret('s', 'SecretString', 'arn') AS x FROM 'a/b' WHERE n > 5")
    assert not rule.evaluate(_ctx()).matched


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("(", ")"),
        ("upper(", ")"),
        ("NOT ", ""),
        ("- ", ""),
        ("[", "]"),
        ("{'k': ", "}"),
        ("CASE WHEN TRUE THEN ", " END"),
        ("(SELECT VALUE ", " FROM e)"),
        ("cast(", " AS String)"),
        ("get(", ", 0)"),
    ],
)
def test_every_kind_of_nesting_is_bounded(opening: str, closing: str) -> None:
    depth = 60
    sql = "SELECT " + opening * depth + "a" + closing * depth + " AS x FROM 't'"
    rule = compile_rule(sql)
    rule.evaluate(EvalContext(payload=b'{"a": 1, "e": [{"a": 1}]}', topic="t"))
    format_sql(rule.rule)
    err = _error("SELECT " + opening * 400 + "a" + closing * 400 + " AS x FROM 't'")
    assert "nested more than" in err.reason


@pytest.mark.parametrize("operator", ["+", "AND", "=", "*"])
def test_long_operator_chains_are_bounded(operator: str) -> None:
    rule = compile_rule("SELECT " + f" {operator} ".join(["a"] * 150) + " AS x FROM 't'")
    rule.evaluate(EvalContext(payload=b'{"a": 1}', topic="t"))
    assert parse_rule(format_sql(rule.rule)) == rule.rule
    err = _error("SELECT " + f" {operator} ".join(["a"] * 2000) + " AS x FROM 't'")
    assert "nested more than 200 levels" in err.reason
