"""The device side of Jobs, shared by the MQTT API and the `iot-jobs-data` HTTPS API: list pending executions, start
the next one, describe one, update one."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.jobs import rollout, states, views
from gateway.jobs.documents import execution_number
from gateway.jobs.engine import JobsEngine
from gateway.jobs.exceptions import (
    InvalidRequestException,
    InvalidStateTransitionException,
    ResourceNotFoundException,
    VersionConflictException,
)
from gateway.jobs.repo import Execution

NEXT = "$next"
MAX_STATUS_DETAILS = 10
_DETAIL_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


def _details(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequestException("statusDetails must be a map of strings to strings")
    if len(value) > MAX_STATUS_DETAILS:
        raise InvalidRequestException(f"statusDetails may hold at most {MAX_STATUS_DETAILS} entries")
    for k, v in value.items():
        if _DETAIL_KEY.fullmatch(k) is None or not 1 <= len(v) <= 1024 or not v.isprintable():
            raise InvalidRequestException(
                "statusDetails keys are 1-128 characters of [a-zA-Z0-9:_-], values 1-1024 printable characters"
            )
    return dict(value)


def _step(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or 1 <= value <= 10080):
        raise InvalidRequestException("stepTimeoutInMinutes must be between 1 and 10080 (or -1 to clear it)")
    return value


def _execution_number(params: dict[str, Any]) -> int | None:
    return execution_number(params.get("executionNumber"))


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequestException(f"{key} must be a boolean")
    return value


class DeviceJobs:
    def __init__(self, engine: JobsEngine) -> None:
        self.engine = engine
        self.repo = engine.repo

    def get_pending(self, thing: str) -> dict[str, Any]:
        pending = self.repo.pending_for_thing(thing)
        return {
            "inProgressJobs": [views.device_summary(e) for e in pending if e.status == states.IN_PROGRESS],
            "queuedJobs": [views.device_summary(e) for e in pending if e.status == states.QUEUED],
        }

    def start_next(self, thing: str, params: dict[str, Any]) -> dict[str, Any]:
        details = _details(params.get("statusDetails"))
        step = _step(params.get("stepTimeoutInMinutes"))
        now = self.engine.clock.wall_ms()
        with self.engine.change():
            pending = self.repo.pending_for_thing(thing)
            if not pending:
                return {}
            e = pending[0]
            if e.status == states.QUEUED:
                e.step_deadline_ms = rollout.step_deadline(now, step, e.step_deadline_ms)
                self.engine.set_status(e, states.IN_PROGRESS, now, details if details is not None else e.status_details)
        return {"execution": self.engine.device_view(e, now)}

    def describe(self, thing: str, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
        include_document = _flag(params, "includeJobDocument", True)
        number = _execution_number(params)
        now = self.engine.clock.wall_ms()
        if job_id == NEXT:
            pending = self.repo.pending_for_thing(thing)
            if not pending:
                return {}
            e: Execution | None = pending[0]
        elif number is not None:
            e = self.repo.execution(job_id, thing, number)
        else:
            e = self.repo.latest(job_id, thing)
        if e is None:
            raise ResourceNotFoundException(f"No job execution of job {job_id} on thing {thing}")
        return {"execution": self.engine.device_view(e, now, include_document)}

    def update(self, thing: str, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("status")
        if not isinstance(status, str) or status not in states.EXECUTION_STATES:
            raise InvalidRequestException("status must be one of " + ", ".join(states.EXECUTION_STATES))
        details = _details(params.get("statusDetails"))
        step = _step(params.get("stepTimeoutInMinutes"))
        include_state = _flag(params, "includeJobExecutionState", False)
        include_document = _flag(params, "includeJobDocument", False)
        expected = params.get("expectedVersion")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise InvalidRequestException("expectedVersion must be a number")
        number = _execution_number(params)
        now = self.engine.clock.wall_ms()
        with self.engine.change():
            e = self.repo.latest(job_id, thing)
            if e is None or (number is not None and number != e.execution_number):
                raise ResourceNotFoundException(f"No job execution of job {job_id} on thing {thing}")
            state = views.execution_state(e)
            if expected is not None and expected != e.version:
                error = VersionConflictException(
                    f"expectedVersion {expected} does not match the job execution's version {e.version}"
                )
                error.execution_state = state  # type: ignore[attr-defined]
                raise error
            try:
                states.check_device_update(e.status, status, job_id, thing)
            except InvalidStateTransitionException as error:
                error.execution_state = state
                raise
            merged = dict(e.status_details)
            merged.update(details or {})
            if status == states.IN_PROGRESS:
                e.step_deadline_ms = rollout.step_deadline(now, step, e.step_deadline_ms)
            self.engine.set_status(e, status, now, merged)
        out: dict[str, Any] = {}
        if include_state:
            out["executionState"] = views.execution_state(e)
        if include_document:
            job = self.repo.job(job_id)
            document = self.engine.document_for_device(job) if job else None
            if document is not None:
                out["jobDocument"] = json.loads(document)
        return out
