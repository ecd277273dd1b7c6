"""Device templates: rendering, format specs, escapes, raw values, errors with positions, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.template import Template, TemplateError, compile_template

VARS = {"fleet": "demo", "type": "thermo", "i": 7, "n": 60, "x": 2.5, "seq": 41}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("site-{i % 4}", "site-3"),
        ("{fleet}-thermo-{i:04d}", "demo-thermo-0007"),
        ("rack-{i // 10 + 1}", "rack-1"),
        ("{ i * 2 - 1 }", "13"),
        ("{(i + 1) * (n - 50)}", "80"),
        ("{-i}", "-7"),
        ("{+i}", "7"),
        ("{i - -1}", "8"),
        ("{x * 2}", "5.0"),
        ("{x:.3f}", "2.500"),
        ("{fleet:>6}|", "  demo|"),
        ("{fleet:*<6}", "demo**"),
        ("{i:x}/{n:#o}", "7/0o74"),
        ("{n * 1000:,}", "60,000"),
        ("{i:+d}", "+7"),
        ("{{literal}}", "{literal}"),
        ("{{{i}}}", "{7}"),
        ("}}{{", "}{"),
        ("{i}{i}{i}", "777"),
        ("{1 + 2}-{10 // 3}", "3-3"),
        ("{i % 4}{fleet}", "3demo"),
        ("{ \u00e9t\u00e9 }", "summer"),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert compile_template(text).render({**VARS, "\u00e9t\u00e9": "summer"}) == expected


def test_names_and_constants() -> None:
    template = compile_template("{fleet}-{i // 2}-{i}")
    assert template.names == frozenset({"fleet", "i"})
    assert not template.is_constant
    constant = compile_template("a{{b}}{1 + 2:03d}")
    assert constant.is_constant
    assert constant.names == frozenset()
    assert constant.render({}) == "a{b}003"


def test_equality_is_by_text() -> None:
    assert compile_template("{i}") == compile_template("{i}")
    assert compile_template("{i}") != compile_template("{ i }")
    assert len({compile_template("a"), compile_template("a")}) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{seq}", 41),
        ("{ seq }", 41),
        ("{x}", 2.5),
        ("{seq + 1}", 42),
        ("{fleet}", "demo"),
        ("{1 + 2}", 3),
        ("{seq:d}", "41"),  # a format spec makes it text
        ("n={seq}", "n=41"),
        ("{seq}{seq}", "4141"),
        ("const", "const"),
    ],
)
def test_render_value(text: str, expected: object) -> None:
    value = compile_template(text).render_value(VARS)
    assert value == expected
    assert type(value) is type(expected)


def test_is_expression() -> None:
    assert compile_template("{seq}").is_expression
    assert compile_template("{seq * 2}").is_expression
    assert not compile_template("{seq:d}").is_expression
    assert not compile_template("x{seq}").is_expression
    assert not compile_template("x").is_expression


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("abc{i", 3, "never closed"),
        ("ab}c", 2, "single '}'"),
        ("{}", 0, "empty expression"),
        ("x{ :03d}", 1, "empty expression"),
        ("{i{j}}", 2, "nested"),
        ("{i/2}", 1, "'/' is not allowed"),
        ("{i ** 2}", 1, "'**'"),
        ("ab{f(i)}", 3, "function calls"),
        ("{i.real}", 1, "attribute access"),
        ("{i[0]}", 1, "indexing"),
        ("{i < 2}", 1, "comparisons"),
        ("{'s'}", 1, "int and float literals"),
        ("{True}", 1, "int and float literals"),
        ("{i and n}", 1, "'and'/'or'"),
        ("{i + }", 1, "invalid expression"),
        ("{i # c}", 3, "'#'"),
        ("{1 // 0}", 1, "division or modulo by zero"),
        ("{i:zz}", 3, "invalid format spec"),
        ("{i:9999d}", 3, "larger than"),
        ("{i:.300f}", 3, "larger than"),
        ("{1:s}", 0, "cannot format int"),
        ("{i:,s}", 3, "fits neither"),
    ],
)
def test_compile_errors_point_at_the_column(text: str, position: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    err = caught.value
    assert fragment in err.message
    assert err.position == position
    assert err.column == position + 1
    assert str(err).endswith(f"at column {position + 1}")


def test_unknown_variable_names_the_variable_and_its_column() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("{fleet}-{type}-{idx:04d}", frozenset({"fleet", "type", "i"}))
    assert caught.value.position == 16
    assert "unknown variable 'idx'" in caught.value.message
    assert "allowed: fleet, i, type" in caught.value.message
    assert compile_template("{fleet}-{i}", frozenset({"fleet", "i"})).names == frozenset({"fleet", "i"})


def test_column_counts_characters_not_bytes() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("\u00e9\u00e9{\u00e9 + zz}", frozenset({"\u00e9"}))
    assert caught.value.position == 7


@pytest.mark.parametrize(
    ("text", "variables", "position", "fragment"),
    [
        ("ab-{missing}", {}, 3, "'missing' is not set"),
        ("{i}-{missing + 1}", {"i": 1}, 4, "'missing' is not set"),
        ("{missing}", {}, 0, "'missing' is not set"),
        ("{fleet % 2}", {"fleet": "demo"}, 1, "'%' needs numbers"),
        ("{fleet * 3}", {"fleet": "demo"}, 1, "'*' needs numbers"),
        ("{-fleet}", {"fleet": "demo"}, 1, "needs a number"),
        ("{i // n}", {"i": 1, "n": 0}, 1, "division or modulo by zero"),
        ("{i % 0}", {"i": 1}, 1, "modulo by zero"),
        ("{i * 1.5}", {"i": 10**400}, 1, "int too large"),
        ("x{fleet:d}", {"fleet": "demo"}, 1, "cannot format str"),
        ("{i}{fleet:d}", {"i": 1, "fleet": "demo"}, 3, "cannot format str"),
    ],
)
def test_render_errors(text: str, variables: dict[str, object], position: int, fragment: str) -> None:
    template = compile_template(text)
    with pytest.raises(TemplateError) as caught:
        template.render(variables)
    assert fragment in caught.value.message
    assert caught.value.position == position
    if template.is_expression:
        with pytest.raises(TemplateError):
            template.render_value(variables)


# --- properties -----------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        *("{", "}", "{{", "}}", ":", "i", "n", "fleet", "x", "0", "7", "04d", ".2f", ">5", "+", "-", "*", "//", "/"),
        *("%", "(", ")", " ", "#", "'", "\\", "\n", ".", ",", "**", "1e3", "0x1f", "lambda", "é", "[", "]", "!r", "="),
    ]
)
_TEMPLATE_TEXT = st.one_of(st.lists(_PIECES, max_size=14).map("".join), st.text(max_size=30))


@settings(max_examples=50, deadline=None)
@given(_TEMPLATE_TEXT)
def test_any_text_compiles_or_raises_template_error(text: str) -> None:
    try:
        template = compile_template(text)
    except TemplateError as err:
        assert 0 <= err.position <= len(text)
        return
    assert isinstance(template, Template)
    variables = dict.fromkeys(template.names, 3)
    try:
        assert isinstance(template.render(variables), str)
        template.render_value(variables)
    except TemplateError as err:
        assert 0 <= err.position <= len(text)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_escaped_literal_text_renders_back(text: str) -> None:
    template = compile_template(text.replace("{", "{{").replace("}", "}}"))
    assert template.is_constant
    assert template.render({}) == text


@settings(max_examples=50, deadline=None)
@given(st.integers(-10_000, 10_000), st.integers(1, 50))
def test_arithmetic_matches_python(i: int, n: int) -> None:
    template = compile_template("{i % n}/{i // n}/{(i + n) * 2 - 1}")
    assert template.render({"i": i, "n": n}) == f"{i % n}/{i // n}/{(i + n) * 2 - 1}"
