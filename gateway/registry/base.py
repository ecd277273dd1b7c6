"""Shared plumbing for the registry parts: the store, the clock, ARNs, pagination and change events."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.clock import Clock
from gateway.errors import InvalidRequestException, ResourceNotFoundException
from gateway.registry.events import RegistryEvents
from gateway.store import Store

ChangeKind = Literal["certificate", "policy", "attachment", "thing", "group", "ca"]


@dataclass(frozen=True)
class RegistryChange:
    """Something that may change what a live connection is allowed to do."""

    kind: ChangeKind
    key: str


class RegistryBase:
    def __init__(self, store: Store, clock: Clock, region: str, account: str) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self._listeners: list[Callable[[RegistryChange], None]] = []
        self.events = RegistryEvents(store, clock, region, account)
        # Bumped on every change that can affect authorization; live connections compare it per message.
        self.generation = 0

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:{kind}/{name}"

    def subscribe(self, listener: Callable[[RegistryChange], None]) -> None:
        self._listeners.append(listener)

    def _changed(self, kind: ChangeKind, key: str) -> None:
        self.generation += 1
        change = RegistryChange(kind, key)
        for listener in list(self._listeners):
            listener(change)

    def _require(self, table: str, key: str, missing: str) -> Any:
        """The row of `table` whose key column equals `key`, or AWS's not-found error."""
        column = "id" if table.endswith("certificates") else "name"
        row = self.store.one(f"SELECT * FROM {table} WHERE {column}=?", (key,))
        if row is None:
            raise ResourceNotFoundException(missing)
        return row

    def external_change(self) -> None:
        """Another process wrote the database: drop caches and re-check every live connection."""
        self.__dict__.pop("_doc_cache", None)
        self._changed("ca", "*")

    def _now_s(self) -> float:
        return self.clock.wall_ms() / 1000.0


def paginate(
    items: Sequence[Any], max_results: int | None, next_token: str | None, *, limit: int = 250
) -> tuple[list[Any], str | None]:
    """Slice a sorted listing; the token is an opaque offset, as AWS's tokens are opaque."""
    size = limit if max_results is None else max_results
    if not 1 <= size <= limit:
        raise InvalidRequestException(f"maxResults must be between 1 and {limit}")
    start = 0
    if next_token:
        try:
            start = int(base64.urlsafe_b64decode(next_token.encode()).decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestException("The nextToken is not valid") from exc
    page = list(items[start : start + size])
    end = start + size
    token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return page, token
