"""The Jobs core with an injected clock: rollout rates, abort thresholds, timeouts, retries and schedules, without a
network (a real SQLite store and registry, messages collected instead of routed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.jobs import rollout, states
from gateway.jobs.exceptions import InvalidStateTransitionException, VersionConflictException
from gateway.jobs.service import JobsService
from gateway.messages import Message
from gateway.registry import Registry
from gateway.store import Store

DOC = json.dumps({"op": "reboot"})


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.store = Store(tmp_path / "db.sqlite")
        self.registry = Registry(self.store, self.clock, "us-east-1", "123456789012")
        self.sent: list[Message] = []
        self.jobs = JobsService(self.store, self.registry, self.clock, self.sent.append)
        self.registry.subscribe(self.jobs.on_registry_change)

    def fleet(self, group: str, n: int) -> str:
        self.registry.create_thing_group(group, None, None, None)
        for i in range(n):
            self.registry.create_thing(f"{group}-{i}", None, {})
            self.registry.add_thing_to_thing_group(group, f"{group}-{i}")
        return self.registry.arn("thinggroup", group)

    def create(self, job_id: str, target: str, **extra: Any) -> None:
        self.jobs.control.create_job({"jobId": job_id, "targets": [target], "document": DOC, **extra})

    def counts(self, job_id: str) -> dict[str, int]:
        return self.jobs.engine.repo.counts(job_id)

    def finish(self, job_id: str, thing: str, status: str) -> None:
        self.jobs.device.start_next(thing, {})
        self.jobs.device.update(thing, job_id, {"status": status})

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.jobs.tick()

    def topics(self) -> list[str]:
        return [m.topic for m in self.sent]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_rate_arithmetic() -> None:
    assert rollout.rollout_rate(None, 0, 0) == rollout.UNLIMITED
    assert rollout.rollout_rate({"maximumPerMinute": 5}, 100, 0) == 5
    config = {
        "maximumPerMinute": 50,
        "exponentialRate": {"baseRatePerMinute": 2, "incrementFactor": 2.0,
                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 4}},
    }  # fmt: skip
    assert [rollout.rollout_rate(config, n, 0) for n in (0, 3, 4, 8, 12, 400)] == [2, 2, 4, 8, 16, 50]
    by_success = {**config, "exponentialRate": {**config["exponentialRate"],  # type: ignore[dict-item]
                  "rateIncreaseCriteria": {"numberOfSucceededThings": 1}}}  # fmt: skip
    assert rollout.rollout_rate(by_success, 100, 0) == 2 and rollout.rollout_rate(by_success, 0, 2) == 8


def test_maximum_per_minute_releases_in_one_minute_windows(h: Harness) -> None:
    group = h.fleet("g", 7)
    h.create("slow", group, jobExecutionsRolloutConfig={"maximumPerMinute": 3})
    assert h.counts("slow") == {"QUEUED": 3}
    h.advance(30)
    assert h.counts("slow") == {"QUEUED": 3}  # same minute: nothing more
    h.advance(30)
    assert h.counts("slow") == {"QUEUED": 6}
    h.advance(60)
    assert h.counts("slow") == {"QUEUED": 7}
    assert h.jobs.engine.repo.awaiting_rollout("slow") == 0


def test_exponential_rate_grows_with_notified_things(h: Harness) -> None:
    group = h.fleet("e", 40)
    criteria = {"numberOfNotifiedThings": 2}
    exponential = {"baseRatePerMinute": 2, "incrementFactor": 2, "rateIncreaseCriteria": criteria}
    h.create("exp", group, jobExecutionsRolloutConfig={"exponentialRate": exponential})
    released = [h.counts("exp")["QUEUED"]]
    for _ in range(3):
        h.advance(60)
        released.append(h.counts("exp")["QUEUED"])
    assert released == [2, 2 + 4, 6 + 16, 40]


def test_abort_cancels_the_job_past_the_failure_threshold(h: Harness) -> None:
    group = h.fleet("a", 6)
    criterion = {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 50, "minNumberOfExecutedThings": 2}
    h.create("abort", group, abortConfig={"criteriaList": [criterion]})
    h.finish("abort", "a-0", "FAILED")
    assert h.jobs.engine.repo.job("abort").status == states.IN_PROGRESS  # type: ignore[union-attr]
    h.finish("abort", "a-1", "FAILED")
    job = h.jobs.control.describe_job({"jobId": "abort"})["job"]
    assert job["status"] == "CANCELED" and "abortConfig" in job["comment"]
    assert h.counts("abort") == {"FAILED": 2, "CANCELED": 4}


def test_in_progress_and_step_timeouts(h: Harness) -> None:
    group = h.fleet("t", 2)
    h.create("slowjob", group, timeoutConfig={"inProgressTimeoutInMinutes": 10})
    h.jobs.device.start_next("t-0", {"stepTimeoutInMinutes": 2})
    h.jobs.device.start_next("t-1", {})
    h.advance(119)
    assert h.counts("slowjob") == {"IN_PROGRESS": 2}
    h.advance(2)
    assert h.jobs.engine.repo.latest("slowjob", "t-0").status == "TIMED_OUT"  # type: ignore[union-attr]
    h.jobs.device.update("t-1", "slowjob", {"status": "IN_PROGRESS", "statusDetails": {"pct": "50"}})
    h.advance(8 * 60)
    assert h.counts("slowjob") == {"TIMED_OUT": 2}
    assert h.jobs.engine.repo.job("slowjob").status == "COMPLETED"  # type: ignore[union-attr]


def test_retry_creates_a_new_execution_number(h: Harness) -> None:
    thing = h.fleet("r", 1)
    h.create(
        "retry", thing, jobExecutionsRetryConfig={"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 1}]}
    )
    h.finish("retry", "r-0", "FAILED")
    again = h.jobs.engine.repo.latest("retry", "r-0")
    assert (again.execution_number, again.status, again.retry_attempt) == (2, "QUEUED", 1)  # type: ignore[union-attr]
    h.finish("retry", "r-0", "FAILED")
    assert h.jobs.engine.repo.latest("retry", "r-0").execution_number == 2  # type: ignore[union-attr]
    assert h.jobs.engine.repo.job("retry").status == "COMPLETED"  # type: ignore[union-attr]


def test_scheduled_job_starts_and_ends_on_time(h: Harness) -> None:
    group = h.fleet("s", 3)
    from datetime import UTC, datetime

    def at(minutes: int) -> str:
        return datetime.fromtimestamp(h.clock.wall_ms() / 1000 + minutes * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M")

    h.create("sched", group, schedulingConfig={"startTime": at(31), "endTime": at(70), "endBehavior": "CANCEL"},
             jobExecutionsRolloutConfig={"maximumPerMinute": 1})  # fmt: skip
    assert h.jobs.engine.repo.job("sched").status == "SCHEDULED"  # type: ignore[union-attr]
    h.advance(31 * 60)
    assert h.jobs.engine.repo.job("sched").status == "IN_PROGRESS"  # type: ignore[union-attr]
    assert h.counts("sched") == {"QUEUED": 1}
    h.advance(40 * 60)
    job = h.jobs.engine.repo.job("sched")
    assert job.status == "CANCELED" and h.jobs.engine.repo.awaiting_rollout("sched") == 0  # type: ignore[union-attr]


def test_continuous_job_follows_group_membership(h: Harness) -> None:
    group = h.fleet("c", 1)
    h.create("cont", group, targetSelection="CONTINUOUS")
    h.registry.create_thing("c-new", None, {})
    h.registry.add_thing_to_thing_group("c", "c-new")
    h.advance(1)
    assert h.jobs.engine.repo.latest("cont", "c-new").status == "QUEUED"  # type: ignore[union-attr]
    h.registry.remove_thing_from_thing_group("c", "c-new")
    h.advance(1)
    assert h.jobs.engine.repo.latest("cont", "c-new").status == "REMOVED"  # type: ignore[union-attr]
    h.finish("cont", "c-0", "SUCCEEDED")
    assert h.jobs.engine.repo.job("cont").status == "IN_PROGRESS"  # type: ignore[union-attr]


def test_state_diagram_and_versions(h: Harness) -> None:
    thing = h.fleet("d", 1)
    h.create("diag", thing)
    with pytest.raises(InvalidStateTransitionException):
        h.jobs.device.update("d-0", "diag", {"status": "TIMED_OUT"})  # not a device's to set
    with pytest.raises(VersionConflictException):
        h.jobs.device.update("d-0", "diag", {"status": "IN_PROGRESS", "expectedVersion": 7})
    h.jobs.device.update("d-0", "diag", {"status": "IN_PROGRESS", "expectedVersion": 1})
    with pytest.raises(InvalidStateTransitionException):
        h.jobs.control.delete_job_execution({"jobId": "diag", "thingName": "d-0", "executionNumber": 1})
    h.jobs.control.cancel_job({"jobId": "diag"})  # not forced: the running execution goes on
    assert h.counts("diag") == {"IN_PROGRESS": 1}
    h.jobs.control.cancel_job({"jobId": "diag", "force": True})
    assert h.counts("diag") == {"CANCELED": 1}
    with pytest.raises(InvalidStateTransitionException):
        h.jobs.device.update("d-0", "diag", {"status": "SUCCEEDED"})
    assert "$aws/things/d-0/jobs/notify-next" in h.topics()


def test_events_only_when_enabled(h: Harness) -> None:
    thing = h.fleet("ev", 1)
    h.create("quiet", thing)
    h.finish("quiet", "ev-0", "SUCCEEDED")
    assert not [t for t in h.topics() if t.startswith("$aws/events/")]
    h.registry.events.update({"JOB": {"Enabled": True}, "JOB_EXECUTION": {"Enabled": True}})
    h.create("loud", thing)
    h.finish("loud", "ev-0", "REJECTED")
    events = {m.topic: json.loads(m.payload) for m in h.sent if m.topic.startswith("$aws/events/")}
    assert events["$aws/events/jobExecution/loud/rejected"]["thingArn"].endswith(":thing/ev-0")
    assert events["$aws/events/job/loud/completed"]["jobProcessDetails"]["numberOfRejectedThings"] == 1


def test_state_survives_a_restart(h: Harness, tmp_path: Path) -> None:
    group = h.fleet("p", 4)
    h.create("persist", group, jobExecutionsRolloutConfig={"maximumPerMinute": 2})
    h.jobs.device.start_next("p-0", {"statusDetails": {"step": "1"}})
    h.store.close()
    again = Harness.__new__(Harness)
    again.clock, again.sent = h.clock, []
    again.store = Store(tmp_path / "db.sqlite")
    again.registry = Registry(again.store, again.clock, "us-east-1", "123456789012")
    again.jobs = JobsService(again.store, again.registry, again.clock, again.sent.append)
    assert again.counts("persist") == {"IN_PROGRESS": 1, "QUEUED": 1}
    assert again.jobs.device.describe("p-0", "persist", {})["execution"]["statusDetails"] == {"step": "1"}
    again.advance(30)
    assert again.counts("persist") == {"IN_PROGRESS": 1, "QUEUED": 1}  # the rollout window was kept
    again.advance(30)
    assert again.counts("persist") == {"IN_PROGRESS": 1, "QUEUED": 3}


def test_update_job_changes_the_rollout_and_templates_copy_a_job(h: Harness) -> None:
    group = h.fleet("u", 8)
    h.create("upd", group, jobExecutionsRolloutConfig={"maximumPerMinute": 1}, description="first")
    h.jobs.control.update_job({"jobId": "upd", "jobExecutionsRolloutConfig": {"maximumPerMinute": 5},
                               "description": "faster"})  # fmt: skip
    h.advance(60)
    assert h.counts("upd") == {"QUEUED": 6}
    listed = h.jobs.control.list_jobs({"status": "IN_PROGRESS", "thingGroupName": "u"})["jobs"]
    assert [j["jobId"] for j in listed] == ["upd"]
    made = h.jobs.control.create_job_template({"jobTemplateId": "from-job", "description": "copy",
                                               "jobArn": h.jobs.engine.job_arn("upd")})  # fmt: skip
    template = h.jobs.control.describe_job_template({"jobTemplateId": "from-job"})
    assert template["document"] == DOC and template["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 5}
    h.jobs.control.create_job({"jobId": "copy", "targets": [h.registry.arn("thing", "u-0")],
                               "jobTemplateArn": made["jobTemplateArn"]})  # fmt: skip
    assert h.jobs.engine.repo.job("copy").document == DOC  # type: ignore[union-attr]
    h.jobs.control.cancel_job({"jobId": "copy"})
    with pytest.raises(InvalidStateTransitionException):
        h.jobs.control.cancel_job({"jobId": "copy"})


def test_hostile_mqtt_requests_are_rejected_without_spoiling_their_batch(h: Harness) -> None:
    from gateway.jobs.mqtt import parse_jobs_topic

    thing = h.fleet("m", 1)
    h.create("mq", thing)
    base = "$aws/things/m-0/jobs"
    requests = [
        (f"{base}/mq/get", b"[" * 5000 + b"]" * 5000),
        (f"{base}/mq/get", json.dumps({"executionNumber": "one", "clientToken": "a"}).encode()),
        (f"{base}/mq/get", json.dumps({"executionNumber": 10**30}).encode()),  # more than SQLite holds
        (f"{base}/mq/update", json.dumps({"status": "IN_PROGRESS", "statusDetails": {"k": 1}}).encode()),
        (f"{base}/mq/update", json.dumps({"status": "IN_PROGRESS", "clientToken": "ok"}).encode()),
        (f"{base}/mq/update", b"\xff\xfe"),
    ]
    for topic, payload in requests:
        h.jobs.mqtt._pending.append((parse_jobs_topic(topic), payload, None))  # type: ignore[arg-type]
    h.jobs.mqtt.flush()
    replies = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload)) for m in h.sent if m.topic.endswith("ed")]
    assert [(kind, body.get("code")) for kind, body in replies] == [
        ("rejected", "InvalidJson"), ("rejected", "InvalidRequest"), ("rejected", "InvalidRequest"),
        ("rejected", "InvalidRequest"), ("accepted", None), ("rejected", "InvalidJson"),
    ]  # fmt: skip
    assert replies[1][1]["clientToken"] == "a" and replies[4][1]["clientToken"] == "ok"
    assert h.jobs.mqtt.stats == {"requests": 6, "rejected": 5}
    assert h.counts("mq") == {"IN_PROGRESS": 1}


def test_a_canceled_job_reports_canceled_once(h: Harness) -> None:
    group = h.fleet("x", 3)
    h.registry.events.update({"JOB": {"Enabled": True}})
    h.create("once", group)
    h.jobs.device.start_next("x-0", {})
    h.jobs.control.cancel_job({"jobId": "once"})
    assert [t for t in h.topics() if t.startswith("$aws/events/job/")] == [
        "$aws/events/job/once/cancellation_in_progress"
    ]
    h.jobs.device.update("x-0", "once", {"status": "SUCCEEDED"})  # the running one may still finish
    h.jobs.control.cancel_job({"jobId": "once", "force": True})
    events = [t.rsplit("/", 1)[1] for t in h.topics() if t.startswith("$aws/events/job/")]
    assert events == ["cancellation_in_progress", "canceled"]
    assert h.counts("once") == {"SUCCEEDED": 1, "CANCELED": 2}
