"""Device Shadow topic names: parse `$aws/things/{thing}/shadow[/name/{shadow}]/{op}[/{suffix}]`, format replies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "OPERATIONS",
    "SUFFIXES",
    "Operation",
    "ShadowTopic",
    "Suffix",
    "is_valid_shadow_name",
    "is_valid_thing_name",
    "parse_shadow_topic",
    "response_topic",
    "shadow_prefix",
]

Operation = Literal["get", "update", "delete"]
Suffix = Literal["accepted", "rejected", "delta", "documents"]

THINGS_PREFIX: Final = "$aws/things/"
# Name patterns and lengths from the botocore models (reference §4.1).
_THING_NAME: Final = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_SHADOW_NAME: Final = re.compile(r"[$a-zA-Z0-9:_-]{1,64}")

OPERATIONS: Final[dict[str, Operation]] = {"get": "get", "update": "update", "delete": "delete"}
# Which reply topics exist for each operation (reference §4.2).
SUFFIXES: Final[dict[Operation, dict[str, Suffix]]] = {
    "get": {"accepted": "accepted", "rejected": "rejected"},
    "update": {"accepted": "accepted", "rejected": "rejected", "delta": "delta", "documents": "documents"},
    "delete": {"accepted": "accepted", "rejected": "rejected"},
}


def is_valid_thing_name(name: str) -> bool:
    return _THING_NAME.fullmatch(name) is not None


def is_valid_shadow_name(name: str) -> bool:
    return _SHADOW_NAME.fullmatch(name) is not None


def shadow_prefix(thing: str, shadow_name: str | None) -> str:
    """`$aws/things/{thing}/shadow` for the classic shadow, `…/shadow/name/{shadow}` for a named one."""
    if shadow_name is None:
        return f"{THINGS_PREFIX}{thing}/shadow"
    return f"{THINGS_PREFIX}{thing}/shadow/name/{shadow_name}"


@dataclass(frozen=True, slots=True)
class ShadowTopic:
    """A parsed shadow topic; `shadow` is None for the classic shadow and `suffix` None for a request."""

    thing: str
    shadow: str | None
    operation: Operation
    suffix: Suffix | None = None

    @property
    def is_request(self) -> bool:
        return self.suffix is None

    @property
    def topic(self) -> str:
        base = f"{shadow_prefix(self.thing, self.shadow)}/{self.operation}"
        return base if self.suffix is None else f"{base}/{self.suffix}"

    def reply(self, suffix: Suffix) -> str:
        """The topic answering this request on `suffix`; the names were validated when parsed."""
        if suffix not in SUFFIXES[self.operation]:
            raise ValueError(f"{self.operation} has no {suffix} topic")
        return f"{shadow_prefix(self.thing, self.shadow)}/{self.operation}/{suffix}"


def parse_shadow_topic(topic: str) -> ShadowTopic | None:
    """Parse a shadow request or reply topic; anything else, or an invalid thing or shadow name, gives None."""
    if not topic.startswith(THINGS_PREFIX):
        return None
    parts = topic[len(THINGS_PREFIX) :].split("/")
    if len(parts) < 3 or parts[1] != "shadow":
        return None
    thing, rest = parts[0], parts[2:]
    shadow: str | None = None
    # No operation is called "name", so `shadow/name/...` is always a named shadow.
    if rest[0] == "name":
        if len(rest) < 3 or not is_valid_shadow_name(rest[1]):
            return None
        shadow, rest = rest[1], rest[2:]
    if len(rest) > 2:
        return None
    operation = OPERATIONS.get(rest[0])
    if operation is None or not is_valid_thing_name(thing):
        return None
    if len(rest) == 1:
        return ShadowTopic(thing, shadow, operation)
    suffix = SUFFIXES[operation].get(rest[1])
    if suffix is None:
        return None
    return ShadowTopic(thing, shadow, operation, suffix)


def response_topic(thing: str, shadow_name: str | None, op: Operation, suffix: Suffix | None) -> str:
    """Format a shadow topic (a request topic when `suffix` is None); raises ValueError on invalid input."""
    if not is_valid_thing_name(thing):
        raise ValueError(f"invalid thing name: {thing!r}")
    if shadow_name is not None and not is_valid_shadow_name(shadow_name):
        raise ValueError(f"invalid shadow name: {shadow_name!r}")
    if op not in SUFFIXES:
        raise ValueError(f"invalid shadow operation: {op!r}")
    if suffix is not None and suffix not in SUFFIXES[op]:
        raise ValueError(f"{op} has no {suffix} topic")
    return ShadowTopic(thing, shadow_name, op, suffix).topic
