"""The AWS IoT Device SDK v2's jobs flows against the gateway, as its samples use them: the `iotjobs.IotJobsClient`
agent loop of the jobs sample over MQTT 3.1.1, the same client built on an MQTT 5 client (as the jobs_mqtt5 sample
does), and the request-response `IotJobsClientV2` of the current sample; jobs created with boto3."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from test_api_iot import client


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("sdkjobs")).start()
    yield gateway
    gateway.stop()


def create_job(gw: GatewayProcess, job_id: str, thing: str, document: dict[str, Any]) -> None:
    iot = client(gw, "iot")
    arn = iot.describe_thing(thingName=thing)["thingArn"]
    iot.create_job(jobId=job_id, targets=[arn], document=json.dumps(document), targetSelection="SNAPSHOT")


class SampleAgent:
    """The jobs sample's logic: on a next-job-execution-changed event start the next pending execution, work on it,
    report SUCCEEDED, and start the next one; the answers come on the accepted/rejected subscriptions."""

    def __init__(self, jobs: Any, thing: str) -> None:
        from awscrt import mqtt
        from awsiot import iotjobs

        self.jobs, self.thing, self.iotjobs, self.qos = jobs, thing, iotjobs, mqtt.QoS.AT_LEAST_ONCE
        self.lock = threading.Lock()
        self.working = False
        self.waiting = False
        self.done: list[str] = []
        self.documents: dict[str, Any] = {}
        self.rejections: list[str] = []
        self.idle_events = 0
        self.changed = threading.Condition()

    def subscribe(self) -> None:
        j, thing, qos = self.iotjobs, self.thing, self.qos
        subscriptions = [
            self.jobs.subscribe_to_next_job_execution_changed_events(
                j.NextJobExecutionChangedSubscriptionRequest(thing_name=thing), qos, self.on_next_changed
            ),
            self.jobs.subscribe_to_start_next_pending_job_execution_accepted(
                j.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing), qos, self.on_start_accepted
            ),
            self.jobs.subscribe_to_start_next_pending_job_execution_rejected(
                j.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing), qos, self.on_rejected
            ),
            self.jobs.subscribe_to_update_job_execution_accepted(
                j.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"), qos, self.on_update_accepted
            ),
            self.jobs.subscribe_to_update_job_execution_rejected(
                j.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+"), qos, self.on_rejected
            ),
        ]
        for future, _topic in subscriptions:
            future.result(10)

    def try_start_next(self) -> None:
        with self.lock:
            if self.working:
                self.waiting = True
                return
            self.working, self.waiting = True, False
        request = self.iotjobs.StartNextPendingJobExecutionRequest(thing_name=self.thing)
        # Not waited on: this runs in the client's callbacks too (the sample adds a done callback).
        self.jobs.publish_start_next_pending_job_execution(request, self.qos).add_done_callback(self.published)

    def published(self, future: Any) -> None:
        if future.exception() is not None:
            with self.changed:
                self.rejections.append(f"publish failed: {future.exception()}")
                self.changed.notify_all()

    def finished(self) -> None:
        with self.lock:
            self.working = False
            again = self.waiting
        if again:
            self.try_start_next()

    def on_next_changed(self, event: Any) -> None:
        if event.execution is not None:
            self.try_start_next()
        else:
            with self.changed:
                self.idle_events += 1
                self.changed.notify_all()

    def on_start_accepted(self, response: Any) -> None:
        execution = response.execution
        if execution is None:
            self.finished()
            return
        self.documents[execution.job_id] = execution.job_document
        request = self.iotjobs.UpdateJobExecutionRequest(
            thing_name=self.thing,
            job_id=execution.job_id,
            status=self.iotjobs.JobStatus.SUCCEEDED,
            status_details={"by": "sdk-sample"},
            expected_version=execution.version_number,
        )
        # From a thread of its own, as the sample's job_thread_fn.
        threading.Thread(
            target=lambda: self.jobs.publish_update_job_execution(request, self.qos).add_done_callback(self.published)
        ).start()

    def on_update_accepted(self, response: Any) -> None:
        with self.changed:
            self.done.append(response.client_token or "")
            self.changed.notify_all()
        self.finished()

    def on_rejected(self, rejected: Any) -> None:
        with self.changed:
            self.rejections.append(f"{rejected.code}: {rejected.message}")
            self.changed.notify_all()

    def wait_done(self, n: int, timeout: float = 20) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.done) >= n or self.rejections, timeout), self.done
        assert not self.rejections, self.rejections


def run_sample(gw: GatewayProcess, jobs: Any, thing: str) -> None:
    agent = SampleAgent(jobs, thing)
    agent.subscribe()
    create_job(gw, f"{thing}-a", thing, {"operation": "reboot"})
    create_job(gw, f"{thing}-b", thing, {"operation": "config", "level": 2})
    agent.try_start_next()  # the sample starts the next job once subscribed; notify-next covers the rest
    agent.wait_done(2)
    assert agent.documents == {f"{thing}-a": {"operation": "reboot"}, f"{thing}-b": {"operation": "config", "level": 2}}
    iot = client(gw, "iot")
    for job in ("a", "b"):
        execution = iot.describe_job_execution(jobId=f"{thing}-{job}", thingName=thing)["execution"]
        assert execution["status"] == "SUCCEEDED" and execution["statusDetails"]["detailsMap"] == {"by": "sdk-sample"}
    with agent.changed:  # the queue is empty: notify-next without an execution
        assert agent.changed.wait_for(lambda: agent.idle_events >= 1, 10)


def test_jobs_sample_over_mqtt311(gw: GatewayProcess) -> None:
    from awsiot import iotjobs, mqtt_connection_builder

    thing = f"sdkjobs3-{uuid.uuid4().hex[:8]}"
    creds = gw.provision(thing, allow_all_policy())
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint="127.0.0.1",
        port=gw.ports["mqtts"],
        cert_filepath=str(creds.cert),
        pri_key_filepath=str(creds.key),
        ca_filepath=str(creds.ca),
        client_id=thing,
        clean_session=False,
        keep_alive_secs=30,
    )
    connection.connect().result(10)
    try:
        run_sample(gw, iotjobs.IotJobsClient(connection), thing)
    finally:
        connection.disconnect().result(10)


def mqtt5_client(gw: GatewayProcess, thing: str) -> tuple[Any, Future[None]]:
    from awsiot import mqtt5_client_builder

    creds = gw.provision(thing, allow_all_policy())
    connected: Future[Any] = Future()
    stopped: Future[None] = Future()
    mqtt5 = mqtt5_client_builder.mtls_from_path(
        endpoint="127.0.0.1",
        port=gw.ports["mqtts"],
        cert_filepath=str(creds.cert),
        pri_key_filepath=str(creds.key),
        ca_filepath=str(creds.ca),
        client_id=thing,
        on_lifecycle_connection_success=lambda data: connected.done() or connected.set_result(data),
        on_lifecycle_stopped=lambda data: stopped.done() or stopped.set_result(None),
    )
    mqtt5.start()
    connected.result(10)
    return mqtt5, stopped


def test_jobs_sample_on_an_mqtt5_client(gw: GatewayProcess) -> None:
    from awsiot import iotjobs

    thing = f"sdkjobs5-{uuid.uuid4().hex[:8]}"
    mqtt5, stopped = mqtt5_client(gw, thing)
    try:
        run_sample(gw, iotjobs.IotJobsClient(mqtt5), thing)
    finally:
        mqtt5.stop()
        stopped.result(10)


def test_request_response_jobs_client_v2(gw: GatewayProcess) -> None:
    from awscrt import mqtt_request_response
    from awsiot import ServiceStreamOptions, iotjobs

    thing = f"sdkjobsv2-{uuid.uuid4().hex[:8]}"
    mqtt5, stopped = mqtt5_client(gw, thing)
    try:
        options = mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2, max_streaming_subscriptions=2, operation_timeout_in_seconds=10
        )
        jobs = iotjobs.IotJobsClientV2(mqtt5, options)
        events: list[Any] = []
        seen = threading.Condition()

        def on_next(event: Any) -> None:
            with seen:
                events.append(event)
                seen.notify_all()

        stream = jobs.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
            ServiceStreamOptions(incoming_event_listener=on_next),
        )
        stream.open()
        nothing = jobs.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing)
        ).result(15)
        assert nothing.execution is None
        create_job(gw, f"{thing}-fw", thing, {"version": "2.0.0"})
        with seen:
            assert seen.wait_for(lambda: any(e.execution for e in events), 10)
        assert next(e for e in events if e.execution).execution.job_id == f"{thing}-fw"
        pending = jobs.get_pending_job_executions(iotjobs.GetPendingJobExecutionsRequest(thing_name=thing)).result(15)
        assert [j.job_id for j in pending.queued_jobs] == [f"{thing}-fw"] and not pending.in_progress_jobs
        started = jobs.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing, status_details={"step": "download"})
        ).result(15)
        assert started.execution.job_id == f"{thing}-fw" and started.execution.status == "IN_PROGRESS"
        assert started.execution.job_document == {"version": "2.0.0"}
        version = started.execution.version_number
        stale = jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing, job_id=f"{thing}-fw", status="SUCCEEDED", expected_version=version + 5
            )
        )
        with pytest.raises(Exception) as info:
            stale.result(15)
        assert "VersionMismatch" in str(info.value) or "VersionMismatch" in repr(
            getattr(info.value, "modeled_error", "")
        )
        updated = jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=f"{thing}-fw",
                status="SUCCEEDED",
                expected_version=version,
                include_job_execution_state=True,
            )
        ).result(15)
        assert updated.execution_state.status == "SUCCEEDED"
        described = jobs.describe_job_execution(
            iotjobs.DescribeJobExecutionRequest(thing_name=thing, job_id=f"{thing}-fw")
        ).result(15)
        assert described.execution.status == "SUCCEEDED"
        assert described.execution.status_details == {"step": "download"}
    finally:
        mqtt5.stop()
        stopped.result(10)
