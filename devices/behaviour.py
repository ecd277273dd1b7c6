"""What a simulated device decides, given its seeded random stream and simulated time: faults and shadow answers
(pure)."""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from devices.spec import FaultSpec

MAX_PAYLOAD_BYTES = 128 * 1024  # AWS IoT's message size limit; an oversized fault goes just past it

PayloadFault = Literal["malformed", "oversized"] | None


class FaultPlan:
    """One device's faults: when it drops its connection, how long it stays away, and which payloads it spoils."""

    def __init__(self, faults: FaultSpec, rng: random.Random) -> None:
        self.faults = faults
        self.rng = rng

    def next_disconnect_in(self) -> float | None:
        """Seconds until the next random disconnect (a Poisson process), or None when they are off."""
        rate = self.faults.disconnect_per_hour / 3600.0
        if rate <= 0:
            return None
        return self.rng.expovariate(rate)

    def reconnect_delay(self) -> float:
        low, high = self.faults.reconnect_after
        return self.rng.uniform(low, high)

    def offline_until(self, t: float) -> float | None:
        """If simulated second `t` falls inside an offline window, when that window ends."""
        for window in self.faults.offline_windows:
            if t < window.start:
                continue
            if window.every is None:
                if t < window.start + window.duration:
                    return window.start + window.duration
                continue
            k = math.floor((t - window.start) / window.every)
            start = window.start + k * window.every
            if t < start + window.duration:
                return start + window.duration
        return None

    def next_offline_start(self, t: float) -> float | None:
        """The start of the first offline window that begins after `t`."""
        starts: list[float] = []
        for window in self.faults.offline_windows:
            if window.every is None:
                if window.start > t:
                    starts.append(window.start)
                continue
            k = max(0, math.floor((t - window.start) / window.every) + 1)
            starts.append(window.start + k * window.every)
        return min(starts) if starts else None

    def payload_fault(self) -> PayloadFault:
        if not (self.faults.malformed_fraction or self.faults.oversized_fraction):
            return None  # the usual case: no draw per message
        draw = self.rng.random()
        if draw < self.faults.malformed_fraction:
            return "malformed"
        if draw < self.faults.malformed_fraction + self.faults.oversized_fraction:
            return "oversized"
        return None


def spoil(payload: bytes, fault: PayloadFault) -> bytes:
    """The bytes a faulty device sends instead of `payload`."""
    if fault == "malformed":
        return payload[: max(1, len(payload) // 2)] + b"\x00not json"
    if fault == "oversized":
        return payload + b" " * (MAX_PAYLOAD_BYTES + 1 - len(payload))
    return payload


def reported_for_delta(delta: dict[str, Any]) -> dict[str, Any]:
    """A well-behaved device applies the desired change and reports exactly it: `{"state": {"reported": delta}}`."""
    return {"state": {"reported": delta}}


def shadow_prefix(thing: str, shadow_name: str | None) -> str:
    base = f"$aws/things/{thing}/shadow"
    return base if shadow_name is None else f"{base}/name/{shadow_name}"
