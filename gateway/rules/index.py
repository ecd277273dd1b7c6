"""Which rules a topic reaches: FROM filters in the one topic trie, plus Basic Ingest by name (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from gateway.topics import TopicTrie

R = TypeVar("R")

# Topics whose matches are remembered: devices publish to the same few topics again and again.
CACHED_TOPICS = 4096


class RuleIndex(Generic[R]):
    """Maps rule names to rules, and FROM filters to the rules that use them."""

    def __init__(self) -> None:
        self._trie: TopicTrie[R] = TopicTrie()
        self._by_name: dict[str, tuple[str | None, R]] = {}
        self._cache: dict[str, list[R]] = {}

    def put(self, name: str, topic_filter: str | None, rule: R) -> None:
        self.remove(name)
        self._by_name[name] = (topic_filter, rule)
        if topic_filter:
            self._trie.add(topic_filter, rule)
            self._cache.clear()

    def remove(self, name: str) -> None:
        old = self._by_name.pop(name, None)
        if old is not None and old[0]:
            self._trie.remove(old[0], old[1])
            self._cache.clear()

    def match(self, topic: str) -> list[R]:
        """The rules whose FROM filter matches `topic`, in the trie's order; the list is shared: do not change it."""
        found = self._cache.get(topic)
        if found is None:
            found = self._trie.match(topic)
            if len(self._cache) >= CACHED_TOPICS:
                self._cache.clear()  # a fleet of distinct topics: start over rather than grow
            self._cache[topic] = found
        return found

    def get(self, name: str) -> R | None:
        found = self._by_name.get(name)
        return None if found is None else found[1]

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[R]:
        return (rule for _, rule in self._by_name.values())
