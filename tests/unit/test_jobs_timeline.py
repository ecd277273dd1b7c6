"""The dashboard's job campaign figures from AWS-shaped execution summaries: states over time, rollout rate, aborts."""

from __future__ import annotations

from gateway.api.jobs_timeline import aborts, changes, counts_of, rollout, timeline


def ex(status: str, queued: float, started: float | None = None, updated: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {"status": status, "queuedAt": queued, "lastUpdatedAt": updated or queued}
    if started is not None:
        out["startedAt"] = started
    return out


EXECUTIONS = [
    ex("SUCCEEDED", 0, 10, 30),
    ex("FAILED", 0, 20, 40),
    ex("IN_PROGRESS", 60, 70, 75),
    ex("QUEUED", 60),
    ex("CANCELED", 60, None, 90),  # canceled while queued: never in progress
    {"status": "BOGUS", "queuedAt": 1},
    {"status": "QUEUED"},  # no time: left out
]


def test_states_over_time_follow_each_executions_timestamps() -> None:
    points = timeline(EXECUTIONS, 0, 100, points=11)
    assert [p["t"] for p in points] == [float(t) for t in range(0, 101, 10)]
    at = {int(p["t"]): p for p in points}
    assert (at[0]["QUEUED"], at[0]["IN_PROGRESS"]) == (2, 0)
    assert (at[10]["QUEUED"], at[10]["IN_PROGRESS"]) == (1, 1)
    assert (at[30]["SUCCEEDED"], at[30]["IN_PROGRESS"]) == (1, 1)
    assert at[40]["FAILED"] == 1 and at[40]["IN_PROGRESS"] == 0
    assert at[60]["QUEUED"] == 3 and at[70]["IN_PROGRESS"] == 1 and at[70]["QUEUED"] == 2
    final = at[100]
    assert {k: final[k] for k in ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELED")} == {
        "QUEUED": 1, "IN_PROGRESS": 1, "SUCCEEDED": 1, "FAILED": 1, "CANCELED": 1,
    }  # fmt: skip
    assert sum(final[s] for s in final if s != "t") == 5
    assert counts_of(EXECUTIONS)["QUEUED"] == 2  # counts are the current statuses, timed or not
    assert len(timeline(EXECUTIONS, 0, 100, points=10_000)) == 120


def test_a_terminal_update_without_a_start_goes_straight_from_queued() -> None:
    assert changes([ex("SUCCEEDED", 5, None, 9)]) == [(5.0, None, "QUEUED"), (9.0, "QUEUED", "SUCCEEDED")]
    assert timeline([], 10, 5, points=2) == [
        {"t": 10.0, **dict.fromkeys(("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED",
                                     "REMOVED", "CANCELED"), 0)},
    ] * 2  # fmt: skip


def test_rollout_rate_per_minute_and_its_busiest_minute() -> None:
    summaries = [ex("QUEUED", 1000 + t) for t in (0, 10, 20, 59, 61, 62, 130)]
    out = rollout(summaries, 1000, 1200, {"maximumPerMinute": 4})
    assert out["perMinute"] == [4, 2, 1, 0]
    assert out["peakPerMinute"] == 5  # 10 s .. 69 s holds five
    assert out["maximumPerMinute"] == 4 and out["total"] == 7
    assert (out["firstAt"], out["lastAt"]) == (1000, 1130)
    assert rollout([], 0, 0, {})["perMinute"] == [0]


def test_aborts_tell_an_abort_from_a_cancel() -> None:
    criteria = [
        {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10, "minNumberOfExecutedThings": 2}
    ]
    job = {"status": "CANCELED", "comment": "Job aborted: FAILED executions reached the abortConfig threshold",
           "abortConfig": {"criteriaList": criteria}}  # fmt: skip
    out = aborts(job, {"CANCELED": 7})
    assert out["aborted"] and out["canceled"] and out["criteria"] == criteria and out["canceledExecutions"] == 7
    assert not aborts({"status": "CANCELED", "comment": "by hand"}, {})["aborted"]
    assert not aborts({"status": "IN_PROGRESS"}, {})["canceled"]
