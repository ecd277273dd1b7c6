"""What the APIs answer: jobs, executions and events in AWS's shapes (pure; times in, JSON-ready dicts out).

The control plane gives times as epoch seconds (boto3 reads them as datetimes); the MQTT API as whole epoch seconds.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gateway.jobs.repo import Execution, Job
from gateway.jobs.states import PROCESS_COUNTERS, TERMINAL

SPEC_MEMBERS = (
    "description",
    "presignedUrlConfig",
    "jobExecutionsRolloutConfig",
    "abortConfig",
    "timeoutConfig",
    "jobExecutionsRetryConfig",
    "schedulingConfig",
    "jobTemplateArn",
    "documentParameters",
)


def _s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def process_details(counts: dict[str, int], awaiting: int) -> dict[str, Any]:
    details: dict[str, Any] = {name: counts.get(state, 0) for state, name in PROCESS_COUNTERS.items()}
    details["processingTargets"] = []
    return details


def job_view(job: Job, arn: str, counts: dict[str, int], awaiting: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobArn": arn,
        "jobId": job.job_id,
        "targetSelection": job.target_selection,
        "status": job.status,
        "forceCanceled": job.force_canceled,
        "reasonCode": job.reason_code,
        "comment": job.comment,
        "targets": job.spec.get("targets", []),
        "createdAt": _s(job.created_ms),
        "lastUpdatedAt": _s(job.updated_ms),
        "completedAt": _s(job.completed_ms),
        "jobProcessDetails": process_details(counts, awaiting),
        "isConcurrent": False,
    }
    for member in SPEC_MEMBERS:
        if job.spec.get(member) is not None:
            out[member] = job.spec[member]
    return _drop_none(out)


def job_summary(job: Job, arn: str) -> dict[str, Any]:
    return _drop_none(
        {
            "jobArn": arn,
            "jobId": job.job_id,
            "thingGroupId": None,
            "targetSelection": job.target_selection,
            "status": job.status,
            "createdAt": _s(job.created_ms),
            "lastUpdatedAt": _s(job.updated_ms),
            "completedAt": _s(job.completed_ms),
            "isConcurrent": False,
        }
    )


def execution_view(e: Execution, thing_arn: str, now_ms: int, deadline_ms: int | None) -> dict[str, Any]:
    """DescribeJobExecution (control plane)."""
    out: dict[str, Any] = {
        "jobId": e.job_id,
        "status": e.status,
        "forceCanceled": e.force_canceled,
        "statusDetails": {"detailsMap": e.status_details},
        "thingArn": thing_arn,
        "queuedAt": _s(e.queued_ms),
        "startedAt": _s(e.started_ms),
        "lastUpdatedAt": _s(e.updated_ms),
        "executionNumber": e.execution_number,
        "versionNumber": e.version,
    }
    if deadline_ms is not None:
        out["approximateSecondsBeforeTimedOut"] = max(0, (deadline_ms - now_ms) // 1000)
    return _drop_none(out)


def execution_summary(e: Execution) -> dict[str, Any]:
    return _drop_none(
        {
            "status": e.status,
            "queuedAt": _s(e.queued_ms),
            "startedAt": _s(e.started_ms),
            "lastUpdatedAt": _s(e.updated_ms),
            "executionNumber": e.execution_number,
            "retryAttempt": e.retry_attempt,
        }
    )


# ---- data plane (MQTT and iot-jobs-data): whole epoch seconds
def _ws(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def device_execution(
    e: Execution, document: str | None, now_ms: int, deadline_ms: int | None, *, include_document: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobId": e.job_id,
        "thingName": e.thing,
        "status": e.status,
        "statusDetails": e.status_details,
        "queuedAt": _ws(e.queued_ms),
        "startedAt": _ws(e.started_ms),
        "lastUpdatedAt": _ws(e.updated_ms),
        "versionNumber": e.version,
        "executionNumber": e.execution_number,
    }
    if deadline_ms is not None:
        out["approximateSecondsBeforeTimedOut"] = max(0, (deadline_ms - now_ms) // 1000)
    if include_document and document is not None:
        out["jobDocument"] = json.loads(document)
    return _drop_none(out)


def device_summary(e: Execution) -> dict[str, Any]:
    return _drop_none(
        {
            "jobId": e.job_id,
            "queuedAt": _ws(e.queued_ms),
            "startedAt": _ws(e.started_ms),
            "lastUpdatedAt": _ws(e.updated_ms),
            "versionNumber": e.version,
            "executionNumber": e.execution_number,
        }
    )


def execution_state(e: Execution) -> dict[str, Any]:
    return {"status": e.status, "statusDetails": e.status_details, "versionNumber": e.version}


# ---- events
def job_event(job: Job, operation: str, now_ms: int, counts: dict[str, int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventType": "JOB",
        "eventId": str(uuid.uuid4()),
        "timestamp": now_ms // 1000,
        "operation": operation,
        "jobId": job.job_id,
        "status": job.status,
        "targetSelection": job.target_selection,
        "targets": job.spec.get("targets", []),
        "description": job.spec.get("description"),
        "createdAt": _ws(job.created_ms),
        "lastUpdatedAt": _ws(job.updated_ms),
        "completedAt": _ws(job.completed_ms),
    }
    if operation == "completed":
        body["jobProcessDetails"] = process_details(counts, 0)
    if job.comment is not None or job.reason_code is not None:
        body["comment"] = job.comment
        body["reasonCode"] = job.reason_code
    return _drop_none(body)


def execution_event(e: Execution, thing_arn: str, now_ms: int) -> dict[str, Any]:
    return {
        "eventType": "JOB_EXECUTION",
        "eventId": str(uuid.uuid4()),
        "timestamp": now_ms // 1000,
        "operation": e.status.lower(),
        "jobId": e.job_id,
        "thingArn": thing_arn,
        "status": e.status,
        "statusDetails": e.status_details,
    }


def is_terminal(status: str) -> bool:
    return status in TERMINAL
