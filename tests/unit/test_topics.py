"""Topic validation, AWS matching semantics and the TopicTrie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequestException
from gateway.topics import (
    TopicTrie,
    matches,
    split_basic_ingest,
    split_shared_filter,
    validate_topic_filter,
    validate_topic_name,
)

# --- validation -----------------------------------------------------------------------------------

EIGHT_LEVELS = "a/b/c/d/e/f/g/h"  # 7 slashes
NINE_LEVELS = "a/b/c/d/e/f/g/h/i"  # 8 slashes


@pytest.mark.parametrize(
    "topic",
    [
        "a",
        "sensor/temp",
        "sensor/",
        "/leading",
        "$aws/things/lamp/shadow/update",
        "ünïcode/τopic",
        EIGHT_LEVELS,
        "x" * 256,
        # Basic Ingest prefix counts toward neither limit.
        "$aws/rules/myRule/" + EIGHT_LEVELS,
        "$aws/rules/myRule/" + "x" * 256,
    ],
)
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "empty"),
        ("a/+/b", "wildcards"),
        ("a/#", "wildcards"),
        ("a+b", "wildcards"),
        ("a\x00b", "NUL"),
        ("x" * 257, "257 bytes"),
        ("é" * 129, "258 bytes"),
        (NINE_LEVELS, "8 forward slashes"),
        ("$aws/rules/myRule/" + NINE_LEVELS, "8 forward slashes"),
        ("$aws/rules/myRule/" + "x" * 257, "257 bytes"),
        ("\ud800", "UTF-8"),
    ],
)
def test_invalid_topic_names(topic: str, message: str) -> None:
    with pytest.raises(InvalidRequestException, match=message):
        validate_topic_name(topic)


def test_topic_limits_are_overridable() -> None:
    validate_topic_name(NINE_LEVELS, max_slashes=8)
    validate_topic_name("x" * 300, max_bytes=300)
    with pytest.raises(InvalidRequestException):
        validate_topic_name("abc", max_bytes=2)


def test_basic_ingest_without_rule_topic_counts_fully() -> None:
    # Without a "/" after the rule name there is no Basic Ingest prefix to exclude.
    with pytest.raises(InvalidRequestException, match="261 bytes"):
        validate_topic_name("$aws/rules/" + "x" * 250)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "a",
        "+",
        "#",
        "a/+/c",
        "a/#",
        "+/+/#",
        "sensor/+/",
        "$aws/things/+/shadow/update/accepted",
        EIGHT_LEVELS,
        "a/b/c/d/e/f/g/#",
        "$share/group/" + EIGHT_LEVELS,
        "$share/g/#",
        "$share/" + "n" * 128 + "/a",
    ],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "message"),
    [
        ("", "empty"),
        ("a/b+", r"'\+' must occupy a whole"),
        ("a/+b/c", r"'\+' must occupy a whole"),
        ("a#", "'#' is only allowed"),
        ("a/#/b", "'#' is only allowed"),
        ("#/a", "'#' is only allowed"),
        ("a/\x00", "NUL"),
        (NINE_LEVELS, "8 forward slashes"),
        ("y" * 257, "257 bytes"),
        ("$share/", "share name"),
        ("$share//a", "share name"),
        ("$share/g", "topic filter after"),
        ("$share/g/", "topic filter after"),
        ("$share/g+/a", "Share name must not"),
        ("$share/g#/a", "Share name must not"),
        ("$share/" + "n" * 129 + "/a", "129 characters"),
        ("$share/g/" + NINE_LEVELS, "8 forward slashes"),
        ("$share/g/a+", r"'\+' must occupy"),
    ],
)
def test_invalid_topic_filters(topic_filter: str, message: str) -> None:
    with pytest.raises(InvalidRequestException, match=message):
        validate_topic_filter(topic_filter)


def test_split_helpers() -> None:
    assert split_basic_ingest("$aws/rules/R/a/dev1/c") == ("R", "a/dev1/c")
    assert split_basic_ingest("a/b") == (None, "a/b")
    assert split_basic_ingest("$aws/rules/R") == (None, "$aws/rules/R")
    assert split_shared_filter("$share/g/a/+") == ("g", "a/+")
    assert split_shared_filter("a/+") == (None, "a/+")
    assert split_shared_filter("$share/g") == (None, "$share/g")


# --- matching -------------------------------------------------------------------------------------

MATCH_TABLE = [
    # filter, topic, expected
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "A/b", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+", "", True),
    ("a/+", "a/b", True),
    ("a/+", "a/", True),
    ("a/+", "a", False),
    ("a/+", "a/b/c", False),
    ("a/+/c", "a/x/c", True),
    ("a/+/c", "a/x/d", False),
    ("+/+", "/x", True),
    ("/+", "/x", True),
    ("#", "a", True),
    ("#", "a/b/c", True),
    ("#", "/", True),
    # AWS deviation: "#" does not match the parent level.
    ("sensor/#", "sensor", False),
    ("sensor/#", "sensor/", True),
    ("sensor/#", "sensor/a", True),
    ("sensor/#", "sensor/a/b", True),
    ("sensor/+/#", "sensor/a", False),
    ("sensor/+/#", "sensor/a/b", True),
    ("a/b/#", "a/b", False),
    ("a/b/#", "a/bc", False),
    # Leading wildcards do not match "$" topics; literal "$" levels do.
    ("#", "$aws/things/x", False),
    ("+/things/x", "$aws/things/x", False),
    ("+", "$SYS", False),
    ("$aws/#", "$aws/things/x", True),
    ("$aws/things/+/shadow/#", "$aws/things/lamp/shadow/update", True),
    ("$aws/+/x", "$aws/things/x", True),
    ("a/#", "a/$b", True),
    # Shared subscription prefix is ignored for matching.
    ("$share/g/sensor/+", "sensor/a", True),
    ("$share/g/sensor/#", "sensor", False),
    ("$share/g/#", "$aws/x", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_trie_agrees_with_table(topic_filter: str, topic: str, expected: bool) -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add(topic_filter, "v")
    assert trie.match(topic) == (["v"] if expected else [])


# --- TopicTrie ------------------------------------------------------------------------------------


def test_trie_add_match_remove() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert trie.add("a/+", "c1")
    assert trie.add("a/#", "c1")
    assert trie.add("a/b", "c2")
    assert trie.add("#", "c3")
    assert not trie.add("a/+", "c1"), "the same pair is stored once"
    assert len(trie) == 4
    assert sorted(trie.match("a/b")) == ["c1", "c1", "c2", "c3"]
    assert sorted(trie.match_filters("a/b")) == [("#", "c3"), ("a/#", "c1"), ("a/+", "c1"), ("a/b", "c2")]
    assert sorted(trie.match("a")) == ["c3"]
    assert trie.match("$aws/x") == []
    assert set(trie.filters()) == {"a/+", "a/#", "a/b", "#"}

    assert trie.remove("a/+", "c1")
    assert not trie.remove("a/+", "c1")
    assert not trie.remove("nope/x", "c1")
    assert not trie.remove("a/b", "c9")
    assert sorted(trie.match("a/b")) == ["c1", "c2", "c3"]
    assert len(trie) == 3
    assert "a/+" not in trie.filters()


def test_trie_prunes_empty_nodes() -> None:
    trie: TopicTrie[int] = TopicTrie()
    trie.add("a/b/c/d", 1)
    trie.add("a/+", 2)
    trie.remove("a/b/c/d", 1)
    root = trie._root
    assert set(root.children) == {"a"}
    assert set(root.children["a"].children) == {"+"}
    trie.remove("a/+", 2)
    assert root.children == {}
    assert len(trie) == 0
    assert list(trie) == []


def test_trie_values_compared_by_equality_and_identity() -> None:
    class Sub:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Sub)

        __hash__ = None  # type: ignore[assignment]

    trie: TopicTrie[object] = TopicTrie()
    first = Sub()
    trie.add("a", first)
    assert not trie.add("a", Sub()), "an equal (unhashable) value counts as the same"
    assert trie.remove("a", Sub())
    assert len(trie) == 0

    nan = float("nan")  # not equal to itself: identity must still find it
    trie.add("a", nan)
    assert not trie.add("a", nan)
    assert trie.remove("a", nan)


def test_trie_same_value_many_filters_and_shared() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("sensor/+", "c")
    trie.add("$share/g/sensor/+", "c")
    trie.add("$share/h/sensor/+", "d")
    assert sorted(trie.match_filters("sensor/x")) == [
        ("$share/g/sensor/+", "c"),
        ("$share/h/sensor/+", "d"),
        ("sensor/+", "c"),
    ]
    assert trie.remove("$share/g/sensor/+", "c")
    assert sorted(trie.match("sensor/x")) == ["c", "d"]


def test_trie_rejects_invalid_filter() -> None:
    trie: TopicTrie[str] = TopicTrie()
    with pytest.raises(InvalidRequestException):
        trie.add("a/b#", "x")
    # Length limits are left to the caller.
    trie.add("/".join("l" * 20), "deep")
    assert trie.match("/".join("l" * 20)) == ["deep"]


def test_trie_topic_levels_spelled_like_wildcards_match_once() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a/+", "plus")
    trie.add("a/#", "hash")
    # Invalid topic names, but the trie must still not report a pair twice.
    assert sorted(trie.match("a/+")) == ["hash", "plus"]
    assert sorted(trie.match("a/#")) == ["hash", "plus"]


LEVELS = st.sampled_from(["a", "b", "$s", ""])
FILTER_LEVELS = st.sampled_from(["a", "b", "$s", "", "+"])


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVELS, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    text = "/".join(levels) or "+"
    if draw(st.integers(0, 5)) == 0:
        text = f"$share/{draw(st.sampled_from(['g', 'h']))}/{text}"
    return text


topics = st.lists(LEVELS, min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(topic_filters(), st.integers(0, 3)), max_size=12),
    removals=st.lists(st.tuples(topic_filters(), st.integers(0, 3)), max_size=6),
    probes=st.lists(topics, min_size=1, max_size=8),
)
def test_trie_match_equals_brute_force(
    pairs: list[tuple[str, int]], removals: list[tuple[str, int]], probes: list[str]
) -> None:
    trie: TopicTrie[int] = TopicTrie()
    stored: set[tuple[str, int]] = set()
    for topic_filter, value in pairs:
        assert trie.add(topic_filter, value) is ((topic_filter, value) not in stored)
        stored.add((topic_filter, value))
    for topic_filter, value in removals:
        assert trie.remove(topic_filter, value) is ((topic_filter, value) in stored)
        stored.discard((topic_filter, value))
    assert len(trie) == len(stored)
    assert set(trie.filters()) == {f for f, _ in stored}
    assert sorted(trie) == sorted(stored)
    for topic in probes:
        expected = sorted((f, v) for f, v in stored if matches(f, topic))
        assert sorted(trie.match_filters(topic)) == expected
        assert sorted(trie.match(topic)) == sorted(v for _, v in expected)
