"""The message every door produces and every consumer (subscribers, shadows, rules) receives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    client_id: str | None = None
    principal: str | None = None
    received_ms: int = 0
    door: str = "mqtt"
    # How many rule actions republished this message on its way here; bounds rule loops.
    hops: int = 0
    # Set by a door that acknowledges (QoS 1 PUBACK, HTTP 200): durable work started for the message creates `hold`
    # (only then: most messages match no sink rule) and the acknowledgement waits until that work has finished.
    acknowledged: bool = False
    hold: AckHold | None = None
    # MQTT 5 properties that travel with the message to MQTT 5 subscribers (payload format, content type, response
    # topic, correlation data, user properties; mqttwire.properties identifiers), None for most messages.
    properties: dict[int, Any] | None = None
    # The properties exactly as an MQTT 5 publisher encoded them, when they can be forwarded as they are.
    properties_block: bytes | None = None
    # When the message expires (wall ms; 0 = never): from an MQTT 5 Message Expiry Interval.
    expires_ms: int = 0
    # Encodings for subscribers, made once per message by the broker: (version, retain, qos) -> PUBLISH parts.
    encoded: dict[tuple[int, bool, int], tuple[bytes, bytes]] | None = None


class AckHold:
    """Counts the durable work (rule actions into sinks) a message started; `on_release` runs when it is all done."""

    __slots__ = ("failed", "on_release", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.failed = False  # some durable work did not commit: the door must not acknowledge the message
        self.on_release: Callable[[], None] | None = None

    def take(self) -> None:
        self.pending += 1

    def fail(self) -> None:
        """Release one piece of durable work that did not commit."""
        self.failed = True
        self.release()

    def release(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.on_release is not None:
            callback, self.on_release = self.on_release, None
            callback()

    async def settled(self) -> None:
        """For doors that answer asynchronously (HTTP): wait until every durable action has finished."""
        if self.pending == 0:
            return
        done = asyncio.get_running_loop().create_future()
        self.on_release = lambda: None if done.done() else done.set_result(None)
        await done
