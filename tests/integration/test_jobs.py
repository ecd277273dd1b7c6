"""IoT Jobs end to end: boto3 `iot` creates jobs, devices run them over MQTT 3.1.1 and 5 and over `iot-jobs-data`,
events reach subscribers, and bad input gets AWS's errors without touching anything else."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aws_cli import aws, aws_json
from botocore.exceptions import ClientError
from conftest import GatewayProcess, allow_all_policy
from mqtt5_helpers import V5Client
from mqtt_helpers import Device
from test_api_iot import client

DOC = json.dumps({"operation": "install", "version": "2.0"})


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("jobs")).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def iot(gw: GatewayProcess) -> Any:
    return client(gw, "iot")


def device(gw: GatewayProcess, thing: str) -> Device:
    creds = gw.provision(thing, allow_all_policy())
    dev = Device(gw.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
    return dev


def expect_on(dev: Device | V5Client, topic: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = dev.expect(max(0.05, deadline - time.monotonic()))
        if message.topic == topic:
            return message
    raise AssertionError(f"nothing on {topic}")


def payload_on(dev: Device | V5Client, topic: str) -> dict[str, Any]:
    return dict(json.loads(expect_on(dev, topic).payload))


def test_group_job_runs_over_mqtt_311_and_completes(gw: GatewayProcess, iot: Any, unique: str) -> None:
    group = f"fleet-{unique}"
    iot.create_thing_group(thingGroupName=group)
    things = [f"dev-{unique}-{i}" for i in range(2)]
    devices = []
    for thing in things:
        dev = device(gw, thing)
        dev.subscribe(f"$aws/things/{thing}/jobs/#")
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        devices.append(dev)
    iot.update_event_configurations(eventConfigurations={"JOB": {"Enabled": True}, "JOB_EXECUTION": {"Enabled": True}})
    iot.create_topic_rule(ruleName=f"jobs_done_{unique}", topicRulePayload={
        "sql": "SELECT jobId, status FROM '$aws/events/job/+/completed'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"republish": {"roleArn": "arn:aws:iam::123456789012:role/r", "topic": f"done/{unique}"}}],
    })  # fmt: skip
    watcher = device(gw, f"watch-{unique}")
    watcher.subscribe(f"done/{unique}")
    watcher.subscribe(f"$aws/events/job/job-{unique}/#")
    watcher.subscribe(f"$aws/events/jobExecution/job-{unique}/#")
    created = iot.create_job(
        jobId=f"job-{unique}", targets=[iot.describe_thing_group(thingGroupName=group)["thingGroupArn"]],
        document=DOC, description="firmware 2.0",
    )  # fmt: skip
    assert created["jobArn"].endswith(f":job/job-{unique}") and created["description"] == "firmware 2.0"
    for dev, thing in zip(devices, things, strict=True):
        nxt = payload_on(dev, f"$aws/things/{thing}/jobs/notify-next")
        assert nxt["execution"]["jobId"] == f"job-{unique}" and nxt["execution"]["status"] == "QUEUED"
        assert nxt["execution"]["jobDocument"] == json.loads(DOC)
        dev.publish(f"$aws/things/{thing}/jobs/get", json.dumps({"clientToken": "t-get"}))
        pending = payload_on(dev, f"$aws/things/{thing}/jobs/get/accepted")
        assert pending["clientToken"] == "t-get" and [j["jobId"] for j in pending["queuedJobs"]] == [f"job-{unique}"]
        dev.publish(
            f"$aws/things/{thing}/jobs/start-next",
            json.dumps({"clientToken": "s1", "statusDetails": {"step": "download"}}),
        )
        started = payload_on(dev, f"$aws/things/{thing}/jobs/start-next/accepted")
        execution = started["execution"]
        assert (execution["status"], execution["versionNumber"], execution["statusDetails"]) == (
            "IN_PROGRESS", 2, {"step": "download"},
        )  # fmt: skip
        update = f"$aws/things/{thing}/jobs/job-{unique}/update"
        dev.publish(update, json.dumps({"status": "IN_PROGRESS", "expectedVersion": 1, "clientToken": "stale"}))
        stale = payload_on(dev, f"{update}/rejected")
        assert (stale["code"], stale["clientToken"], stale["executionState"]["versionNumber"]) == (
            "VersionMismatch", "stale", 2,
        )  # fmt: skip
        dev.publish(update, json.dumps({
            "status": "SUCCEEDED", "expectedVersion": 2, "statusDetails": {"step": "done"},
            "includeJobExecutionState": True, "includeJobDocument": True,
        }))  # fmt: skip
        accepted = payload_on(dev, f"{update}/accepted")
        assert accepted["executionState"] == {
            "status": "SUCCEEDED",
            "statusDetails": {"step": "done"},
            "versionNumber": 3,
        }
        assert accepted["jobDocument"] == json.loads(DOC)
        dev.publish(update, json.dumps({"status": "IN_PROGRESS"}))
        illegal = payload_on(dev, f"{update}/rejected")
        assert illegal["code"] == "InvalidStateTransition" and illegal["executionState"]["status"] == "SUCCEEDED"
    done = payload_on(watcher, f"$aws/events/job/job-{unique}/completed")
    assert done["jobProcessDetails"]["numberOfSucceededThings"] == 2 and done["status"] == "COMPLETED"
    assert payload_on(watcher, f"done/{unique}") == {"jobId": f"job-{unique}", "status": "COMPLETED"}  # via a rule
    described = iot.describe_job(jobId=f"job-{unique}")["job"]
    assert described["status"] == "COMPLETED" and described["jobProcessDetails"]["numberOfSucceededThings"] == 2
    summaries = iot.list_job_executions_for_job(jobId=f"job-{unique}")["executionSummaries"]
    assert sorted(s["jobExecutionSummary"]["status"] for s in summaries) == ["SUCCEEDED", "SUCCEEDED"]
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert (
        'edgesim_jobs{status="COMPLETED"}' in metrics
        and 'edgesim_jobs_mqtt_requests_total{reply="rejected"}' in metrics
    )
    ex = iot.describe_job_execution(jobId=f"job-{unique}", thingName=things[0])["execution"]
    assert ex["statusDetails"]["detailsMap"] == {"step": "done"} and ex["versionNumber"] == 3
    for dev in (*devices, watcher):
        dev.close()


def test_mqtt5_requests_carry_correlation_data(gw: GatewayProcess, iot: Any, unique: str) -> None:
    thing = f"v5-{unique}"
    creds = gw.provision(thing, allow_all_policy())
    dev = V5Client(gw.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
    dev.subscribe(f"$aws/things/{thing}/jobs/#")
    arn = iot.describe_thing(thingName=thing)["thingArn"]
    iot.create_job(jobId=f"j5-{unique}", targets=[arn], document=DOC)
    expect_on(dev, f"$aws/things/{thing}/jobs/notify-next")
    request = {"CorrelationData": b"\x07\x08"}
    dev.publish(f"$aws/things/{thing}/jobs/j5-{unique}/get", json.dumps({"clientToken": "c5"}), **request)
    got = expect_on(dev, f"$aws/things/{thing}/jobs/j5-{unique}/get/accepted")
    assert got.properties.CorrelationData == b"\x07\x08"
    body = json.loads(got.payload)
    assert body["clientToken"] == "c5" and body["execution"]["jobDocument"] == json.loads(DOC)
    dev.publish(f"$aws/things/{thing}/jobs/j5-{unique}/update", b"not json", **request)
    bad = expect_on(dev, f"$aws/things/{thing}/jobs/j5-{unique}/update/rejected")
    assert json.loads(bad.payload)["code"] == "InvalidJson" and bad.properties.CorrelationData == b"\x07\x08"
    dev.publish(f"$aws/things/{thing}/jobs/j5-{unique}/cancel", json.dumps({"clientToken": "nope"}))
    nowhere = json.loads(expect_on(dev, f"$aws/things/{thing}/jobs/j5-{unique}/cancel/rejected").payload)
    assert (nowhere["code"], nowhere["clientToken"]) == ("InvalidTopic", "nope")
    dev.close()


def test_https_data_plane(gw: GatewayProcess, iot: Any, unique: str) -> None:
    thing = f"https-{unique}"
    iot.create_thing(thingName=thing)
    arn = iot.describe_thing(thingName=thing)["thingArn"]
    iot.create_job(jobId=f"jh-{unique}", targets=[arn], document=DOC, timeoutConfig={"inProgressTimeoutInMinutes": 5})
    data = client(gw, "iot-jobs-data")
    pending = data.get_pending_job_executions(thingName=thing)
    assert [j["jobId"] for j in pending["queuedJobs"]] == [f"jh-{unique}"] and pending["inProgressJobs"] == []
    started = data.start_next_pending_job_execution(thingName=thing, stepTimeoutInMinutes=2)["execution"]
    assert started["status"] == "IN_PROGRESS" and json.loads(started["jobDocument"]) == json.loads(DOC)
    assert 0 < started["approximateSecondsBeforeTimedOut"] <= 120
    described = data.describe_job_execution(thingName=thing, jobId=f"jh-{unique}")["execution"]
    assert described["versionNumber"] == 2
    with pytest.raises(ClientError) as stale:  # the data-plane model declares no class for it
        data.update_job_execution(thingName=thing, jobId=f"jh-{unique}", status="SUCCEEDED", expectedVersion=1)
    assert stale.value.response["Error"]["Code"] == "VersionConflictException"
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.cancel_job_execution(jobId=f"jh-{unique}", thingName=thing)  # IN_PROGRESS needs force
    out = data.update_job_execution(thingName=thing, jobId=f"jh-{unique}", status="FAILED", expectedVersion=2,
                                    includeJobExecutionState=True)  # fmt: skip
    assert out["executionState"]["status"] == "FAILED"
    with pytest.raises(data.exceptions.InvalidStateTransitionException):
        data.update_job_execution(thingName=thing, jobId=f"jh-{unique}", status="IN_PROGRESS")
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.describe_job_execution(thingName=thing, jobId="no-such-job")
    listed = iot.list_job_executions_for_thing(thingName=thing)["executionSummaries"]
    assert [(s["jobId"], s["jobExecutionSummary"]["status"]) for s in listed] == [(f"jh-{unique}", "FAILED")]


def test_bad_input_gets_aws_errors_and_changes_nothing(gw: GatewayProcess, iot: Any, unique: str) -> None:
    thing = f"bad-{unique}"
    iot.create_thing(thingName=thing)
    arn = iot.describe_thing(thingName=thing)["thingArn"]
    before = iot.list_jobs()["jobs"]
    big = json.dumps({"blob": "x" * (32 * 1024)})
    with pytest.raises(iot.exceptions.LimitExceededException):
        iot.create_job(jobId=f"big-{unique}", targets=[arn], document=big)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job(jobId=f"nog-{unique}", targets=[arn.replace(f"thing/{thing}", "thinggroup/nope")], document=DOC)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_job(jobId=f"bad-{unique}", targets=[arn], document="[not json")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=f"big-{unique}")
    assert iot.list_jobs()["jobs"] == before
    assert iot.list_job_executions_for_thing(thingName=thing)["executionSummaries"] == []
    iot.create_job(jobId=f"ok-{unique}", targets=[arn], document=DOC)
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_job(jobId=f"ok-{unique}", targets=[arn], document=DOC)
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.delete_job(jobId=f"ok-{unique}")  # IN_PROGRESS needs force
    iot.cancel_job(jobId=f"ok-{unique}", comment="not now")
    job = iot.describe_job(jobId=f"ok-{unique}")["job"]
    assert (job["status"], job["comment"], job["jobProcessDetails"]["numberOfCanceledThings"]) == (
        "CANCELED",
        "not now",
        1,
    )
    iot.delete_job(jobId=f"ok-{unique}")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId=f"ok-{unique}")


def test_template_document_source_and_presigned_url(gw: GatewayProcess, iot: Any, unique: str) -> None:
    s3 = client(gw, "s3")
    bucket = f"firmware-{unique}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fw/v2.bin", Body=b"\x00firmware-v2")
    doc = {"operation": "install", "url": f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{bucket}/fw/v2.bin}}"}
    s3.put_object(Bucket=bucket, Key="jobs/install.json", Body=json.dumps(doc).encode())
    template = iot.create_job_template(
        jobTemplateId=f"tpl-{unique}", description="install firmware",
        documentSource=f"https://s3.amazonaws.com/{bucket}/jobs/install.json",
        presignedUrlConfig={"expiresInSec": 120},
    )  # fmt: skip
    assert iot.describe_job_template(jobTemplateId=f"tpl-{unique}")["presignedUrlConfig"] == {"expiresInSec": 120}
    assert f"tpl-{unique}" in [t["jobTemplateId"] for t in iot.list_job_templates()["jobTemplates"]]
    thing = f"ota-{unique}"
    iot.create_thing(thingName=thing)
    iot.create_job(jobId=f"ota-{unique}", targets=[iot.describe_thing(thingName=thing)["thingArn"]],
                   jobTemplateArn=template["jobTemplateArn"])  # fmt: skip
    assert iot.describe_job(jobId=f"ota-{unique}")["documentSource"].endswith("/jobs/install.json")
    data = client(gw, "iot-jobs-data")
    assert "jobDocument" not in data.describe_job_execution(thingName=thing, jobId=f"ota-{unique}")["execution"]
    execution = data.describe_job_execution(thingName=thing, jobId=f"ota-{unique}", includeJobDocument=True)[
        "execution"
    ]
    url = json.loads(execution["jobDocument"])["url"]
    assert url.startswith(f"http://127.0.0.1:{gw.ports['api']}/{bucket}/fw/v2.bin?") and "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"\x00firmware-v2"
    expired = (
        url.split("X-Amz-Date=")[0] + "X-Amz-Date=20010101T000000Z&" + url.split("X-Amz-Date=")[1].split("&", 1)[1]
    )
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(expired, timeout=5)
    denied.value.close()  # the error holds the response's socket
    assert denied.value.code == 403
    iot.delete_job_template(jobTemplateId=f"tpl-{unique}")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job_template(jobTemplateId=f"tpl-{unique}")


def test_continuous_job_reaches_new_group_members(gw: GatewayProcess, iot: Any, unique: str) -> None:
    group = f"cont-{unique}"
    arn = iot.create_thing_group(thingGroupName=group)["thingGroupArn"]
    iot.create_job(jobId=f"cj-{unique}", targets=[arn], document=DOC, targetSelection="CONTINUOUS")
    thing = f"late-{unique}"
    iot.create_thing(thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = iot.list_job_executions_for_job(jobId=f"cj-{unique}")["executionSummaries"]
        if listed:
            break
        time.sleep(0.1)
    assert [s["jobExecutionSummary"]["status"] for s in listed] == ["QUEUED"]
    assert iot.describe_job(jobId=f"cj-{unique}")["job"]["status"] == "IN_PROGRESS"  # continuous jobs never complete
    iot.cancel_job(jobId=f"cj-{unique}", force=True)
    assert iot.describe_job(jobId=f"cj-{unique}")["job"]["forceCanceled"] is True


def test_aws_cli_and_edgesim_cli(gw: GatewayProcess, iot: Any, unique: str) -> None:
    thing = f"cli-{unique}"
    iot.create_thing(thingName=thing)
    arn = iot.describe_thing(thingName=thing)["thingArn"]
    created = aws_json(gw, "iot", "create-job", "--job-id", f"cli-{unique}", "--targets", arn, "--document", DOC,
                       "--job-executions-rollout-config", '{"maximumPerMinute": 10}')  # fmt: skip
    assert created["jobId"] == f"cli-{unique}"
    job = iot.describe_job(jobId=f"cli-{unique}")["job"]
    assert job["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 10} and job["status"] == "IN_PROGRESS"
    failed = aws(gw, "iot", "cancel-job-execution", "--job-id", f"cli-{unique}", "--thing-name", thing,
                 "--expected-version", "9", check=False)  # fmt: skip
    assert failed.returncode != 0 and "VersionConflictException" in failed.stderr

    def edgesim(*args: str) -> subprocess.CompletedProcess[str]:
        endpoint = f"http://127.0.0.1:{gw.ports['api']}"
        command = [sys.executable, "-m", "gateway", "jobs", *args, "--endpoint", endpoint]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    made = edgesim("create", f"es-{unique}", "--thing", thing, "--document", DOC, "--max-per-minute", "5", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["jobId"] == f"es-{unique}"
    executions = iot.list_job_executions_for_thing(thingName=thing)["executionSummaries"]
    assert {e["jobId"] for e in executions} == {f"cli-{unique}", f"es-{unique}"}
    again = edgesim("create", f"es-{unique}", "--thing", thing, "--document", DOC)
    assert again.returncode == 1 and "ResourceAlreadyExistsException" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    iot.delete_job(jobId=f"es-{unique}", force=True)
    assert f"es-{unique}" not in [j["jobId"] for j in iot.list_jobs()["jobs"]]
