"""The job agent's pure decisions: outcomes by rate and distribution, where a document keeps its URL and version, the
fleet policy's jobs topics, and the fleet file's `jobs` block."""

from __future__ import annotations

import random

import pytest

from devices.jobs_plan import JobsPlan, find_url, new_version, subscriptions
from devices.provision import fleet_policy
from devices.spec import FleetFileError, JobsSpec, expand, parse_fleet


def test_success_rate_and_durations_follow_the_configuration() -> None:
    for distribution in ("uniform", "normal", "exponential"):
        plan = JobsPlan(JobsSpec(success_rate=0.8, duration=(2.0, 10.0), distribution=distribution), random.Random(1))
        outcomes = [plan.outcome() for _ in range(4000)]
        rate = sum(o.succeed for o in outcomes) / len(outcomes)
        assert 0.77 < rate < 0.83, distribution
        durations = [o.duration for o in outcomes]
        assert all(2.0 <= d <= 10.0 for d in durations)
        mean = sum(durations) / len(durations)
        expected = {"uniform": 6.0, "normal": 6.0, "exponential": 4.0}[distribution]
        assert abs(mean - expected) < 0.3, (distribution, mean)
        assert all(o.downtime == 0.0 for o in outcomes)


def test_only_successful_installs_reboot_and_plans_are_reproducible() -> None:
    spec = JobsSpec(success_rate=0.5, reboot={"downtime": (1, 2)})  # type: ignore[arg-type]
    plan = JobsPlan(spec, random.Random(3))
    outcomes = [plan.outcome() for _ in range(200)]
    assert all((1 <= o.downtime <= 2) if o.succeed else o.downtime == 0.0 for o in outcomes)
    assert JobsPlan(spec, random.Random(9)).outcome() == JobsPlan(spec, random.Random(9)).outcome()
    assert JobsPlan(spec, random.Random(3)).progress_at(9.0) == [3.0, 6.0]


def test_urls_and_versions_in_job_documents() -> None:
    doc = {"op": "ota", "files": [{"name": "a", "url": "https://s3/x?sig=1"}], "meta": {"fw": {"version": "2.1"}}}
    assert find_url(doc, None) == "https://s3/x?sig=1"
    assert find_url(doc, "op") is None and find_url({"u": "http://h/f"}, "u") == "http://h/f"
    assert find_url({"a": "ftp://x"}, None) is None and find_url(None, None) is None
    assert new_version(doc, "meta.fw.version") == "2.1"
    assert new_version({"version": 3}, "version") == "3"
    assert new_version({"version": True}, "version") is None and new_version(doc, "nope") is None


def test_subscriptions_are_the_documented_topics() -> None:
    assert subscriptions("t1") == [
        "$aws/things/t1/jobs/notify-next",
        "$aws/things/t1/jobs/start-next/accepted",
        "$aws/things/t1/jobs/start-next/rejected",
        "$aws/things/t1/jobs/+/update/accepted",
        "$aws/things/t1/jobs/+/update/rejected",
    ]


FLEET = """
fleet: j
device_types:
  - name: a
    count: 2
    jobs: {success_rate: 0.9, duration: [5s, 1m], distribution: exponential, reboot: {downtime: 2s}}
  - name: b
    count: 1
"""


def test_fleet_files_take_a_jobs_block_and_the_policy_allows_its_topics() -> None:
    devices = expand(parse_fleet(FLEET))
    jobs = devices[0].jobs
    assert jobs is not None and jobs.duration == (5.0, 60.0) and jobs.reboot is not None
    assert jobs.reboot.downtime == (2.0, 2.0) and devices[2].jobs is None
    by_action = {s["Action"]: s["Resource"] for s in fleet_policy(devices)["Statement"]}
    jobs_topic = "$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"
    assert f"arn:aws:iot:*:*:topic/{jobs_topic}" in by_action["iot:Publish"]
    assert f"arn:aws:iot:*:*:topicfilter/{jobs_topic}" in by_action["iot:Subscribe"]
    assert f"arn:aws:iot:*:*:topic/{jobs_topic}" in by_action["iot:Receive"]


@pytest.mark.parametrize(
    ("block", "where"),
    [
        ("{success_rate: 1.5}", "jobs.success_rate"),
        ("{duration: [9, 1]}", "jobs.duration"),
        ("{distribution: pareto}", "jobs.distribution"),
        ("{sucess_rate: 1}", "did you mean 'success_rate'"),
    ],
)
def test_bad_jobs_blocks_name_the_field(block: str, where: str) -> None:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(f"fleet: j\ndevice_types:\n  - name: a\n    count: 1\n    jobs: {block}\n")
    assert where in str(info.value)
