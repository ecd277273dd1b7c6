"""The dashboard's jobs pages as JSON: every job with its executions by state, and one job's campaign (executions by
state over time, rollout rate, aborts), read through the jobs control plane's AWS-shaped operations and, for a job's
executions, one read of the stored records (ListJobExecutionsForJob would take a page per 250 of them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from gateway.api import jobs_timeline
from gateway.errors import AwsError

PREFIX = "/edgesim/dash/jobs"
MAX_JOBS = 50
SHOWN = ("jobId", "status", "targetSelection", "createdAt", "completedAt", "lastUpdatedAt", "description",
         "jobProcessDetails", "jobExecutionsRolloutConfig", "abortConfig", "timeoutConfig", "comment", "reasonCode",
         "forceCanceled")  # fmt: skip


class JobsReader(Protocol):
    """The three control-plane reads the pages need (as boto3 `iot` answers them; times in epoch seconds)."""

    def list_jobs(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def describe_job(self, params: dict[str, Any]) -> dict[str, Any]: ...


class ExecutionRecord(Protocol):
    """A stored job execution (times in epoch milliseconds)."""

    @property
    def thing(self) -> str: ...
    @property
    def execution_number(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def queued_ms(self) -> int: ...
    @property
    def started_ms(self) -> int | None: ...
    @property
    def updated_ms(self) -> int: ...


class ExecutionSource(Protocol):
    def executions_for_job(self, job_id: str) -> Sequence[ExecutionRecord]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


class JobsPage:
    def __init__(self, jobs: JobsReader, executions: ExecutionSource, now: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.records = executions
        self.now = now

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PREFIX, self.list)
        app.router.add_get(PREFIX + "/{job}", self.job)

    def _executions(self, job_id: str) -> list[dict[str, Any]]:
        """Each thing's latest execution, shaped as ListJobExecutionsForJob's summaries (epoch seconds)."""
        latest: dict[str, ExecutionRecord] = {}
        for record in self.records.executions_for_job(job_id):
            seen = latest.get(record.thing)
            if seen is None or record.execution_number > seen.execution_number:
                latest[record.thing] = record
        return [
            {
                "thingName": r.thing,
                "status": r.status,
                "queuedAt": r.queued_ms / 1000,
                "startedAt": None if r.started_ms is None else r.started_ms / 1000,
                "lastUpdatedAt": r.updated_ms / 1000,
                "executionNumber": r.execution_number,
            }
            for r in latest.values()
        ]

    async def list(self, request: web.Request) -> web.Response:
        listed = self.jobs.list_jobs({"maxResults": MAX_JOBS}).get("jobs", [])
        out = []
        for summary in listed:
            try:
                job = self.jobs.describe_job({"jobId": summary["jobId"]})["job"]
            except AwsError:
                continue  # deleted between the two reads
            details = job.get("jobProcessDetails", {})
            out.append(
                {
                    "jobId": job["jobId"],
                    "status": job.get("status"),
                    "targetSelection": job.get("targetSelection"),
                    "createdAt": job.get("createdAt"),
                    "completedAt": job.get("completedAt"),
                    "processDetails": {k: v for k, v in details.items() if isinstance(v, int)},
                }
            )
        out.sort(key=lambda j: j.get("createdAt") or 0, reverse=True)
        return web.json_response({"jobs": out, "now": self.now()})

    async def job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job"]
        try:
            job = self.jobs.describe_job({"jobId": job_id})["job"]
            executions = self._executions(job_id)
        except AwsError as exc:
            return _error(exc.http_status, exc.message)
        now = self.now()
        created = float(job.get("createdAt") or now)
        end = max(float(job.get("completedAt") or now), created)
        counts = jobs_timeline.counts_of(executions)
        rollout_config = job.get("jobExecutionsRolloutConfig") or {}
        body = {
            "job": {key: job[key] for key in SHOWN if job.get(key) is not None},
            "now": now,
            "counts": counts,
            "executions": len(executions),
            "timeline": jobs_timeline.timeline(executions, created, end),
            "rollout": jobs_timeline.rollout(executions, created, end, rollout_config),
            "aborts": jobs_timeline.aborts(job, counts),
            "recent": sorted(executions, key=lambda e: -float(e.get("lastUpdatedAt") or 0))[:20],
        }
        return web.json_response(body)
