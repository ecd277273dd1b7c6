"""In-process subscribers (the dashboard's live views): they get what an MQTT client subscribed to the same filter
would get, through the same trie and the same delivery rules, without a socket or a policy of their own."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.broker.core import Subscription

#: (topic, payload, qos, publishing client id or None, MQTT 5 properties or None)
LocalCallback = Callable[[str, bytes, int, "str | None", "dict[int, Any] | None"], None]


class LocalSubscriber:
    __slots__ = ("callback", "client_id", "closed", "subscriptions")

    def __init__(self, name: str, callback: LocalCallback) -> None:
        self.client_id = name
        self.callback = callback
        self.closed = False
        self.subscriptions: dict[str, Subscription] = {}

    def __repr__(self) -> str:
        return f"LocalSubscriber({self.client_id!r}, {sorted(self.subscriptions)})"
