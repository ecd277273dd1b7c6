"""Substitution templates `${expr}` in action fields, compiled once with the rule SQL compiler (reference §5.4)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gateway.rules.ast import UNDEFINED, V2, Call, Expr, to_str
from gateway.rules.compiler import NO_VARIABLES, Env, Fn, compile_expression
from gateway.rules.functions import SIGNATURES
from gateway.rules.lexer import iter_tokens
from gateway.rules.parser import Parser, check_version
from gateway.rules.tokens import SqlParseError, Token, TokenKind

if TYPE_CHECKING:
    from gateway.rules import EvalContext

__all__ = ["Template", "compile_template"]


def _text(value: Any) -> str:
    """How a substituted value reads in the field: Undefined is empty, strings verbatim, the rest as JSON."""
    if type(value) is str:
        return value
    if value is None:
        return "null"
    text = to_str(value)
    return "" if text is UNDEFINED else str(text)


class Template:
    """A compiled action-field template: literal text and `${…}` expressions over the original payload."""

    __slots__ = ("_constant", "_parts", "_v2", "expressions", "sql_version", "text")

    def __init__(self, text: str, version: str, parts: list[str | Fn], expressions: tuple[Expr, ...]) -> None:
        self.text = text
        self.sql_version = version
        self.expressions = expressions
        self._v2 = version != "2015-10-08"
        self._parts = tuple(parts)
        self._constant = "".join(p for p in parts if isinstance(p, str)) if not expressions else None

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    @property
    def is_constant(self) -> bool:
        return self._constant is not None

    def render(self, ctx: EvalContext, variables: Mapping[str, Any] | None = None) -> str:
        """The field's text for one message; `variables` are the rule's SET values (Evaluation.variables)."""
        if self._constant is not None:
            return self._constant
        doc = ctx.document_v2 if self._v2 else ctx.document_v1
        env = Env(ctx, NO_VARIABLES if variables is None else variables)
        return "".join(part if isinstance(part, str) else _text(part(doc, env)) for part in self._parts)


class _Closing:
    """Where the `}` that ends one substitution was found."""

    offset = -1


def _substitution_tokens(text: str, start: int, closing: _Closing) -> Iterator[Token]:
    """Tokens from `start` up to the `}` that balances `${` (braces of object literals nest), then EOF."""
    depth = 0
    for token in iter_tokens(text, start):
        if token.kind is TokenKind.LBRACE:
            depth += 1
        elif token.kind is TokenKind.RBRACE:
            if depth == 0:
                closing.offset = token.start
                while True:
                    yield Token(TokenKind.EOF, "}", token.line, token.col, token.end, token.start)
            depth -= 1
        elif token.kind is TokenKind.EOF:
            raise SqlParseError(
                "Unterminated substitution", sql=text, offset=start - 2, expected="'}'", hint="write ${expression}"
            )
        yield token


def _calls(node: object) -> Iterator[Call]:
    if isinstance(node, Call):
        yield node
    if dataclasses.is_dataclass(node):
        for item in dataclasses.fields(node):
            yield from _calls(getattr(node, item.name))
    elif isinstance(node, tuple):
        for child in node:
            yield from _calls(child)


def compile_template(text: str, sql_version: str = V2, *, allow_external: bool = True) -> Template:
    """Compile `text` with `${expr}` substitutions; errors are SqlParseError positioned within `text`.

    `allow_external=False` rejects get_thing_shadow(), aws_lambda() and the other external functions, as AWS
    does in errorAction templates. A `$` not followed by `{` is literal (republish's `$$` is the action's).
    """
    version = check_version(text, sql_version)
    parts: list[str | Fn] = []
    expressions: list[Expr] = []
    position = 0
    while (opening := text.find("${", position)) >= 0:
        if opening > position:
            parts.append(text[position:opening])
        closing = _Closing()
        parser = Parser(text, _substitution_tokens(text, opening + 2, closing), version, check_variables=False)
        if parser.at(TokenKind.EOF) and closing.offset >= 0:
            raise SqlParseError("Empty substitution", sql=text, offset=opening, expected="an expression inside ${}")
        expr = parser.expression(star=True)
        parser.expect(TokenKind.EOF, "'}' to end the substitution")
        parser.check_height(expr)
        if not allow_external:
            for call in _calls(expr):
                if SIGNATURES[call.name.lower()].external:
                    raise SqlParseError(
                        f"{call.name}() is not allowed in error action templates", sql=text, offset=call.pos
                    )
        expressions.append(expr)
        parts.append(compile_expression(expr, version))
        position = closing.offset + 1
    if position < len(text):
        parts.append(text[position:])
    return Template(text, version, parts, tuple(expressions))
