"""Where a published topic goes: ordinary delivery, the shadow service, or one rule (Basic Ingest)."""

from __future__ import annotations

from enum import Enum

SHADOW_PREFIX = "$aws/things/"
INGEST_PREFIX = "$aws/rules/"


class Route(Enum):
    PLAIN = "plain"
    SHADOW = "shadow"
    BASIC_INGEST = "basic-ingest"
    RESERVED = "reserved"


def classify(topic: str) -> Route:
    if not topic.startswith("$"):
        return Route.PLAIN
    if topic.startswith(SHADOW_PREFIX) and "/shadow/" in topic:
        return Route.SHADOW
    if topic.startswith(INGEST_PREFIX):
        return Route.BASIC_INGEST
    return Route.RESERVED
