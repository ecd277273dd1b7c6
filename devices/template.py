"""Tiny safe text templates: `{expr}` / `{expr:spec}` over named variables, compiled once and rendered per message."""

from __future__ import annotations

import ast
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

__all__ = ["Template", "TemplateError", "compile_template"]

Variables = Mapping[str, object]
_Eval = Callable[[Variables], object]

_BRACE = re.compile(r"[{}]")
# Python's format-spec mini-language, minus nested fields; widths are capped so a template cannot allocate much.
_SPEC = re.compile(
    r"(?:(?P<fill>.)?(?P<align>[<>=^]))?(?P<sign>[-+ ])?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?"
    r"[bcdeEfFgGnosxX%]?",
    re.DOTALL,
)
_MAX_WIDTH = 256
_MAX_DEPTH = 48
_ALLOWED_HINT = "use names, int/float literals, + - * // % and parentheses"
_FORBIDDEN = {
    "Call": "function calls are not allowed",
    "Attribute": "attribute access is not allowed",
    "Subscript": "indexing is not allowed",
    "Compare": "comparisons are not allowed",
    "BoolOp": "'and'/'or' are not allowed",
    "IfExp": "conditional expressions are not allowed",
    "Div": "'/' is not allowed (use '//')",
    "Pow": "'**' is not allowed",
    "Not": "'not' is not allowed",
    "Invert": "'~' is not allowed",
}
_BINOPS: dict[type[ast.operator], tuple[str, Callable[[Any, Any], object]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
}
_NUMBER = (int, float)


class TemplateError(ValueError):
    """A template that does not compile or render; `position` is the 0-based offset into its text."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at column {position + 1}")
        self.message = message
        self.position = position

    @property
    def column(self) -> int:
        return self.position + 1


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template; equality is by text. Rendering runs precompiled closures, never `eval`.

    `render(variables) -> str` substitutes every field. `render_value(variables) -> object` returns the raw value
    of a lone `{expr}` template (`is_expression`: an int stays an int) and the rendered text otherwise. Both raise
    `TemplateError` when a variable is missing or a value cannot be computed or formatted. They are stored
    closures rather than methods so each render is a single call.
    """

    text: str
    names: frozenset[str] = field(compare=False)
    is_constant: bool = field(compare=False)
    is_expression: bool = field(compare=False)
    render: Callable[[Variables], str] = field(compare=False, repr=False)
    render_value: Callable[[Variables], object] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _Field:
    start: int  # offset of the opening brace
    evaluate: _Eval
    spec: str
    names: frozenset[str]
    name: str | None  # set when the expression is one bare variable
    constant: object  # the folded value, or _NOT_CONSTANT


_NOT_CONSTANT = object()


def compile_template(text: str, allowed: frozenset[str] | None = None) -> Template:
    """Compile `text`; with `allowed`, any other variable name is an error. Raises `TemplateError`."""
    pieces: list[str | _Field] = []
    literal: list[str] = []
    i = 0
    end = len(text)
    while i < end:
        match = _BRACE.search(text, i)
        if match is None:
            literal.append(text[i:])
            break
        pos = match.start()
        literal.append(text[i:pos])
        if text.startswith("{{", pos) or text.startswith("}}", pos):
            literal.append(text[pos])
            i = pos + 2
            continue
        if text[pos] == "}":
            raise TemplateError("single '}' (write '}}' for a literal brace)", pos)
        close = text.find("}", pos + 1)
        if close < 0:
            raise TemplateError("'{' is never closed (write '{{' for a literal brace)", pos)
        inner = text.find("{", pos + 1, close)
        if inner >= 0:
            raise TemplateError("'{' inside a field (nested fields are not supported)", inner)
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(_compile_field(text, pos, close, allowed))
        i = close + 1
    if literal:
        pieces.append("".join(literal))
    return _assemble(text, [p for p in pieces if p != ""])


def _compile_field(text: str, start: int, close: int, allowed: frozenset[str] | None) -> _Field:
    body = text[start + 1 : close]
    colon = body.find(":")
    source = body if colon < 0 else body[:colon]
    spec = "" if colon < 0 else body[colon + 1 :]
    if spec:
        _check_spec(spec, start + 2 + colon)
    stripped = source.strip()
    if not stripped:
        raise TemplateError("empty expression in '{}'", start)
    base = start + 1 + (len(source) - len(source.lstrip()))
    for bad, what in (("\n", "line breaks"), ("\r", "line breaks"), ("#", "'#'"), ("\\", "backslashes")):
        at = stripped.find(bad)
        if at >= 0:
            raise TemplateError(f"{what} are not allowed in an expression", base + at)
    tree = _parse(stripped, base)
    builder = _Builder(stripped, base, allowed)
    evaluate, constant = builder.build(tree.body, 0)
    name = tree.body.id if isinstance(tree.body, ast.Name) else None
    fld = _Field(start, evaluate, spec, frozenset(builder.names), name, constant)
    if constant is not _NOT_CONSTANT:
        _format(fld, constant)  # a constant that cannot be formatted fails now, not per message
    return fld


def _check_spec(spec: str, pos: int) -> None:
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise TemplateError(f"invalid format spec {spec!r}", pos)
    for group in ("width", "precision"):
        digits = match.group(group)
        if digits is not None and (len(digits) > 4 or int(digits) > _MAX_WIDTH):
            raise TemplateError(f"format {group} {digits} is larger than {_MAX_WIDTH}", pos)
    samples: tuple[object, ...] = (0, 0.5, "")
    if not any(_formats(sample, spec) for sample in samples):
        raise TemplateError(f"format spec {spec!r} fits neither numbers nor strings", pos)


def _formats(sample: object, spec: str) -> bool:
    try:
        format(sample, spec)
    except (ValueError, TypeError):
        return False
    return True


def _parse(source: str, base: int) -> ast.Expression:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, mode="eval")
    except SyntaxError as exc:
        offset = (exc.offset or 1) - 1 if exc.lineno in (None, 1) else 0
        where = base + max(0, min(offset, len(source)))
        raise TemplateError(f"invalid expression: {exc.msg}", where) from None
    except (MemoryError, RecursionError):
        raise TemplateError("expression too deeply nested", base) from None
    except ValueError as exc:  # e.g. NUL characters, or an int literal longer than Python's digit limit
        raise TemplateError(f"invalid expression: {exc}", base) from None


class _Builder:
    """Turns a whitelisted expression AST into a closure, folding constant sub-expressions."""

    def __init__(self, source: str, base: int, allowed: frozenset[str] | None) -> None:
        self.encoded = source.encode("utf-8")
        self.base = base
        self.allowed = allowed
        self.names: set[str] = set()

    def pos(self, node: ast.AST) -> int:
        # col_offset counts UTF-8 bytes; errors report characters.
        col = getattr(node, "col_offset", 0)
        return self.base + len(self.encoded[:col].decode("utf-8", "ignore"))

    def build(self, node: ast.expr, depth: int) -> tuple[_Eval, object]:
        if depth > _MAX_DEPTH:
            raise TemplateError(f"expression nested deeper than {_MAX_DEPTH} levels", self.pos(node))
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TemplateError(f"only int and float literals are allowed, not {value!r}", self.pos(node))
            return (lambda _v: value), value
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return self._unary(node, depth)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self._binary(node, depth)
        key = type(node.op).__name__ if isinstance(node, ast.BinOp | ast.UnaryOp) else type(node).__name__
        what = _FORBIDDEN.get(key, f"{key} is not allowed")
        raise TemplateError(f"{what}; {_ALLOWED_HINT}", self.pos(node))

    def _name(self, node: ast.Name) -> tuple[_Eval, object]:
        if self.allowed is not None and node.id not in self.allowed:
            known = ", ".join(sorted(self.allowed)) or "none"
            raise TemplateError(f"unknown variable {node.id!r} (allowed: {known})", self.pos(node))
        self.names.add(node.id)
        getter: _Eval = itemgetter(node.id)
        return getter, _NOT_CONSTANT

    def _unary(self, node: ast.UnaryOp, depth: int) -> tuple[_Eval, object]:
        operand, constant = self.build(node.operand, depth + 1)
        negate = isinstance(node.op, ast.USub)
        pos = self.pos(node)

        def run(v: Variables) -> object:
            value = operand(v)
            if not isinstance(value, int | float):
                raise TemplateError(f"unary '{'-' if negate else '+'}' needs a number, got {type(value).__name__}", pos)
            return -value if negate else +value

        if constant is not _NOT_CONSTANT:
            folded = run({})
            return (lambda _v: folded), folded
        return run, _NOT_CONSTANT

    def _binary(self, node: ast.BinOp, depth: int) -> tuple[_Eval, object]:
        left, left_const = self.build(node.left, depth + 1)
        right, right_const = self.build(node.right, depth + 1)
        symbol, op = _BINOPS[type(node.op)]
        pos = self.pos(node)

        def fail(a: object, b: object) -> TemplateError:
            return TemplateError(f"'{symbol}' needs numbers, got {type(a).__name__} {symbol} {type(b).__name__}", pos)

        def run(v: Variables) -> object:
            a = left(v)
            b = right(v)
            if not (isinstance(a, _NUMBER) and isinstance(b, _NUMBER)):
                raise fail(a, b)
            try:
                return op(a, b)
            except ArithmeticError as exc:
                raise TemplateError(f"arithmetic error: {exc}", pos) from None

        if left_const is not _NOT_CONSTANT and right_const is not _NOT_CONSTANT:
            folded = run({})
            return (lambda _v: folded), folded
        if right_const is _NOT_CONSTANT or right_const == 0:
            return run, _NOT_CONSTANT
        constant = right_const

        def run_constant(v: Variables) -> object:  # `i % 4`, `i // 10`, `i + 1`: the common, faster case
            a = left(v)
            if not isinstance(a, _NUMBER):
                raise fail(a, constant)
            try:
                return op(a, constant)
            except ArithmeticError as exc:  # e.g. an int too large to multiply by a float
                raise TemplateError(f"arithmetic error: {exc}", pos) from None

        return run_constant, _NOT_CONSTANT


def _format(fld: _Field, value: object) -> str:
    try:
        return format(value, fld.spec)
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"cannot format {type(value).__name__} with spec {fld.spec!r}: {exc}", fld.start) from None


def _assemble(text: str, pieces: list[str | _Field]) -> Template:
    fields = [p for p in pieces if isinstance(p, _Field)]
    names = frozenset().union(*(f.names for f in fields))
    lone = len(pieces) == 1 and isinstance(pieces[0], _Field) and not pieces[0].spec
    if not names:
        # Everything folded at compile time: rendering is a constant.
        rendered = "".join(p if isinstance(p, str) else _format(p, p.constant) for p in pieces)
        value: object = fields[0].constant if lone else rendered
        return Template(text, names, True, lone, lambda _v: rendered, lambda _v: value)
    render = _renderer(pieces, fields)
    value_of: Callable[[Variables], object] = _value_renderer(fields[0]) if lone else render
    return Template(text, names, False, lone, render, value_of)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _renderer(pieces: list[str | _Field], fields: list[_Field]) -> Callable[[Variables], str]:
    """Build the hot-path renderer: one `str.format_map`/`str.format` call over precomputed field values."""
    first_use: dict[str, int] = {}
    for fld in fields:
        for name in fld.names:
            first_use.setdefault(name, fld.start)

    def fail(exc: Exception, variables: Variables) -> TemplateError:
        if isinstance(exc, KeyError):
            name = str(exc.args[0]) if exc.args else "?"
            return TemplateError(f"variable {name!r} is not set", first_use.get(name, 0))
        for fld in fields:  # slow path, errors only: find the field that cannot be formatted
            try:
                _format(fld, fld.evaluate(variables))
            except TemplateError as err:
                return err
        return TemplateError(f"cannot render: {exc}", 0)

    if all(f.name is not None for f in fields):
        # Only bare variables: the whole template is one C-level format_map call.
        fmt = "".join(_escape(p) if isinstance(p, str) else f"{{{p.name}:{p.spec}}}" for p in pieces)

        def render_named(variables: Variables) -> str:
            try:
                return fmt.format_map(variables)
            except (KeyError, ValueError, TypeError) as exc:
                raise fail(exc, variables) from None

        return render_named

    fmt = "".join(_escape(p) if isinstance(p, str) else f"{{:{p.spec}}}" for p in pieces)
    evaluators = tuple(f.evaluate for f in fields)

    def render(variables: Variables) -> str:
        try:
            return fmt.format(*[evaluate(variables) for evaluate in evaluators])
        except TemplateError:
            raise
        except (KeyError, ValueError, TypeError) as exc:
            raise fail(exc, variables) from None

    return render


def _value_renderer(fld: _Field) -> Callable[[Variables], object]:
    evaluate = fld.evaluate

    def value(variables: Variables) -> object:
        try:
            return evaluate(variables)
        except KeyError as exc:
            name = str(exc.args[0]) if exc.args else "?"
            raise TemplateError(f"variable {name!r} is not set", fld.start) from None

    return value
