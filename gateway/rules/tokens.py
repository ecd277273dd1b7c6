"""SQL tokens, source positions, and the two errors the SQL core raises (positioned parse errors, evaluation errors)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import AwsError, EdgesimError

__all__ = [
    "KEYWORDS",
    "SqlEvaluationError",
    "SqlParseError",
    "Token",
    "TokenKind",
    "line_col",
]


class TokenKind(enum.Enum):
    IDENT = "identifier"
    QUOTED_IDENT = "`quoted identifier`"
    NUMBER = "number"
    STRING = "string"
    VARIABLE = "@variable"
    # Reserved words (case-insensitive in the source).
    SELECT = "SELECT"
    FROM = "FROM"
    WHERE = "WHERE"
    AS = "AS"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    CASE = "CASE"
    WHEN = "WHEN"
    THEN = "THEN"
    ELSE = "ELSE"
    END = "END"
    TRUE = "TRUE"
    FALSE = "FALSE"
    NULL = "NULL"
    SET = "SET"
    # Punctuation and operators.
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    DOT = "."
    COLON = ":"
    STAR = "*"
    PLUS = "+"
    MINUS = "-"
    SLASH = "/"
    PERCENT = "%"
    EQ = "="
    NE = "<>"
    BANG_EQ = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EOF = "end of input"


KEYWORDS: dict[str, TokenKind] = {
    kind.value: kind for kind in TokenKind if kind.value.isalpha() and kind.value.isupper()
}


@dataclass(frozen=True, slots=True)
class Token:
    """One token: `text` is the source slice; `value` the decoded literal (string, number) or name."""

    kind: TokenKind
    text: str
    line: int
    col: int
    end: int
    start: int = 0
    value: object = None


def line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of `offset` in `source`."""
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _pointer(sql: str, line: int, column: int) -> str:
    """` (line L, column C)` and the source line with a caret under the column."""
    lines = sql.split("\n")
    source_line = lines[line - 1] if line <= len(lines) else ""
    caret = "".join("\t" if ch == "\t" else " " for ch in source_line[: column - 1]) + "^"
    return f" (line {line}, column {column})\n  {source_line}\n  {caret}"


class SqlParseError(AwsError):
    """Invalid rule SQL or substitution template, pointing at the offending token with a caret."""

    code = "SqlParseException"
    http_status = 400

    def __init__(
        self,
        reason: str,
        *,
        sql: str,
        offset: int,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.sql = sql
        self.offset = max(0, min(offset, len(sql)))
        self.line, self.column = line_col(sql, self.offset)
        self.reason = reason
        self.expected = expected
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.reason
        if self.expected:
            text += f"; expected {self.expected}"
        text += _pointer(self.sql, self.line, self.column)
        if self.hint:
            text += f"\nHint: {self.hint}"
        return text


class SqlEvaluationError(EdgesimError):
    """A rule called a function the simulator cannot run here (no hook, or an AWS-only service), or a hook failed."""

    def __init__(self, function: str, message: str) -> None:
        super().__init__(f"{function}(): {message}")
        self.function = function


class SqlOutputError(SqlEvaluationError):
    """A result the rule's SQL version cannot output (2015-10-08: a top-level array), pointing at its expression."""

    def __init__(self, reason: str, *, sql: str, offset: int) -> None:
        self.line, self.column = line_col(sql, max(0, min(offset, len(sql))))
        EdgesimError.__init__(self, reason + _pointer(sql, self.line, self.column))
        self.function = "SELECT VALUE"
