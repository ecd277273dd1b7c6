"""Properties of the SQL core: only SqlParseError from the parser, print/parse round trips, evaluation never raises."""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.rules import (
    EvalContext,
    SqlParseError,
    compile_rule,
    compile_template,
    format_sql,
    parse_rule,
)
from gateway.rules.ast import (
    ArrayLit,
    Assignment,
    Binary,
    Call,
    Case,
    Cast,
    Expr,
    Literal,
    ObjectLit,
    Path,
    PathStar,
    Rule,
    Select,
    SelectItem,
    Star,
    Subquery,
    Unary,
    Var,
    When,
)
from gateway.rules.functions import CAST_TYPE_NAMES, SIGNATURES
from gateway.rules.lexer import tokenize
from gateway.rules.tokens import SqlOutputError, TokenKind, line_col

DATA = FilePath(__file__).parent / "data"
V1, V2 = "2015-10-08", "2016-03-23"

# ---- the parser and lexer only ever raise SqlParseError, positioned inside the input -------------------------------

FRAGMENTS = [
    "SELECT", "VALUE", "FROM", "WHERE", "SET", "AS", "AND", "OR", "NOT", "CASE", "WHEN", "THEN", "ELSE", "END",
    "TRUE", "NULL", "*", ",", ".", "(", ")", "[", "]", "{", "}", ":", "=", "<>", "!=", "<", ">=", "+", "-", "/", "%",
    "a", "b.c", "`x y`", "@v", "'t/#'", '"s"', "'it\\'s'", "0", "12", "1.5e3", "topic(", "cast(", "get(", "upper(",
    "encode(*, 'base64')", "(SELECT", "\n", "\t", "'", "`", "$", "#", ";", "é", "\\",
]  # fmt: skip


def _check_error(err: SqlParseError, text: str) -> None:
    assert 0 <= err.offset <= len(text)
    assert (err.line, err.column) == line_col(text, err.offset)
    assert err.code == "SqlParseException"
    assert "^" in err.message


@settings(max_examples=400)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=25).map(" ".join)))
def test_parser_raises_only_positioned_sql_parse_errors(text: str) -> None:
    for version in (V1, V2):
        try:
            compile_rule(text, version)
        except SqlParseError as err:
            _check_error(err, text)


@settings(max_examples=300)
@given(st.one_of(st.text(), st.lists(st.sampled_from([*FRAGMENTS, "${", "}", "${a}", "/"]), max_size=20).map("".join)))
def test_template_compiler_raises_only_positioned_sql_parse_errors(text: str) -> None:
    try:
        compile_template(text)
    except SqlParseError as err:
        _check_error(err, text)


@settings(max_examples=300)
@given(st.text())
def test_lexer_tokens_cover_the_source_or_fail_at_a_token_start(text: str) -> None:
    try:
        tokens = tokenize(text)
    except SqlParseError as err:
        assert 0 <= err.offset < len(text)
        assert not text[err.offset].isspace()
        return
    assert tokens[-1].kind is TokenKind.EOF
    previous_end = 0
    for token in tokens[:-1]:
        assert text[token.start : token.end] == token.text
        assert token.start >= previous_end
        assert text[previous_end : token.start].isspace() or token.start == previous_end
        assert (token.line, token.col) == line_col(text, token.start)
        previous_end = token.end


# ---- pretty-print → parse round-trips --------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["a", "temp", "value", "VALUE", "from", "end", "my-key", "x y", "", "é", "0a", "_", "a`b", "c\\d"]),
    st.text(max_size=4),
)
PURE_CALLS = {"upper": (1,), "concat": (0, 1, 3), "substring": (2, 3), "get": (2,), "timestamp": (0,), "topic": (0, 1)}
PURE_CALLS |= {"md5": (1,), "isUndefined": (1,), "encode": (2,), "round": (1,), "parse_time": (2, 3)}
OPERATORS = ["OR", "AND", "=", "<>", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"]
TOPICS = st.sampled_from([None, "a/b", "a/+/c", "#", "t", "$aws/things/+/shadow/update/accepted", "it's/x"])


def _literals() -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.integers(min_value=0, max_value=10**30).map(Literal),
        st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(abs).map(Literal),
        st.text(max_size=6).map(Literal),
        st.sampled_from([True, False, None]).map(Literal),
    )


def _steps(first_is_name: bool) -> st.SearchStrategy[tuple[str | int, ...]]:
    step = st.one_of(NAMES, st.integers(min_value=0, max_value=99))
    head = NAMES if first_is_name else step
    return st.tuples(head, st.lists(step, max_size=3)).map(lambda p: (p[0], *p[1]))


def _expressions(variables: bool) -> st.SearchStrategy[Expr]:
    leaves = st.one_of(_literals(), _steps(True).map(lambda steps: Path(None, steps)))
    if variables:
        leaves = st.one_of(leaves, st.sampled_from(["v1", "v2"]).map(Var))

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        args = st.one_of(children, st.just(Star()))

        @st.composite
        def call(draw: st.DrawFn) -> Expr:
            name = draw(st.sampled_from(sorted(PURE_CALLS)))
            count = draw(st.sampled_from(PURE_CALLS[name]))
            return Call(name, tuple(draw(args) for _ in range(count)))

        # A path never has a path as its base (the parser extends the steps instead).
        bases = children.map(lambda node: Call("upper", (node,)) if isinstance(node, Path) else node)
        return st.one_of(
            st.builds(Unary, st.sampled_from(["-", "NOT"]), children),
            st.builds(Binary, st.sampled_from(OPERATORS), children, children),
            st.builds(Path, bases, _steps(False)),
            call(),
            st.builds(Cast, children, st.sampled_from(CAST_TYPE_NAMES)),
            st.builds(
                Case,
                st.none() | children,
                st.lists(st.builds(When, children, children), min_size=1, max_size=2).map(tuple),
                st.none() | children,
            ),
            st.lists(st.tuples(st.text(max_size=3), children), max_size=2).map(lambda items: ObjectLit(tuple(items))),
            st.lists(children, max_size=3).map(lambda items: ArrayLit(tuple(items))),
            _selects(children, nested=True).map(Subquery),
        )

    return st.recursive(leaves, extend, max_leaves=8)


def _items(expressions: st.SearchStrategy[Expr]) -> st.SearchStrategy[SelectItem]:
    alias = st.none() | st.lists(NAMES, min_size=1, max_size=2).map(tuple)
    return st.one_of(
        st.builds(SelectItem, expressions, alias),
        st.just(SelectItem(Star())),
        st.builds(lambda e: SelectItem(PathStar(e)), expressions),
    )


def _selects(expressions: st.SearchStrategy[Expr], *, nested: bool) -> st.SearchStrategy[Select]:
    source = expressions if nested else st.none()
    where = st.none() | expressions
    value = st.builds(lambda e, s, w: Select(True, (SelectItem(e),), s, w), expressions, source, where)
    items = st.lists(_items(expressions), min_size=1, max_size=3).map(tuple)
    listed = st.builds(lambda i, s, w: Select(False, i, s, w), items, source, where)
    return value | listed


PLAIN_EXPRESSIONS = _expressions(variables=False)
EXPRESSIONS_WITH_VARIABLES = _expressions(variables=True)
PLAIN_SELECTS = _selects(PLAIN_EXPRESSIONS, nested=False)
SELECTS_WITH_VARIABLES = _selects(EXPRESSIONS_WITH_VARIABLES, nested=False)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    if draw(st.booleans()):
        assignments = (Assignment("v1", draw(PLAIN_EXPRESSIONS)), Assignment("v2", draw(PLAIN_EXPRESSIONS)))
        return Rule(assignments, draw(SELECTS_WITH_VARIABLES), draw(TOPICS))
    return Rule((), draw(PLAIN_SELECTS), draw(TOPICS))


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(rules())
def test_printed_rules_parse_back_to_the_same_tree(rule: Rule) -> None:
    text = format_sql(rule)
    parsed = parse_rule(text, V2)
    assert parsed == rule, text
    assert repr(parsed) == repr(rule)  # also keeps 1 and 1.0 (and True) apart
    assert format_sql(parsed) == text


def _all_sql() -> list[str]:
    out: list[str] = []
    for name in ("sql_vectors.json", "sql_statements.json"):
        out += [v["sql"] for v in json.loads((DATA / name).read_text())["vectors"] if "sql" in v]
    cases = json.loads((DATA / "sql_cases.json").read_text())["cases"]
    out += [f"SELECT {case['expr']} AS r FROM 't'" for case in cases]
    return out


@pytest.mark.parametrize("sql", _all_sql())
def test_vector_sql_round_trips_through_the_printer(sql: str) -> None:
    try:
        tree = parse_rule(sql, V2)
    except SqlParseError:
        return
    assert parse_rule(format_sql(tree), V2) == tree


# ---- evaluation never raises -----------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "n", "s", "arr", "e", "v", "state", "reported", "x"]) | st.text(max_size=3)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)
PAYLOADS = st.one_of(
    st.dictionaries(KEYS, JSON, max_size=8).map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b"NaN", b'{"a": 1e999}', b'{"a": Infinity}', b"\xff\xfe", b'"\\ud800"']),
)


def _representative_sql() -> list[tuple[str, str]]:
    fields = ["a", "b", "s", "arr", "n"]
    sql = [f"SELECT a {op} b AS r, a {op} 1 AS k FROM 't' WHERE a {op} b OR TRUE" for op in OPERATORS] + [
        f"SELECT cast(a AS {name}) AS r FROM 't'" for name in CAST_TYPE_NAMES
    ]
    for spec in SIGNATURES.values():
        if spec.external:
            continue
        for count in range(spec.min_args, (spec.max_args if spec.max_args is not None else 3) + 1):
            sql.append(f"SELECT {spec.name}({', '.join(fields[:count])}) AS r FROM 't'")
    sql += [
        "SELECT * FROM 't'",
        "SELECT *, a.b.c AS d, arr[0] AS first, state.reported.* FROM 't' WHERE NOT a",
        "SELECT VALUE arr FROM 't'",
        "SELECT VALUE a.b FROM 't' WHERE a.b = b",
        "SELECT -a AS m, -s AS ms, NOT b AS nb FROM 't'",
        "SELECT encode(*, 'base64') AS data, get(*, 'a') AS g, isUndefined(*) AS u FROM 't'",
        "SELECT (SELECT VALUE v FROM e WHERE v > 1) AS big, (SELECT * FROM arr) AS all FROM 't'",
        "SELECT (SELECT a, b FROM state) AS o, (SELECT VALUE x FROM a) AS p FROM 't'",
        "SELECT CASE a WHEN b THEN 1 WHEN arr THEN 2 ELSE 3 END AS c, CASE WHEN a > b THEN 'gt' END AS d FROM 't'",
        "SELECT {'a': a, 'n': {'b': b}} AS o, [a, b, arr] AS l, [a, n][1] AS ix FROM 't'",
        "SET @x = a + b, @y = decode(s, 'base64') SELECT @x AS x, @y.a AS ya, @x.b AS xb FROM 't' WHERE @x <> @y",
        "SELECT a AS p.q, b AS p.r, * FROM 't'",
        "SELECT concat(arr, a, b, s, n) AS c, substring(a, b, s) AS sub, regexp_replace(a, b, s) AS rr FROM 't'",
        "SELECT parse_time(s, a, b) AS p, time_to_epoch(a, s) AS t, lpad(a, b) AS l, trunc(a, b) AS tr FROM 't'",
        "SELECT transform('enrichArray', a, arr) AS t, get(arr, a) AS g, get(a, b) AS h FROM 't'",
        "SELECT power(a, b) AS p, a * b * a * b AS m, a / b AS d, a % b AS r, exp(a) AS e FROM 't'",
    ]
    out: list[tuple[str, str]] = []
    for text in sql:
        for version in (V1, V2):
            try:
                compile_rule(text, version)
            except SqlParseError:
                continue
            out.append((text, version))
    return out


RULES = [compile_rule(text, version) for text, version in _representative_sql()]
TEMPLATES = [
    compile_template(text)
    for text in [
        "${topic()}/${timestamp()}",
        "${a}/${b.c}/${arr[0]}/${upper(s)}/${a + b}",
        "${*}",
        "k/${encode(*, 'base64')}/${newuuid()}/${traceid()}/${clientid()}/${topic(2)}",
        "${{'a': a}}-${[a, b]}-${n}-${missing}",
        "${@v}${parse_time('yyyy', timestamp())}",
    ]
]


def test_the_representative_rules_cover_the_language() -> None:
    assert len(RULES) > 150


def _json_compatible(output: Any) -> None:
    if isinstance(output, bytes):
        return
    json.dumps(output, allow_nan=False)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS, st.text(max_size=20))
def test_evaluation_never_raises_and_outputs_json(payload: bytes, topic: str) -> None:
    ctx = EvalContext(payload=payload, topic=topic, timestamp_ms=1_700_000_000_000, trace_id="t-1")
    for rule in RULES:
        try:
            evaluation = rule.evaluate(ctx)
        except SqlOutputError:  # the one evaluation error a payload can cause: 2015-10-08's SELECT VALUE of an array
            assert rule.sql_version == "2015-10-08" and rule.select_value
            continue
        _json_compatible(evaluation.output)
        for value in evaluation.variables.values():
            _json_compatible(value)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS, st.dictionaries(st.sampled_from(["v", "w"]), JSON, max_size=2))
def test_template_rendering_never_raises(payload: bytes, variables: dict[str, Any]) -> None:
    ctx = EvalContext(payload=payload, topic="a/b/c")
    for template in TEMPLATES:
        assert isinstance(template.render(ctx, variables), str)


def test_deeply_nested_payloads_do_not_raise() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    nested_object = b'{"a":' * 900 + b"1" + b"}" * 900
    for payload in (deep, nested_object):
        ctx = EvalContext(payload=payload, topic="t")
        for rule in RULES:
            rule.evaluate(ctx)  # the output may be too deep for json.dumps itself; it must just not raise
