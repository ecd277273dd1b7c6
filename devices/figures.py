"""A fleet process's live figures: counters, connection gauges, rates and publish → PUBACK latency; mergeable across
processes as plain JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.metrics import Counters, LatencyHistogram, RateWindow

GAUGES = ("connected", "connecting", "offline", "failed")


@dataclass
class Figures:
    devices: int = 0
    counters: Counters = field(default_factory=Counters)
    gauges: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GAUGES, 0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    sent_rate: RateWindow = field(default_factory=lambda: RateWindow(5))
    acked_rate: RateWindow = field(default_factory=lambda: RateWindow(5))

    def inc(self, name: str, n: int = 1) -> None:
        self.counters.inc(name, n)

    def error(self, kind: str) -> None:
        self.counters.inc(f"errors.{kind}")

    def errors(self) -> dict[str, int]:
        return {k.removeprefix("errors."): v for k, v in self.counters.as_dict().items() if k.startswith("errors.")}

    def to_state(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "counters": self.counters.as_dict(),
            "gauges": dict(self.gauges),
            "latency": self.latency.to_state(),
            "sent_rate": self.sent_rate.to_state(),
            "acked_rate": self.acked_rate.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Figures:
        return cls(
            devices=int(state["devices"]),
            counters=Counters.from_dict(state["counters"]),
            gauges={k: int(v) for k, v in state["gauges"].items()},
            latency=LatencyHistogram.from_state(state["latency"]),
            sent_rate=RateWindow.from_state(state["sent_rate"]),
            acked_rate=RateWindow.from_state(state["acked_rate"]),
        )

    def merge(self, other: Figures) -> None:
        self.devices += other.devices
        self.counters.merge(other.counters)
        for name, value in other.gauges.items():
            self.gauges[name] = self.gauges.get(name, 0) + value
        self.latency.merge(other.latency)
        self.sent_rate.merge(other.sent_rate)
        self.acked_rate.merge(other.acked_rate)

    def summary(self, now: float, elapsed: float) -> dict[str, Any]:
        """What `--json` prints and the live view shows."""
        counts = self.counters.as_dict()
        return {
            "devices": self.devices,
            **self.gauges,
            "elapsed_s": round(elapsed, 3),
            "sent": counts.get("sent", 0),
            "acked": counts.get("acked", 0),
            "sent_per_s": round(self.sent_rate.rate(now), 1),
            "acked_per_s": round(self.acked_rate.rate(now), 1),
            "puback_ms": {k: round(float(v), 3) for k, v in self.latency.to_dict().items()},
            "connects": counts.get("connects", 0),
            "disconnects": counts.get("disconnects", 0),
            "shadow_reports": counts.get("shadow_reports", 0),
            "deltas_applied": counts.get("deltas_applied", 0),
            "commands": counts.get("commands", 0),
            "provisioned": counts.get("provisioned", 0),
            "provisioning_failures": counts.get("provisioning_failures", 0),
            "faults": {k.removeprefix("faults."): v for k, v in counts.items() if k.startswith("faults.")},
            "errors": self.errors(),
            "jobs": jobs_summary(counts),
        }


def jobs_summary(counts: dict[str, int]) -> dict[str, int]:
    """The job agents' executions by state as the devices see them, and their downloads and reboots ({} without)."""
    jobs = {k.removeprefix("jobs."): v for k, v in counts.items() if k.startswith("jobs.")}
    if not jobs:
        return {}
    done = jobs.get("succeeded", 0) + jobs.get("failed", 0) + jobs.get("abandoned", 0)
    jobs["in_progress"] = max(0, jobs.get("started", 0) - done)
    return jobs
