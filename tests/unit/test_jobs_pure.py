"""The pure parts of Jobs: topic names, input checks, presigned-URL placeholders, the state diagrams."""

from __future__ import annotations

import json

import pytest

from gateway.jobs import documents, states
from gateway.jobs.exceptions import InvalidRequestException, InvalidStateTransitionException, LimitExceededException
from gateway.jobs.mqtt import parse_jobs_topic


def test_topics() -> None:
    assert parse_jobs_topic("$aws/things/t1/jobs/get") is not None
    assert parse_jobs_topic("$aws/things/t1/jobs/start-next").operation == "start-next"  # type: ignore[union-attr]
    update = parse_jobs_topic("$aws/things/t1/jobs/j-1/update")
    assert (update.thing, update.operation, update.job_id) == ("t1", "update", "j-1")  # type: ignore[union-attr]
    assert parse_jobs_topic("$aws/things/t1/jobs/$next/get").job_id == "$next"  # type: ignore[union-attr]
    for reply in ("get/accepted", "j/update/rejected", "notify", "notify-next"):
        assert parse_jobs_topic(f"$aws/things/t1/jobs/{reply}") is None
    for nonsense in ("j/bad", "a b/get", "get/more"):
        assert parse_jobs_topic(f"$aws/things/t1/jobs/{nonsense}").operation == "invalid"  # type: ignore[union-attr]
    assert parse_jobs_topic("$aws/things/t1/shadow/get") is None


def test_document_limits() -> None:
    documents.check_document(json.dumps({"x": "y" * 32000}))
    with pytest.raises(LimitExceededException):
        documents.check_document(json.dumps({"x": "y" * 32768}))
    with pytest.raises(InvalidRequestException):
        documents.check_document("[1, 2]")
    with pytest.raises(InvalidRequestException):
        documents.check_id("no spaces")
    with pytest.raises(InvalidRequestException):
        documents.check_configs({"jobExecutionsRolloutConfig": {"maximumPerMinute": 1001}})
    with pytest.raises(InvalidRequestException):
        documents.check_configs({"abortConfig": {"criteriaList": [{"action": "PAUSE", "failureType": "ALL"}]}})
    with pytest.raises(InvalidRequestException):
        documents.check_configs({"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 1}}})


def test_s3_urls_and_placeholders() -> None:
    assert documents.s3_location("https://s3.amazonaws.com/b/k/x.bin") == ("b", "k/x.bin")
    assert documents.s3_location("https://b.s3.us-west-2.amazonaws.com/k%20y") == ("b", "k y")
    with pytest.raises(InvalidRequestException):
        documents.s3_location("https://example.com/b/k")
    doc = json.dumps({"url": "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/fw.bin}", "n": 1})
    signed = documents.resolve_placeholders(doc, lambda b, k, s: f'http://h/{b}/{k}?X-Amz-Expires={s}&a="', 60)
    assert json.loads(signed) == {"url": 'http://h/b/fw.bin?X-Amz-Expires=60&a="', "n": 1}


def test_state_diagrams() -> None:
    states.check_device_update("QUEUED", "SUCCEEDED", "j", "t")  # straight to done is allowed
    states.check_device_update("IN_PROGRESS", "IN_PROGRESS", "j", "t")
    for current, wanted in (("SUCCEEDED", "IN_PROGRESS"), ("QUEUED", "QUEUED"), ("IN_PROGRESS", "CANCELED"),
                            ("CANCELED", "FAILED"), ("QUEUED", "TIMED_OUT")):  # fmt: skip
        with pytest.raises(InvalidStateTransitionException):
            states.check_device_update(current, wanted, "j", "t")
    states.check_cancel_job("IN_PROGRESS", False, "j")
    states.check_cancel_job("CANCELED", True, "j")
    with pytest.raises(InvalidStateTransitionException):
        states.check_cancel_job("COMPLETED", True, "j")
    with pytest.raises(InvalidStateTransitionException):
        states.check_cancel_job("CANCELED", False, "j")
    assert states.is_complete("SNAPSHOT", "IN_PROGRESS", {"SUCCEEDED": 2, "FAILED": 1}, 0)
    assert not states.is_complete("SNAPSHOT", "IN_PROGRESS", {"SUCCEEDED": 2}, 1)  # still rolling out
    assert not states.is_complete("CONTINUOUS", "IN_PROGRESS", {"SUCCEEDED": 2}, 0)
