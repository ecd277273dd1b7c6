"""Mergeable fleet figures: latency histograms, sliding-window rates and named counters (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

# Bucket i > 0 holds latencies in (MIN * G**(i-1), MIN * G**i]; reporting its geometric middle is within ±1% of any
# value in it. 0.01 ms to 10 minutes takes ~900 buckets whatever the count; below and above go to the end buckets.
_MIN_MS = 0.01
_MAX_MS = 600_000.0
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = math.ceil(math.log(_MAX_MS / _MIN_MS) / _LOG_GROWTH) + 1
_LAYOUT = [_MIN_MS, _MAX_MS, _GROWTH]


def _index(ms: float) -> int:
    if ms <= _MIN_MS:
        return 0
    if ms >= _MAX_MS:
        return _BUCKETS - 1
    return min(math.ceil(math.log(ms / _MIN_MS) / _LOG_GROWTH), _BUCKETS - 1)


def _middle(i: int) -> float:
    return _MIN_MS if i == 0 else _MIN_MS * _GROWTH ** (i - 0.5)


class LatencyHistogram:
    """Latencies in milliseconds: fixed memory, percentiles within ~1%, exact count, min and max."""

    def __init__(self) -> None:
        self._buckets = [0] * _BUCKETS
        self._count = 0
        self._min = math.inf
        self._max = 0.0

    def record(self, ms: float) -> None:
        if not math.isfinite(ms):
            raise ValueError(f"latency must be a finite number of milliseconds, got {ms}")
        ms = max(ms, 0.0)  # clocks of different processes can disagree by a little: count that as 0 ms
        self._buckets[_index(ms)] += 1
        self._count += 1
        self._min = min(self._min, ms)
        self._max = max(self._max, ms)

    @property
    def count(self) -> int:
        return self._count

    @property
    def max(self) -> float:
        """The largest latency recorded, exactly; 0.0 when empty."""
        return self._max

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile (p in 0..100), within ~1%, exact at the ends; 0.0 when empty."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {p}")
        if self._count == 0:
            return 0.0
        rank, seen = max(1, math.ceil(p * self._count / 100)), 0
        if rank == 1 or rank >= self._count:  # the extremes are known exactly
            return self._min if rank == 1 else self._max
        for i, n in enumerate(self._buckets):
            seen += n
            if seen >= rank:
                return min(max(_middle(i), self._min), self._max)
        return self._max

    def merge(self, other: LatencyHistogram) -> None:
        """Adds other's latencies to this one, as if they had all been recorded here."""
        self._buckets = [a + b for a, b in zip(self._buckets, other._buckets, strict=True)]
        self._count += other._count
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def to_dict(self) -> dict[str, float | int]:
        """A summary for display; use to_state() to send a histogram to another process."""
        return {"count": self._count, **{f"p{p}": self.percentile(p) for p in (50, 90, 99)}, "max": self._max}

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this histogram, as JSON-ready data (only non-empty buckets)."""
        return {
            "layout": list(_LAYOUT),
            "count": self._count,
            "min": self._min if self._count else None,
            "max": self._max,
            "buckets": [[i, n] for i, n in enumerate(self._buckets) if n],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """The histogram to_state() described; ValueError if the state is malformed or from another layout."""
        if state.get("layout") != _LAYOUT:
            raise ValueError(f"histogram layout {state.get('layout')!r} is not {_LAYOUT!r}")
        hist = cls()
        for pair in state.get("buckets", []):
            i, n = pair if isinstance(pair, list | tuple) and len(pair) == 2 else (None, None)
            if not (isinstance(i, int) and 0 <= i < _BUCKETS and isinstance(n, int) and n >= 0):
                raise ValueError(f"histogram bucket {pair!r} is not [index, count] with 0 <= index < {_BUCKETS}")
            hist._buckets[i] += n
        hist._count = sum(hist._buckets)
        if hist._count != state.get("count"):
            raise ValueError(f"histogram count {state.get('count')!r} is not the buckets' total {hist._count}")
        if hist._count:
            hist._min, hist._max = float(state["min"]), float(state["max"])
        return hist


class RateWindow:
    """Events per second over the last `window` seconds, from per-second buckets (at most window + 2 of them).

    Times are the caller's simulated or wall seconds. The oldest bucket counts for the fraction of it still inside
    the window, as if its events were spread evenly over that second.
    """

    def __init__(self, window: int = 10) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 second, got {window}")
        self.window = window
        self._start: float | None = None
        self._buckets: dict[int, int] = {}

    def add(self, now: float, n: int = 1) -> None:
        if self._start is None or now < self._start:
            self._start = now
        second = math.floor(now)
        buckets = self._buckets
        if second in buckets:
            buckets[second] += n
        else:
            buckets[second] = n
            self._prune(second)

    def _prune(self, newest: int) -> None:
        for second in [s for s in self._buckets if s < newest - self.window - 1]:
            del self._buckets[second]

    def rate(self, now: float) -> float:
        """Events/s over [now - window, now]; over the time since the first event, at least one second, if shorter."""
        if self._start is None:
            return 0.0
        edge, last = now - self.window, math.floor(now)
        if edge <= self._start:
            total = sum(n for s, n in self._buckets.items() if s <= last)
            return total / max(now - self._start, 1.0)
        first = math.floor(edge)
        total = sum(n for s, n in self._buckets.items() if first < s <= last)
        return (total + self._buckets.get(first, 0) * (first + 1 - edge)) / self.window

    def merge(self, other: RateWindow) -> None:
        """Adds other's events to this window (same window length), e.g. to sum the rates of several processes."""
        if other.window != self.window:
            raise ValueError(f"cannot merge a {other.window} s rate window into a {self.window} s one")
        for second, n in other._buckets.items():
            self._buckets[second] = self._buckets.get(second, 0) + n
        if other._start is not None:
            self._start = other._start if self._start is None else min(self._start, other._start)
        if self._buckets:
            self._prune(max(self._buckets))

    def to_state(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "start": self._start,
            "buckets": sorted([s, n] for s, n in self._buckets.items()),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        rw = cls(int(state["window"]))
        rw._start = None if state.get("start") is None else float(state["start"])
        rw._buckets = {int(s): int(n) for s, n in state.get("buckets", [])}
        return rw


class Counters:
    """Named event counts (sent, acked, errors ...) that add up across devices and processes."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        return self._values.get(name, 0)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self._values.items()))

    def merge(self, other: Counters) -> None:
        for name, n in other._values.items():
            self.inc(name, n)

    @classmethod
    def from_dict(cls, values: Mapping[str, int]) -> Self:
        counters = cls()
        for name, n in values.items():
            if not isinstance(name, str) or not isinstance(n, int):
                raise ValueError(f"counter {name!r}: {n!r} is not a name and a whole number")
            counters.inc(name, n)
        return counters
