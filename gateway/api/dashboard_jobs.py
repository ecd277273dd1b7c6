"""The dashboard's jobs pages as JSON: every job with its executions by state, and one job's campaign (executions by
state over time, rollout rate, aborts), read through the jobs control plane's own AWS-shaped operations."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from gateway.api import jobs_timeline
from gateway.errors import AwsError

PREFIX = "/edgesim/dash/jobs"
MAX_JOBS = 50
MAX_EXECUTIONS = 20_000  # a page is drawn from at most this many executions
PAGE = 250  # AWS's maximum maxResults for ListJobExecutionsForJob
SHOWN = ("jobId", "status", "targetSelection", "createdAt", "completedAt", "lastUpdatedAt", "description",
         "jobProcessDetails", "jobExecutionsRolloutConfig", "abortConfig", "timeoutConfig", "comment", "reasonCode",
         "forceCanceled")  # fmt: skip


class JobsReader(Protocol):
    """The three control-plane reads the pages need (as boto3 `iot` answers them; times in epoch seconds)."""

    def list_jobs(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def describe_job(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def list_job_executions_for_job(self, params: dict[str, Any]) -> dict[str, Any]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


class JobsPage:
    def __init__(self, jobs: JobsReader, now: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.now = now

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PREFIX, self.list)
        app.router.add_get(PREFIX + "/{job}", self.job)

    def _executions(self, job_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"jobId": job_id, "maxResults": PAGE}
        while len(out) < MAX_EXECUTIONS:
            page = self.jobs.list_job_executions_for_job(params)
            for item in page.get("executionSummaries", []):
                summary = dict(item.get("jobExecutionSummary", {}))
                summary["thingName"] = str(item.get("thingArn", "")).rpartition("/")[2]
                out.append(summary)
            token = page.get("nextToken")
            if not token:
                break
            params = {**params, "nextToken": token}
        return out

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
