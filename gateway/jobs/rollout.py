"""Rollout, abort, timeout and retry arithmetic (pure: time comes in as milliseconds, nothing is read or written)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.jobs.states import FAILED, IN_PROGRESS, REJECTED, SUCCEEDED, TIMED_OUT

MINUTE_MS = 60_000
# AWS's default when a job names no jobExecutionsRolloutConfig: as fast as the service can notify.
UNLIMITED = 1_000_000


def rollout_rate(config: Mapping[str, Any] | None, notified: int, succeeded: int) -> int:
    """Things to notify per minute now. With an exponential rate, the base rate grows by the increment factor each
    time another `numberOfNotifiedThings` (or `numberOfSucceededThings`) is reached, never above maximumPerMinute."""
    if not config:
        return UNLIMITED
    exponential = config.get("exponentialRate")
    maximum = int(config.get("maximumPerMinute") or (1000 if exponential else UNLIMITED))
    if not exponential:
        return maximum
    base = int(exponential["baseRatePerMinute"])
    factor = float(exponential["incrementFactor"])
    criteria = exponential.get("rateIncreaseCriteria") or {}
    if "numberOfNotifiedThings" in criteria:
        steps = notified // max(1, int(criteria["numberOfNotifiedThings"]))
    elif "numberOfSucceededThings" in criteria:
        steps = succeeded // max(1, int(criteria["numberOfSucceededThings"]))
    else:
        steps = 0
    rate = base * factor ** min(steps, 64)
    return max(1, min(maximum, math.floor(rate)))


@dataclass(frozen=True)
class RolloutWindow:
    """How many things were notified in the current one-minute window, counted from the job's start."""

    window: int = 0
    released: int = 0


def rollout_allowance(rate: int, started_ms: int, now_ms: int, state: RolloutWindow) -> tuple[int, RolloutWindow]:
    """How many more things may be notified now, and the window state to keep once they are."""
    window = max(0, (now_ms - started_ms) // MINUTE_MS)
    released = state.released if window == state.window else 0
    return max(0, rate - released), RolloutWindow(window, released)


def next_window_ms(started_ms: int, now_ms: int) -> int:
    """When the next rollout window opens."""
    return started_ms + (max(0, (now_ms - started_ms) // MINUTE_MS) + 1) * MINUTE_MS


_FAILURES = {
    "FAILED": (FAILED,),
    "REJECTED": (REJECTED,),
    "TIMED_OUT": (TIMED_OUT,),
    "ALL": (FAILED, REJECTED, TIMED_OUT),
}


def abort_reason(config: Mapping[str, Any] | None, counts: Mapping[str, int]) -> str | None:
    """The failure type whose criterion says to abort the job now, or None. Executed things are those whose
    execution finished (succeeded, failed, rejected or timed out)."""
    if not config:
        return None
    executed = sum(counts.get(s, 0) for s in (SUCCEEDED, FAILED, REJECTED, TIMED_OUT))
    for criterion in config.get("criteriaList") or []:
        if executed < int(criterion["minNumberOfExecutedThings"]) or executed == 0:
            continue
        failures = sum(counts.get(s, 0) for s in _FAILURES.get(criterion["failureType"], ()))
        if failures * 100.0 / executed >= float(criterion["thresholdPercentage"]):
            return str(criterion["failureType"])
    return None


def retries_allowed(config: Mapping[str, Any] | None, status: str) -> int:
    """How many times an execution that ended in `status` may be retried (FAILED and TIMED_OUT can be; a criterion for
    the exact failure type wins over ALL)."""
    if not config or status not in (FAILED, TIMED_OUT):
        return 0
    exact = [c for c in config.get("criteriaList") or [] if c.get("failureType") == status]
    every = [c for c in config.get("criteriaList") or [] if c.get("failureType") == "ALL"]
    chosen = exact or every
    return int(chosen[0].get("numberOfRetries", 0)) if chosen else 0


def timeout_deadline(
    status: str,
    started_ms: int | None,
    in_progress_minutes: int | None,
    step_deadline_ms: int | None,
) -> int | None:
    """When an execution times out: the earlier of the job's in-progress timeout and the current step timer."""
    if status != IN_PROGRESS:
        return None
    deadlines = []
    if in_progress_minutes and started_ms is not None:
        deadlines.append(started_ms + int(in_progress_minutes) * MINUTE_MS)
    if step_deadline_ms is not None:
        deadlines.append(step_deadline_ms)
    return min(deadlines) if deadlines else None


def step_deadline(now_ms: int, step_minutes: int | None, current: int | None) -> int | None:
    """A new step timer: minutes from now, -1 clears it, None keeps the running one."""
    if step_minutes is None:
        return current
    if step_minutes == -1:
        return None
    return now_ms + int(step_minutes) * MINUTE_MS
