"""Fleet indexing's query syntax, parsed and evaluated over flattened thing documents (pure).

    thingName:lamp-*            field and value; `*` and `?` wildcards; "quoted values"
    attributes.floor:3          registry attributes; shadow.reported.temp, shadow.desired.x, shadow.hasDelta,
                                shadow.version, shadow.name.<shadow>.reported.x, connectivity.connected, ...
    shadow.reported.temp>20     comparisons: < <= > >= (numbers, else text)
    attributes.floor:[2 TO 5]   ranges, inclusive [ ] or exclusive { }, `*` for an open end
    a AND b, a OR b, NOT a, (a OR b) c    (terms side by side are ANDed)
    lamp-1                      a bare value matches the thing name; `*` alone matches every thing

Anything else is an InvalidQueryException naming the position, never another error.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.registry.exceptions import InvalidQueryException

MAX_QUERY_LENGTH = 1000


@dataclass(frozen=True)
class Term:
    field: str
    op: str  # ":" (match), "<", "<=", ">", ">=", "range"
    value: str = ""
    low: str = "*"
    high: str = "*"
    low_inclusive: bool = True
    high_inclusive: bool = True


@dataclass(frozen=True)
class Not:
    inner: Query


@dataclass(frozen=True)
class And:
    parts: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Query, ...]


Query = Term | Not | And | Or

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<quoted>"(?:[^"\\]|\\.)*")
      | (?P<cmp><=|>=|<|>)
      | (?P<punct>[():\[\]{}])
      | (?P<word>[^\s()"<>:\[\]{}]+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    at: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise InvalidQueryException(f"Syntax error in query at position {at + 1}: unexpected {text[at]!r}")
        kind = next(k for k, v in found.groupdict().items() if v is not None)
        value = found.group(kind)
        start = found.start(kind)
        if kind == "quoted":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(_Tok(kind, value, start))
        at = found.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _error(self, what: str) -> InvalidQueryException:
        tok = self._peek()
        where = f"position {tok.at + 1}" if tok else "the end of the query"
        return InvalidQueryException(f"Syntax error in query at {where}: {what}")

    def _keyword(self, word: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "word" and tok.text == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Query:
        if not self.toks:
            raise InvalidQueryException("The query string is empty")
        query = self._or()
        if self._peek() is not None:
            raise self._error(f"unexpected {self._peek().text!r}")  # type: ignore[union-attr]
        return query

    def _or(self) -> Query:
        parts = [self._and()]
        while self._keyword("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def _and(self) -> Query:
        parts = [self._not()]
        while True:
            tok = self._peek()
            if tok is None or (tok.kind == "punct" and tok.text == ")") or (tok.kind == "word" and tok.text == "OR"):
                break
            self._keyword("AND")
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def _not(self) -> Query:
        if self._keyword("NOT"):
            return Not(self._not())
        return self._primary()

    def _primary(self) -> Query:
        tok = self._peek()
        if tok is None:
            raise self._error("a term is missing")
        if tok.kind == "punct" and tok.text == "(":
            self.i += 1
            inner = self._or()
            close = self._peek()
            if close is None or close.text != ")" or close.kind != "punct":
                raise self._error("')' expected")
            self.i += 1
            return inner
        if tok.kind not in ("word", "quoted") or tok.text in ("AND", "OR"):
            raise self._error(f"unexpected {tok.text!r}")
        self.i += 1
        nxt = self._peek()
        if tok.kind == "word" and nxt is not None and nxt.kind == "cmp":
            self.i += 1
            return Term(tok.text, nxt.text, self._value())
        if tok.kind == "word" and nxt is not None and nxt.kind == "punct" and nxt.text == ":":
            self.i += 1
            after = self._peek()
            if after is not None and after.kind == "punct" and after.text in "[{":
                return self._range(tok.text)
            return Term(tok.text, ":", self._value())
        return Term("thingName", ":", tok.text)

    def _value(self) -> str:
        tok = self._peek()
        if tok is None or tok.kind not in ("word", "quoted"):
            raise self._error("a value is missing")
        self.i += 1
        return tok.text

    def _range(self, field: str) -> Query:
        opening = self.toks[self.i]
        self.i += 1
        low = self._value()
        if not self._keyword("TO"):
            raise self._error("'TO' expected in a range")
        high = self._value()
        closing = self._peek()
        if closing is None or closing.kind != "punct" or closing.text not in "]}":
            raise self._error("']' or '}' expected to close the range")
        self.i += 1
        return Term(field, "range", "", low, high, opening.text == "[", closing.text == "]")


@lru_cache(maxsize=256)
def parse(text: str) -> Query:
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidQueryException(f"The query string is longer than {MAX_QUERY_LENGTH} characters")
    return _Parser(text).parse()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _compare(actual: Any, wanted: str) -> int | None:
    """-1, 0, 1 comparing `actual` with `wanted` (numerically when both are numbers); None when incomparable."""
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        return (a > w) - (a < w)
    if isinstance(actual, (dict, list)):
        return None
    left = _text(actual)
    return (left > wanted) - (left < wanted)


def _match_one(term: Term, actual: Any) -> bool:
    if isinstance(actual, dict):
        return term.op == ":" and term.value == "*"
    if term.op == ":":
        if term.value == "*":
            return True
        if any(c in term.value for c in "*?"):
            return fnmatch.fnmatchcase(_text(actual), term.value.replace("[", "[[]"))
        a, w = _number(actual), _number(term.value)
        if a is not None and w is not None and not isinstance(actual, str):
            return a == w
        return _text(actual) == term.value
    if term.op == "range":
        if term.low != "*":
            low = _compare(actual, term.low)
            if low is None or low < 0 or (low == 0 and not term.low_inclusive):
                return False
        if term.high != "*":
            high = _compare(actual, term.high)
            if high is None or high > 0 or (high == 0 and not term.high_inclusive):
                return False
        return True
    order = _compare(actual, term.value)
    if order is None:
        return False
    return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[term.op]


def matches(query: Query, document: Mapping[str, Any]) -> bool:
    """Does the flattened document (`{"thingName": ..., "attributes.x": ..., "shadow.reported.a.b": ...}`) match?"""
    if isinstance(query, Not):
        return not matches(query.inner, document)
    if isinstance(query, And):
        return all(matches(p, document) for p in query.parts)
    if isinstance(query, Or):
        return any(matches(p, document) for p in query.parts)
    if query.field == "thingName" and query.op == ":" and query.value == "*":
        return "thingName" in document
    if query.field not in document:
        return False
    actual = document[query.field]
    values = actual if isinstance(actual, list) else [actual]
    return any(_match_one(query, v) for v in values)


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """`{"a": {"b": 1}}` under `shadow.reported` → `shadow.reported.a.b: 1` (objects are kept too, for `field:*`)."""
    out[prefix] = value
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}", inner, out)
