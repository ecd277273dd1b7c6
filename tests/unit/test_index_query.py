"""The fleet indexing query language: parsing, evaluation, and fuzzing (no input escapes InvalidQueryException)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.registry.exceptions import InvalidQueryException
from gateway.registry.index_query import Not, flatten, matches, parse

DOC: dict[str, Any] = {"thingName": "lamp-7", "thingGroupNames": ["kitchen", "floor-2"]}
flatten("attributes", {"floor": "2", "model": "X 100"}, DOC)
flatten("shadow", {"reported": {"temp": 21.5, "on": True}, "hasDelta": False}, DOC)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("*", True),
        ("lamp-7", True),
        ("lamp-?", True),
        ("thingName:lamp*", True),
        ("thingName:LAMP*", False),
        ("attributes.floor:2", True),
        ('attributes.model:"X 100"', True),
        ("attributes.floor:[1 TO 2]", True),
        ("attributes.floor:[1 TO 2}", False),
        ("attributes.floor:{2 TO *]", False),
        ("shadow.reported.temp>21", True),
        ("shadow.reported.temp >= 21.5 AND shadow.reported.temp<=21.5", True),
        ("shadow.reported.temp < 21", False),
        ("shadow.reported.on:true", True),
        ("shadow.hasDelta:false", True),
        ("shadow.reported:*", True),
        ("shadow.desired.temp:*", False),
        ("thingGroupNames:kitchen", True),
        ("thingGroupNames:floor-*", True),
        ("NOT thingGroupNames:garage", True),
        ("attributes.floor:3 OR (thingName:lamp-7 AND NOT attributes.floor:3)", True),
        ("attributes.floor:2 attributes.model:Y", False),
        ("attributes.missing:*", False),
    ],
)
def test_queries(query: str, expected: bool) -> None:
    assert matches(parse(query), DOC) is expected


@pytest.mark.parametrize(
    "query", ["", "   ", "(a", "a)", "attributes.x:", "x:[1 TO", "x:[1 2]", "AND", "x > ", "NOT", 'x:"open']
)
def test_malformed_queries_are_invalid_query_exceptions(query: str) -> None:
    with pytest.raises(InvalidQueryException):
        parse(query)


@given(st.text(max_size=60))
def test_any_text_parses_or_is_an_invalid_query(text: str) -> None:
    try:
        query = parse(text)
    except InvalidQueryException:
        return
    assert matches(Not(query), DOC) is not matches(query, DOC)


_WORDS = st.sampled_from(["thingName:lamp*", "attributes.floor:2", "shadow.reported.temp>20", "lamp-1", "*"])


@given(st.recursive(_WORDS, lambda inner: st.tuples(inner, st.sampled_from([" AND ", " OR "]), inner).map("".join)))
def test_generated_boolean_queries_evaluate(text: str) -> None:
    assert isinstance(matches(parse(text), DOC), bool)
    assert matches(parse(f"({text})"), DOC) == matches(parse(text), DOC)
