"""What a simulated job agent decides, given its seeded random stream: each execution's outcome and timing, where the
job document keeps its download URL and firmware version, and the AWS IoT Jobs MQTT API's topics and requests (pure).

The topics and payloads are AWS's documented Jobs device MQTT API: `start-next` answers on `start-next/accepted` with
`{"execution": {...}}` (no `execution` when nothing is pending), `notify-next` carries the next pending execution
(none once the queue is empty), `<jobId>/update` takes `status` and `statusDetails` (a map of strings to strings).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from devices.spec import JobsSpec

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "REJECTED", "REMOVED", "CANCELED", "TIMED_OUT"})


def jobs_prefix(thing: str) -> str:
    return f"$aws/things/{thing}/jobs"


def subscriptions(thing: str) -> list[str]:
    """What an agent listens to: the next pending execution and the answers to its own requests."""
    prefix = jobs_prefix(thing)
    return [
        f"{prefix}/notify-next",
        f"{prefix}/start-next/accepted",
        f"{prefix}/start-next/rejected",
        f"{prefix}/+/update/accepted",
        f"{prefix}/+/update/rejected",
    ]


def start_next_request(token: str, spec: JobsSpec) -> dict[str, Any]:
    request: dict[str, Any] = {"clientToken": token, "statusDetails": {"progress": "starting"}}
    if spec.step_timeout_minutes is not None:
        request["stepTimeoutInMinutes"] = spec.step_timeout_minutes
    return request


def update_request(status: str, details: dict[str, str], token: str) -> dict[str, Any]:
    return {"status": status, "statusDetails": details, "clientToken": token}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One execution as this device will act it out."""

    succeed: bool
    duration: float  # seconds from start to the final update (or to the reboot, with one)
    downtime: float  # seconds offline for the reboot; 0.0 without one


class JobsPlan:
    def __init__(self, spec: JobsSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng

    def outcome(self) -> Outcome:
        spec = self.spec
        succeed = spec.success_rate >= 1.0 or self.rng.random() < spec.success_rate
        downtime = self.rng.uniform(*spec.reboot.downtime) if spec.reboot is not None and succeed else 0.0
        return Outcome(succeed, self.duration(), downtime)

    def duration(self) -> float:
        low, high = self.spec.duration
        if high <= low:
            return low
        kind = self.spec.distribution
        if kind == "uniform":
            return self.rng.uniform(low, high)
        if kind == "normal":  # centred in the range, 3 sigma to either end, clipped to it
            return min(high, max(low, self.rng.gauss((low + high) / 2, (high - low) / 6)))
        # exponential: at least `low`, mean a quarter of the way up, clipped at `high`
        return min(high, low + self.rng.expovariate(4 / (high - low)))

    def progress_at(self, duration: float) -> list[float]:
        """Offsets (seconds after the start) of the intermediate IN_PROGRESS updates."""
        steps = self.spec.progress_steps
        return [duration * (k + 1) / (steps + 1) for k in range(steps)]


def lookup(document: object, path: str) -> object:
    """The value at dotted `path` in a JSON document, or None."""
    node = document
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_url(document: object, path: str | None) -> str | None:
    """The URL to download: the string at `path`, or else the first http(s) URL anywhere in the document."""
    if path is not None:
        value = lookup(document, path)
        return value if isinstance(value, str) and value.startswith(("http://", "https://")) else None
    stack = [document]
    while stack:
        node = stack.pop(0)
        if isinstance(node, str) and node.startswith(("http://", "https://")):
            return node
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def new_version(document: object, path: str) -> str | None:
    value = lookup(document, path)
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
