"""A job's campaign as the dashboard draws it, from AWS-shaped execution summaries (pure; times in epoch seconds):
executions by state over time, the rollout's executions per minute against its configuration, and its aborts.

An execution is QUEUED from `queuedAt`, IN_PROGRESS from `startedAt`, and in its terminal status from `lastUpdatedAt`,
so the curves come from what the jobs service stores, survive a restart and need no sampler.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any

STATES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
TERMINAL = frozenset(STATES[2:])
MAX_POINTS = 120


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def changes(summaries: Iterable[Mapping[str, Any]]) -> list[tuple[float, str | None, str]]:
    """(when, from state, to state) for every execution, sorted by time."""
    out: list[tuple[float, str | None, str]] = []
    for summary in summaries:
        status = summary.get("status")
        queued = _time(summary.get("queuedAt"))
        if status not in STATES or queued is None:
            continue
        started = _time(summary.get("startedAt"))
        updated = _time(summary.get("lastUpdatedAt"))
        out.append((queued, None, "QUEUED"))
        state = "QUEUED"
        if started is not None and status != "QUEUED":
            out.append((max(started, queued), state, "IN_PROGRESS"))
            state = "IN_PROGRESS"
        elif status == "IN_PROGRESS":
            out.append((max(updated or queued, queued), state, "IN_PROGRESS"))
            state = "IN_PROGRESS"
        if status in TERMINAL:
            out.append((max(updated or queued, started or queued, queued), state, status))
    out.sort(key=lambda change: change[0])
    return out


def timeline(
    summaries: Iterable[Mapping[str, Any]], start: float, end: float, points: int = MAX_POINTS
) -> list[dict[str, Any]]:
    """Counts by state at `points` evenly spaced times from `start` to `end` (both included)."""
    events = changes(summaries)
    points = max(2, min(points, MAX_POINTS))
    end = max(end, start)
    step = (end - start) / (points - 1)
    counts = dict.fromkeys(STATES, 0)
    out: list[dict[str, Any]] = []
    i = 0
    for k in range(points):
        t = end if k == points - 1 else start + k * step
        while i < len(events) and events[i][0] <= t:
            _, before, after = events[i]
            if before is not None:
                counts[before] -= 1
            counts[after] += 1
            i += 1
        out.append({"t": round(t, 3), **counts})
    return out


def rollout(
    summaries: Iterable[Mapping[str, Any]], created: float, end: float, config: Mapping[str, Any]
) -> dict[str, Any]:
    """Executions queued per minute since the job was created, the busiest 60 seconds, and the configured limits."""
    queued = sorted(t for s in summaries if (t := _time(s.get("queuedAt"))) is not None)
    minutes = max(1, math.ceil((max(end, created) - created) / 60))
    per_minute = [0] * minutes
    for t in queued:
        per_minute[min(minutes - 1, max(0, int((t - created) // 60)))] += 1
    peak = 0
    for j, t in enumerate(queued):  # the busiest window of 60 s that starts at an execution
        peak = max(peak, bisect.bisect_left(queued, t + 60, lo=j) - j)
    out: dict[str, Any] = {"perMinute": per_minute, "peakPerMinute": peak, "total": len(queued)}
    if queued:
        out["firstAt"], out["lastAt"] = queued[0], queued[-1]
    if config.get("maximumPerMinute") is not None:
        out["maximumPerMinute"] = config["maximumPerMinute"]
    exponential = config.get("exponentialRate")
    if isinstance(exponential, Mapping):
        out["exponentialRate"] = dict(exponential)
    return out


def aborts(job: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """Whether the job was stopped (by its abort criteria, or canceled), why, and its configured criteria."""
    criteria = job.get("abortConfig", {}).get("criteriaList", []) if isinstance(job.get("abortConfig"), dict) else []
    canceled = job.get("status") in ("CANCELED", "DELETION_IN_PROGRESS")
    reason = job.get("reasonCode")
    said = f"{reason or ''} {job.get('comment') or ''}".upper()
    return {
        "aborted": canceled and "ABORT" in said,
        "canceled": canceled,
        "reasonCode": reason,
        "comment": job.get("comment"),
        "forceCanceled": bool(job.get("forceCanceled")),
        "criteria": criteria,
        "canceledExecutions": counts.get("CANCELED", 0),
    }


def counts_of(summaries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for summary in summaries:
        status = summary.get("status")
        if status in counts:
            counts[status] += 1
    return counts
