"""The message every door produces and every consumer (subscribers, shadows, rules) receives."""

from __future__ import annotations

from dataclasses import dataclass


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
