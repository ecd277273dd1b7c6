"""A device's payload template compiled once into a builder: profiles sampled, templates rendered, JSON kept (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from devices import profiles
from devices.template import Template

Variables = Mapping[str, object]
_Part = Callable[[float, Variables], Any]


def _field_seed(seed: int, path: str) -> int:
    """Each profile field gets its own stream, stable across runs and independent of field order."""
    digest = hashlib.blake2b(f"{seed}:{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _compile(value: object, seed: int, path: str) -> _Part:
    if isinstance(value, BaseModel):
        generator = profiles.build(value, _field_seed(seed, path))  # type: ignore[arg-type]
        return lambda t, _v: generator.sample(t)
    if isinstance(value, Template):
        if value.is_constant:
            text = value.render({})
            return lambda _t, _v: text
        render = value.render_value
        return lambda _t, v: render(v)
    if isinstance(value, Mapping):
        parts = [(str(k), _compile(v, seed, f"{path}.{k}")) for k, v in value.items()]
        return lambda t, v: {k: part(t, v) for k, part in parts}
    if isinstance(value, list | tuple):
        items = [_compile(v, seed, f"{path}[{i}]") for i, v in enumerate(value)]
        return lambda t, v: [part(t, v) for part in items]
    return lambda _t, _v: value


class PayloadBuilder:
    """`build(t, variables)`: the JSON document a device sends at simulated second `t` of its life."""

    def __init__(self, template: Mapping[str, object], seed: int) -> None:
        self._build = _compile(dict(template), seed, "payload")

    def build(self, t: float, variables: Variables) -> dict[str, Any]:
        out = self._build(t, variables)
        assert isinstance(out, dict)
        return out
