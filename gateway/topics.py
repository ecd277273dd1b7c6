"""MQTT topic names and filters: validation and matching with AWS IoT Core semantics (reference §1.1, §1.3)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Generic, TypeVar

from gateway.errors import InvalidRequestException
from gateway.limits import MAX_TOPIC_BYTES, MAX_TOPIC_SLASHES
from mqttwire.topics import (
    MAX_SHARE_NAME_CHARS,
    SHARE_PREFIX,
    shorten,
    split_shared_filter,
    topic_filter_error,
    topic_name_error,
)

__all__ = [
    "BASIC_INGEST_PREFIX",
    "MAX_SHARE_NAME_CHARS",
    "SHARE_PREFIX",
    "TopicTrie",
    "matches",
    "split_basic_ingest",
    "split_shared_filter",
    "validate_topic_filter",
    "validate_topic_name",
]

V = TypeVar("V")
BASIC_INGEST_PREFIX = "$aws/rules/"


def split_basic_ingest(topic: str) -> tuple[str | None, str]:
    """Split `$aws/rules/<rule>/<rest>` into `(rule, rest)`; other topics give `(None, topic)`."""
    if not topic.startswith(BASIC_INGEST_PREFIX):
        return None, topic
    rest = topic[len(BASIC_INGEST_PREFIX) :]
    slash = rest.find("/")
    if slash <= 0:
        return None, topic
    return rest[:slash], rest[slash + 1 :]


def _check_limits(kind: str, whole: str, counted: str, max_bytes: int, max_slashes: int) -> None:
    size = len(counted.encode("utf-8"))
    if size > max_bytes:
        raise InvalidRequestException(f"{kind} is {size} bytes of UTF-8; the maximum is {max_bytes}: {shorten(whole)}")
    slashes = counted.count("/")
    if slashes > max_slashes:
        raise InvalidRequestException(
            f"{kind} has {slashes} forward slashes; the maximum is {max_slashes}: {shorten(whole)}"
        )


def validate_topic_name(topic: str, *, max_bytes: int = MAX_TOPIC_BYTES, max_slashes: int = MAX_TOPIC_SLASHES) -> None:
    """Raise `InvalidRequestException` unless `topic` is a valid topic name to publish to.

    The Basic Ingest prefix `$aws/rules/<rule>/` counts toward neither the byte nor the slash limit.
    """
    error = topic_name_error(topic)
    if error is not None:
        raise InvalidRequestException(error)
    _, counted = split_basic_ingest(topic)
    _check_limits("Topic name", topic, counted, max_bytes, max_slashes)


def validate_topic_filter(
    topic_filter: str, *, max_bytes: int = MAX_TOPIC_BYTES, max_slashes: int = MAX_TOPIC_SLASHES
) -> None:
    """Raise `InvalidRequestException` unless `topic_filter` is a valid subscription filter.

    `$share/<name>/<filter>` is accepted; the limits then apply to the inner filter only, so the two
    structural slashes are not counted.
    """
    error = topic_filter_error(topic_filter)
    if error is not None:
        raise InvalidRequestException(error)
    _, inner = split_shared_filter(topic_filter)
    _check_limits("Topic filter", topic_filter, inner, max_bytes, max_slashes)


def matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` matches the (valid) `topic_filter` under AWS IoT rules.

    `+` matches exactly one level; `#` matches one or more remaining levels but, unlike the MQTT spec,
    not the parent (`a/#` matches `a/` and `a/b` but not `a`). Filters starting with a wildcard never
    match topics starting with `$` (MQTT-4.7.2-1). A `$share/<name>/` prefix is ignored.
    """
    _, inner = split_shared_filter(topic_filter)
    flevels = inner.split("/")
    tlevels = topic.split("/")
    if topic.startswith("$") and flevels[0] in ("+", "#"):
        return False
    ntopic = len(tlevels)
    for i, flevel in enumerate(flevels):
        if flevel == "#":
            return ntopic > i
        if i >= ntopic:
            return False
        if flevel != "+" and flevel != tlevels[i]:
            return False
    return len(flevels) == ntopic


class _Node(Generic[V]):
    __slots__ = ("children", "filters", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        # Parallel lists: match() extends with `values` directly, match_filters() zips both.
        self.filters: list[str] = []
        self.values: list[V] = []


_NO_LIMIT = sys.maxsize


class TopicTrie(Generic[V]):
    """Maps topic filters to values and finds every value whose filter matches a topic.

    A value may be stored under many filters; each `(filter, value)` pair is stored once, values being
    compared by identity or equality. `$share/<name>/<filter>` is stored under its inner filter but
    reported with the filter as given.
    """

    __slots__ = ("_counts", "_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._counts: dict[str, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[str, V]]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from zip(node.filters, node.values, strict=True)
            stack.extend(node.children.values())

    def filters(self) -> list[str]:
        """Every distinct filter holding at least one value, in insertion order."""
        return list(self._counts)

    def add(self, topic_filter: str, value: V) -> bool:
        """Store `value` under `topic_filter`; False if that pair was already stored.

        Raises `InvalidRequestException` for a structurally invalid filter (length limits are the
        caller's business, since they are configurable).
        """
        validate_topic_filter(topic_filter, max_bytes=_NO_LIMIT, max_slashes=_NO_LIMIT)
        _, inner = split_shared_filter(topic_filter)
        node = self._root
        for level in inner.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        for f, v in zip(node.filters, node.values, strict=True):
            if f == topic_filter and (v is value or v == value):
                return False
        node.filters.append(topic_filter)
        node.values.append(value)
        self._counts[topic_filter] = self._counts.get(topic_filter, 0) + 1
        self._size += 1
        return True

    def remove(self, topic_filter: str, value: V) -> bool:
        """Remove the pair `(topic_filter, value)`; False if it was not stored."""
        if topic_filter not in self._counts:
            return False
        _, inner = split_shared_filter(topic_filter)
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in inner.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        for i, (f, v) in enumerate(zip(node.filters, node.values, strict=True)):
            if f == topic_filter and (v is value or v == value):
                del node.filters[i]
                del node.values[i]
                break
        else:
            return False
        remaining = self._counts[topic_filter] - 1
        if remaining:
            self._counts[topic_filter] = remaining
        else:
            del self._counts[topic_filter]
        self._size -= 1
        for parent, level in reversed(path):
            if node.values or node.children:
                break
            del parent.children[level]
            node = parent
        return True

    def _nodes(self, topic: str) -> list[_Node[V]]:
        levels = topic.split("/")
        n = len(levels)
        dollar = topic.startswith("$")
        found: list[_Node[V]] = []
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        pop = stack.pop
        push = stack.append
        while stack:
            node, i = pop()
            if i == n:
                if node.values:
                    found.append(node)
                continue
            children = node.children
            if not children:
                continue
            if i or not dollar:
                hash_node = children.get("#")
                if hash_node is not None and hash_node.values:
                    found.append(hash_node)
                plus_node = children.get("+")
                if plus_node is not None:
                    push((plus_node, i + 1))
            else:
                hash_node = plus_node = None
            literal = children.get(levels[i])
            # A topic level spelled "+" or "#" would reach the wildcard node a second time.
            if literal is not None and literal is not plus_node and literal is not hash_node:
                push((literal, i + 1))
        return found

    def match(self, topic: str) -> list[V]:
        """Every value whose filter matches `topic` (one entry per matching `(filter, value)` pair)."""
        nodes = self._nodes(topic)
        if len(nodes) == 1:
            return list(nodes[0].values)
        out: list[V] = []
        for node in nodes:
            out.extend(node.values)
        return out

    def match_filters(self, topic: str) -> list[tuple[str, V]]:
        """Like `match`, with the filter each value was stored under."""
        out: list[tuple[str, V]] = []
        for node in self._nodes(topic):
            out.extend(zip(node.filters, node.values, strict=True))
        return out
