"""The public SQL API: contexts parse once, rule and template objects, the printer, the lexer's tokens."""

from __future__ import annotations

import pickle

import pytest

from gateway.rules import (
    UNDEFINED,
    CompiledRule,
    EvalContext,
    Evaluation,
    compile_rule,
    compile_template,
    format_sql,
    parse_rule,
)
from gateway.rules.ast import Binary, Call, Literal, Path, Rule, Select, SelectItem, Star
from gateway.rules.lexer import tokenize
from gateway.rules.tokens import TokenKind


def test_compiled_rule_describes_itself() -> None:
    rule = compile_rule("SELECT VALUE a FROM 'sensors/+/temp' WHERE a > 1", "2015-10-08")
    assert isinstance(rule, CompiledRule)
    assert rule.topic_filter == "sensors/+/temp"
    assert rule.sql_version == "2015-10-08"
    assert rule.select_value is True
    assert compile_rule("SELECT a").topic_filter is None
    assert compile_rule("SELECT a FROM '#'").sql_version == "2016-03-23"


def test_the_payload_is_parsed_once_per_context_and_shared_by_rules() -> None:
    ctx = EvalContext(payload=b'{"a": {"b": 1}}', topic="t")
    first = compile_rule("SELECT * FROM 't'").evaluate(ctx)
    second = compile_rule("SELECT * FROM 't' WHERE a.b = 1").evaluate(ctx)
    assert first.output is second.output is ctx.document_v2
    assert ctx.document_v1 == ctx.document_v2
    assert ctx.document_v1 is not ctx.document_v2  # 2015-10-08 reads decimals differently, so parses separately


def test_non_json_payloads_are_bytes_documents() -> None:
    for payload in (b"\xff\x00", b"hello", b"", b'{"a": NaN}', b'{"a": 1e999}'):
        ctx = EvalContext(payload=payload, topic="t")
        assert ctx.document_v2 == payload
        assert compile_rule("SELECT * FROM 't'").evaluate(ctx).output == payload


def test_evaluation_fields() -> None:
    ctx = EvalContext(payload=b'{"x": 2}', topic="t")
    evaluation = compile_rule("SET @d = x * 2 SELECT @d AS d FROM 't'").evaluate(ctx)
    assert evaluation == Evaluation(True, {"d": 4}, {"d": 4})
    not_matched = compile_rule("SELECT * FROM 't' WHERE x > 5").evaluate(ctx)
    assert (not_matched.matched, not_matched.output, dict(not_matched.variables)) == (False, None, {})


def test_undefined_is_a_falsy_singleton() -> None:
    assert repr(UNDEFINED) == "Undefined"
    assert not UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED


def test_templates_render_values_as_text() -> None:
    ctx = EvalContext(
        payload=b'{"s": "x", "i": 3, "d": 1.5, "b": true, "n": null, "o": {"k": [1, "a"]}}',
        topic="a/b",
        client_id="dev-1",
        timestamp_ms=1700000000000,
    )
    template = compile_template("${s}|${i}|${d}|${b}|${n}|${o}|${missing}|${o.k[1]}|${clientid()}|${topic(2)}")
    assert template.render(ctx) == 'x|3|1.5|true|null|{"k":[1,"a"]}||a|dev-1|b'
    assert template.expressions[0] == Path(None, ("s",))


def test_templates_keep_literal_text_and_nested_braces() -> None:
    ctx = EvalContext(payload=b'{"a": 1}', topic="t")
    assert compile_template("plain/$/text}").render(ctx) == "plain/$/text}"
    assert compile_template("plain").is_constant
    assert compile_template("$${topic()}").render(ctx) == "$t"
    assert compile_template("${ {'v': a}.v }-${'}'}-${concat('{', '}')}").render(ctx) == "1-}-{}"


def test_templates_see_the_original_payload_and_the_rule_variables() -> None:
    ctx = EvalContext(payload=b'{"a": 2}', topic="t")
    evaluation = compile_rule("SET @double = a * 2 SELECT 5 AS a FROM 't'").evaluate(ctx)
    template = compile_template("${a}/${@double}")
    assert template.render(ctx, evaluation.variables) == "2/4"
    assert template.render(ctx) == "2/"


def test_templates_follow_their_sql_version() -> None:
    ctx = EvalContext(payload=b'{"a": 10.0}', topic="t")
    assert compile_template("${a}", "2016-03-23").render(ctx) == "10"
    assert compile_template("${a}", "2015-10-08").render(ctx) == "10.0"


def test_format_sql_prints_canonical_sql() -> None:
    tree = parse_rule(
        "set @x = a select value (1 + 2) * -b from 'a/#' where not (c or d) and e.`my-key`[0] <> 'it\\'s'"
    )
    text = format_sql(tree)
    assert text == "SET @x = a\nSELECT VALUE (1 + 2) * -b\nFROM 'a/#'\nWHERE NOT (c OR d) AND e.`my-key`[0] <> 'it\\'s'"
    assert parse_rule(text) == tree
    built = Rule((), Select(False, (SelectItem(Star()), SelectItem(Call("upper", (Literal("a"),)), ("u",))), None,
                            Binary("=", Path(None, ("value",)), Literal(1.0))), "t")  # fmt: skip
    assert format_sql(built) == "SELECT *, upper('a') AS u\nFROM 't'\nWHERE `value` = 1.0"
    assert format_sql(Binary("-", Literal(1), Binary("-", Literal(2), Literal(3)))) == "1 - (2 - 3)"


def test_tokens_carry_kind_text_and_position() -> None:
    tokens = tokenize("SELECT a.b,\n  'x' AS `q` FROM 't'")
    assert [(t.kind, t.text, t.line, t.col) for t in tokens[:6]] == [
        (TokenKind.SELECT, "SELECT", 1, 1),
        (TokenKind.IDENT, "a", 1, 8),
        (TokenKind.DOT, ".", 1, 9),
        (TokenKind.IDENT, "b", 1, 10),
        (TokenKind.COMMA, ",", 1, 11),
        (TokenKind.STRING, "'x'", 2, 3),
    ]
    assert tokens[5].value == "x"
    assert tokens[7].kind is TokenKind.QUOTED_IDENT and tokens[7].value == "q"
    assert tokens[-1].kind is TokenKind.EOF


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("'a\\'b' \"c\\\"d\" 'e\\\\f' '\\d'", ["a'b", 'c"d', "e\\f", "\\d"]),
        ("0 12 1.5 2e3 1E-2", [0, 12, 1.5, 2000.0, 0.01]),
    ],
)
def test_literal_values(source: str, values: list[object]) -> None:
    assert [t.value for t in tokenize(source)[:-1]] == values
