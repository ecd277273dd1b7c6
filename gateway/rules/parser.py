"""Recursive descent for the statement (SET/SELECT/FROM/WHERE) and a Pratt parser for expressions."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator
from typing import cast

from gateway.errors import InvalidRequestException
from gateway.rules.ast import (
    V1,
    V2,
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
from gateway.rules.functions import CAST_TYPE_NAMES, CAST_TYPES, signature_error, version_at_least
from gateway.rules.lexer import iter_tokens
from gateway.rules.tokens import KEYWORDS, SqlParseError, Token, TokenKind
from gateway.topics import validate_topic_filter

__all__ = ["MAX_DEPTH", "MAX_HEIGHT", "SQL_VERSIONS", "Parser", "check_version", "parse_rule"]

K = TokenKind
SQL_VERSIONS = (V1, V2, "beta")
MAX_DEPTH = 100  # nested parentheses, NOT, CASE…: keeps the recursive parser far from Python's recursion limit
MAX_HEIGHT = 200  # operators chain too (a + a + … nests to the left): bounds compiling, printing and evaluating
MAX_VARIABLE_CHARS = 64

# Infix operators: token → (binding power, operator name). Standard SQL precedence (reference §5.2).
_INFIX: dict[TokenKind, tuple[int, str]] = {
    K.OR: (10, "OR"),
    K.AND: (20, "AND"),
    **{kind: (40, kind.value) for kind in (K.EQ, K.NE, K.BANG_EQ, K.LT, K.LE, K.GT, K.GE)},
    K.PLUS: (50, "+"),
    K.MINUS: (50, "-"),
    K.STAR: (60, "*"),
    K.SLASH: (60, "/"),
    K.PERCENT: (60, "%"),
}
_NOT_BP = 30
_NEG_BP = 70
_POSTFIX_BP = 80
_CLAUSE_END = (K.FROM, K.WHERE, K.EOF, K.RPAREN)
_STARTS_EXPRESSION = frozenset(
    {K.IDENT, K.QUOTED_IDENT, K.NUMBER, K.STRING, K.VARIABLE, K.LPAREN, K.LBRACKET, K.LBRACE, K.MINUS, K.NOT}
    | {K.CASE, K.TRUE, K.FALSE, K.NULL}
)
_WORD_HINTS = {
    "IS": "IS NULL / IS UNDEFINED are not AWS IoT SQL; use isNull(x) or isUndefined(x)",
    "LIKE": "LIKE is not AWS IoT SQL; use regexp_matches(x, 'pattern')",
    "IN": "IN is not AWS IoT SQL; use x = 'a' OR x = 'b'",
    "BETWEEN": "BETWEEN is not AWS IoT SQL; use x >= low AND x <= high",
    **dict.fromkeys(
        ("ORDER", "GROUP", "LIMIT", "JOIN", "HAVING", "UNION"),
        "AWS IoT SQL works on one message: there is no ORDER BY, GROUP BY, LIMIT, JOIN or UNION",
    ),
}


def check_version(sql: str, version: str | None) -> str:
    """The SQL version to use (None means 2016-03-23); raises SqlParseError for an unknown one."""
    if version is None:
        return V2
    if version not in SQL_VERSIONS:
        raise SqlParseError(
            f"Unsupported SQL version {version!r}", sql=sql, offset=0, hint=f"use one of {', '.join(SQL_VERSIONS)}"
        )
    return version


def _describe(token: Token) -> str:
    return "end of input" if token.kind is K.EOF else repr(token.text)


class Parser:
    """Parses one statement or one expression from a lazy token stream (so errors come in source order)."""

    def __init__(self, source: str, tokens: Iterator[Token], version: str, *, check_variables: bool = True) -> None:
        self.source = source
        self.version = version
        self._tokens = tokens
        self._ahead: list[Token] = []
        self._depth = 0
        self._variables: set[str] | None = set() if check_variables else None

    # ---- token helpers -------------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        while len(self._ahead) <= ahead:
            self._ahead.append(next(self._tokens))
        return self._ahead[ahead]

    def advance(self) -> Token:
        token = self.peek()
        self._ahead.pop(0)
        return token

    def at(self, *kinds: TokenKind) -> bool:
        return self.peek().kind in kinds

    def error(self, token: Token, reason: str, expected: str | None = None, hint: str | None = None) -> SqlParseError:
        if hint is None and token.kind is K.IDENT:
            hint = _WORD_HINTS.get(token.text.upper())
        return SqlParseError(reason, sql=self.source, offset=token.start, expected=expected, hint=hint)

    def expect(self, kind: TokenKind, expected: str, hint: str | None = None) -> Token:
        token = self.peek()
        if token.kind is not kind:
            raise self.error(token, f"Unexpected {_describe(token)}", expected, hint)
        return self.advance()

    def _needs_v2(self, token: Token, what: str) -> None:
        if self.version == V1:
            raise self.error(token, f"{what} need SQL version {V2}", hint=f'set "awsIotSqlVersion": "{V2}"')

    def _no_trailing_comma(self, comma: Token, closing: str) -> None:
        token = self.peek()
        if token.kind in _CLAUSE_END or token.kind in (K.RBRACKET, K.RBRACE, K.SELECT):
            raise self.error(comma, "Trailing comma", "another item after ','", f"remove the ',' before {closing}")

    # ---- statement -----------------------------------------------------------------------------------------

    def parse_rule(self) -> Rule:
        assignments: tuple[Assignment, ...] = ()
        if self.at(K.SET):
            assignments = self._set_clause()
        token = self.peek()
        if token.kind is not K.SELECT:
            hint = None
            if token.kind is K.IDENT and difflib.get_close_matches(token.text.upper(), ["SELECT"], cutoff=0.6):
                hint = "did you mean SELECT?"
            raise self.error(token, f"Unexpected {_describe(token)}", "SELECT", hint)
        self.advance()
        select = self._select_body()
        topic = None
        if self.at(K.FROM):
            self.advance()
            topic = self._topic_filter()
        where = None
        if self.at(K.WHERE):
            self.advance()
            where = self.expression()
        token = self.peek()
        if token.kind is not K.EOF:
            if where is not None:
                expected = "the end of the statement"
            else:
                expected = "WHERE or the end of the statement" if topic is not None else "',', FROM or WHERE"
            hint = "did you forget AS before an alias (a AS b)?" if token.kind is K.IDENT and topic is None else None
            raise self.error(token, f"Unexpected {_describe(token)}", expected, hint)
        rule = Rule(assignments, Select(select.value, select.items, None, where), topic)
        self.check_height(rule)
        return rule

    def check_height(self, root: object) -> None:
        """Reject trees taller than MAX_HEIGHT (walked with a stack, as the tree may be too deep to recurse)."""
        stack: list[tuple[object, int, int]] = [(root, 0, 0)]
        while stack:
            node, height, offset = stack.pop()
            offset = getattr(node, "pos", offset)
            if height > MAX_HEIGHT:
                raise SqlParseError(
                    f"Expression is nested more than {MAX_HEIGHT} levels deep", sql=self.source, offset=offset
                )
            if isinstance(node, tuple):
                stack.extend((child, height, offset) for child in node)
            elif dataclasses.is_dataclass(node):
                stack.extend((getattr(node, f.name), height + 1, offset) for f in dataclasses.fields(node))

    def _set_clause(self) -> tuple[Assignment, ...]:
        self._needs_v2(self.advance(), "SET variables")
        assignments: list[Assignment] = []
        while True:
            token = self.expect(K.VARIABLE, "a variable such as @name", "SET @name = expression, @other = expression")
            name = str(token.value)
            if len(name) > MAX_VARIABLE_CHARS:
                raise self.error(token, f"Variable name is {len(name)} characters; the maximum is {MAX_VARIABLE_CHARS}")
            if self._variables is not None and name in self._variables:
                raise self.error(token, f"Variable @{name} is assigned twice", hint="SET variables are immutable")
            self.expect(K.EQ, "'='")
            expr = self.expression()
            if self._variables is not None:
                self._variables.add(name)
            assignments.append(Assignment(name, expr))
            if not self.at(K.COMMA):
                return tuple(assignments)
            self._no_trailing_comma(self.advance(), "SELECT")

    def _select_body(self) -> Select:
        first = self.peek()
        if first.kind is K.IDENT and first.text.upper() == "VALUE" and self.peek(1).kind in _STARTS_EXPRESSION:
            self.advance()
            return Select(True, (SelectItem(self.expression()),), None, None)
        if first.kind in _CLAUSE_END:
            raise self.error(
                first,
                "Missing SELECT list",
                "*, a field, or an expression",
                "SELECT * selects the whole payload; SELECT a, b AS c picks fields",
            )
        items = [self._select_item()]
        while self.at(K.COMMA):
            self._no_trailing_comma(self.advance(), "FROM")
            items.append(self._select_item())
        return Select(False, tuple(items), None, None)

    def _select_item(self) -> SelectItem:
        token = self.peek()
        expr: Expr | PathStar
        if token.kind is K.STAR:
            self.advance()
            expr = Star(token.start)
        else:
            expr = self._pratt(0, star=False, path_star=True)
        if not self.at(K.AS):
            return SelectItem(expr)
        as_token = self.advance()
        if isinstance(expr, Star | PathStar):
            raise self.error(as_token, "'*' cannot take an alias", hint="alias a field instead: a.b AS c")
        parts = [self._name("an alias")]
        while self.at(K.DOT):
            self.advance()
            parts.append(self._name("an alias part"))
        return SelectItem(expr, tuple(parts))

    def _name(self, what: str) -> str:
        token = self.peek()
        if token.kind in (K.IDENT, K.QUOTED_IDENT):
            self.advance()
            return str(token.value)
        hint = "quote unusual names with backticks: AS `my-name`"
        raise self.error(token, f"Unexpected {_describe(token)}", what, hint)

    def _topic_filter(self) -> str:
        token = self.peek()
        if token.kind is K.STRING and token.text.startswith("'"):
            self.advance()
            topic = str(token.value)
            try:
                validate_topic_filter(topic)
            except InvalidRequestException as exc:
                raise self.error(token, f"Invalid topic filter: {exc.message}") from None
            return topic
        if token.kind is K.STRING:
            raise self.error(
                token,
                "The FROM topic filter is in double quotes",
                "a single-quoted topic filter",
                f"write FROM '{token.value}' (double quotes make a plain string literal)",
            )
        if token.kind in (K.EOF, K.WHERE):
            raise self.error(token, "Missing topic filter after FROM", "a topic filter such as 'my/topic/#'")
        end = token.start
        while end < len(self.source) and not self.source[end].isspace():
            end += 1
        raw = self.source[token.start : end]
        raise self.error(
            token, "The FROM topic filter is not quoted", "a single-quoted topic filter", f"write FROM '{raw}'"
        )

    # ---- expressions (Pratt) -------------------------------------------------------------------------------

    def expression(self, rbp: int = 0, *, star: bool = False) -> Expr:
        result = self._pratt(rbp, star=star, path_star=False)
        if isinstance(result, PathStar):  # unreachable: only SELECT items allow '.*'
            raise self.error(self.peek(), "'.*' is only allowed as a whole SELECT item")
        return result

    def _pratt(self, rbp: int, *, star: bool, path_star: bool) -> Expr | PathStar:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self.error(self.peek(), f"Expression is nested more than {MAX_DEPTH} levels deep")
            token = self.advance()
            if star and token.kind is K.STAR:
                return Star(token.start)
            left = self._prefix(token)
            while True:
                token = self.peek()
                if token.kind is K.DOT and self.peek(1).kind is K.STAR:
                    if not path_star:
                        raise self.error(token, "'.*' is only allowed as a whole SELECT item", hint="use a.b.* alone")
                    self.advance()
                    self.advance()
                    return PathStar(left, token.start)
                if token.kind in _INFIX:
                    power = _INFIX[token.kind][0]
                else:
                    power = _POSTFIX_BP if token.kind in (K.DOT, K.LBRACKET) else 0
                if power <= rbp:
                    return left
                left = self._infix(self.advance(), left)
        finally:
            self._depth -= 1

    def _prefix(self, token: Token) -> Expr:
        kind = token.kind
        if kind in (K.NUMBER, K.STRING):
            return Literal(cast("str | int | float", token.value), token.start)
        if kind in (K.TRUE, K.FALSE, K.NULL):
            return Literal({K.TRUE: True, K.FALSE: False, K.NULL: None}[kind], token.start)
        if kind is K.IDENT:
            if self.at(K.LPAREN):
                return self._call(token)
            return Path(None, (str(token.value),), token.start)
        if kind is K.QUOTED_IDENT:
            return Path(None, (str(token.value),), token.start)
        if kind is K.VARIABLE:
            name = str(token.value)
            if self._variables is not None and name not in self._variables:
                raise self.error(token, f"Unknown variable @{name}", hint=f"assign it first: SET @{name} = … SELECT …")
            return Var(name, token.start)
        if kind is K.LPAREN:
            if self.at(K.SELECT):
                return self._subquery(token)
            inner = self.expression()
            self.expect(K.RPAREN, f"')' to close the '(' at column {token.col}")
            return inner
        if kind is K.LBRACKET:
            self._needs_v2(token, "Array literals")
            return ArrayLit(tuple(self._list(K.RBRACKET, "']'")), token.start)
        if kind is K.LBRACE:
            return self._object(token)
        if kind is K.MINUS:
            return Unary("-", self.expression(_NEG_BP), token.start)
        if kind is K.NOT:
            return Unary("NOT", self.expression(_NOT_BP), token.start)
        if kind is K.CASE:
            return self._case(token)
        if kind is K.STAR:
            raise self.error(token, "'*' is only allowed as a SELECT item or a function argument")
        raise self.error(token, f"Unexpected {_describe(token)}", "an expression")

    def _infix(self, token: Token, left: Expr) -> Expr:
        if token.kind in _INFIX:
            power, op = _INFIX[token.kind]
            return Binary(op, left, self.expression(power), token.start)
        step: str | int
        if token.kind is K.DOT:
            name = self.advance()
            if name.kind in (K.IDENT, K.QUOTED_IDENT) or name.kind.value in KEYWORDS:
                step = str(name.value)
            elif name.kind is K.NUMBER:
                raise self.error(name, "A member name cannot start with a digit", hint=f"use get(x, '{name.text}')")
            else:
                raise self.error(name, f"Unexpected {_describe(name)}", "a member name after '.'")
        else:
            index = self.advance()
            if index.kind is not K.NUMBER or type(index.value) is not int:
                raise self.error(
                    index, "An array index must be a non-negative integer", hint="use get(array, expression)"
                )
            self.expect(K.RBRACKET, "']'")
            step = index.value
        if isinstance(left, Path):
            return Path(left.base, (*left.steps, step), left.pos)
        return Path(left, (step,), left.pos)

    def _list(self, closing: TokenKind, what: str, *, star: bool = False) -> list[Expr]:
        items: list[Expr] = []
        while not self.at(closing):
            items.append(self.expression(star=star))
            if not self.at(closing):
                self._no_trailing_comma(self.expect(K.COMMA, f"',' or {what}"), what)
        self.advance()
        return items

    def _object(self, brace: Token) -> ObjectLit:
        self._needs_v2(brace, "Object literals")
        items: list[tuple[str, Expr]] = []
        while not self.at(K.RBRACE):
            key = self.peek()
            if key.kind not in (K.STRING, K.IDENT, K.QUOTED_IDENT):
                raise self.error(key, f"Unexpected {_describe(key)}", "a key such as 'name'")
            self.advance()
            self.expect(K.COLON, "':' after the key")
            items.append((str(key.value), self.expression()))
            if not self.at(K.RBRACE):
                self._no_trailing_comma(self.expect(K.COMMA, "',' or '}'"), "'}'")
        self.advance()
        return ObjectLit(tuple(items), brace.start)

    def _call(self, name: Token) -> Expr:
        self.advance()
        if str(name.value).lower() == "cast":
            return self._cast(name)
        args = self._list(K.RPAREN, "')'", star=True)
        problem = signature_error(str(name.value), len(args), self.version)
        if problem is not None:
            raise self.error(name, problem[0], hint=problem[1])
        return Call(str(name.value), tuple(args), name.start)

    def _cast(self, name: Token) -> Cast:
        expr = self.expression()
        self.expect(K.AS, "AS", "cast(value AS Type), e.g. cast(x AS Int)")
        type_token = self.expect(K.IDENT, "a type name such as String, Int, Decimal or Boolean")
        entry = CAST_TYPES.get(str(type_token.value).lower())
        if entry is None:
            names = {name.lower(): name for name in CAST_TYPE_NAMES}
            close = difflib.get_close_matches(str(type_token.value).lower(), names, n=1, cutoff=0.5)
            hint = f"did you mean {names[close[0]]}?" if close else "types: " + ", ".join(CAST_TYPE_NAMES)
            raise self.error(type_token, f"Unknown cast type {type_token.text}", hint=hint)
        if not version_at_least(self.version, entry[1]):
            self._needs_v2(type_token, f"Casts to {type_token.text}")
        self.expect(K.RPAREN, "')'")
        return Cast(expr, str(type_token.value), name.start)

    def _case(self, token: Token) -> Case:
        subject = None if self.at(K.WHEN) else self.expression()
        whens: list[When] = []
        while self.at(K.WHEN):
            self.advance()
            cond = self.expression()
            self.expect(K.THEN, "THEN")
            whens.append(When(cond, self.expression()))
        if not whens:
            raise self.error(self.peek(), f"Unexpected {_describe(self.peek())}", "WHEN (CASE needs at least one)")
        default = None
        if self.at(K.ELSE):
            self.advance()
            default = self.expression()
        self.expect(K.END, "WHEN, ELSE or END")
        return Case(subject, tuple(whens), default, token.start)

    def _subquery(self, paren: Token) -> Subquery:
        self._needs_v2(self.peek(), "Nested SELECT queries")
        self.advance()
        body = self._select_body()
        self.expect(K.FROM, "FROM", "a nested SELECT reads from the payload: (SELECT VALUE n FROM e)")
        source = self.expression()
        where = None
        if self.at(K.WHERE):
            self.advance()
            where = self.expression()
        self.expect(K.RPAREN, "')' to close the nested SELECT")
        return Subquery(Select(body.value, body.items, source, where), paren.start)


def parse_rule(sql: str, version: str | None = V2) -> Rule:
    """Parse a rule statement; raises SqlParseError pointing at the first problem."""
    version = check_version(sql, version)
    return Parser(sql, iter_tokens(sql), version).parse_rule()
