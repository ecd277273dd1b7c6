"""What time does to jobs: scheduled starts and ends, the rollout's next releases, timeouts, and continuous jobs
following their groups' members. `tick(now)` does one round; the gateway calls it every second with its clock."""

from __future__ import annotations

from gateway.jobs import states
from gateway.jobs.control import JobsControl
from gateway.jobs.documents import parse_schedule_time
from gateway.jobs.engine import JobsEngine
from gateway.jobs.exceptions import ResourceNotFoundException
from gateway.jobs.repo import Job
from gateway.jobs.rollout import MINUTE_MS


class JobsScheduler:
    def __init__(self, engine: JobsEngine, control: JobsControl) -> None:
        self.engine = engine
        self.control = control
        self.repo = engine.repo
        self.membership_dirty = True

    def _targets(self, job: Job) -> list[str]:
        things: dict[str, None] = {}
        for arn in job.spec.get("targets", []):
            try:
                things.update(dict.fromkeys(self.control._things([arn])))
            except ResourceNotFoundException:
                continue  # deleted since the job was created: nothing to send there
        return list(things)

    def tick(self, now: int) -> None:
        reconcile, self.membership_dirty = self.membership_dirty, False
        overdue = self.repo.step_timed_out(now)
        for job in self.repo.active_jobs():
            with self.engine.change():
                self._job_round(job, now, reconcile)
            minutes = (job.spec.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
            if minutes:
                overdue += self.repo.started_before(job.job_id, now - int(minutes) * MINUTE_MS)
        for e in overdue:
            with self.engine.change():
                current = self.repo.execution(e.job_id, e.thing, e.execution_number)
                if current is not None and current.status == states.IN_PROGRESS:
                    self.engine.set_status(current, states.TIMED_OUT, now)

    def _job_round(self, job: Job, now: int, reconcile: bool) -> None:
        scheduling = job.spec.get("schedulingConfig") or {}
        if job.status == states.SCHEDULED:
            start = parse_schedule_time(scheduling.get("startTime"))
            if start is None or start <= now:
                self.engine.start(job, self._targets(job), now)
        end = parse_schedule_time(scheduling.get("endTime"))
        if (
            end is not None
            and end <= now
            and not job.spec.get("ended")
            and job.status in (states.SCHEDULED, states.IN_PROGRESS)
        ):
            job.spec["ended"] = True
            behaviour = scheduling.get("endBehavior") or "STOP_ROLLOUT"
            if behaviour == "STOP_ROLLOUT":
                self.repo.clear_queue(job.job_id)
                if job.status == states.SCHEDULED:
                    job.status = states.IN_PROGRESS
                self.repo.save_job(job)
                self.engine.settle(job, now)
            else:
                self.engine.cancel(job, now, force=behaviour == "FORCE_CANCEL", comment=None, reason_code=None)
            return
        if job.status != states.IN_PROGRESS:
            return
        if reconcile and job.target_selection == "CONTINUOUS":
            self._follow_groups(job, now)
            stored = self.repo.job(job.job_id)  # executions that moved may have settled the stored job
            if stored is None or stored.status != states.IN_PROGRESS:
                return
            job = stored
        self.engine.release(job, now)
        self.engine.settle(job, now)

    def _follow_groups(self, job: Job, now: int) -> None:
        """A continuous job reaches things that joined its groups; a thing that left loses its queued execution."""
        members = set(self._targets(job))
        queued = set(self.repo.queued_targets(job.job_id, 1_000_000))
        latest = {e.thing: e for e in self.repo.executions_for_job(job.job_id)}
        joined = [
            t for t in sorted(members) if t not in queued and (t not in latest or latest[t].status == states.REMOVED)
        ]
        self.repo.enqueue(job.job_id, joined)
        left = [t for t in queued if t not in members]
        self.repo.dequeue(job.job_id, left)
        for thing, e in latest.items():
            if thing not in members and e.status == states.QUEUED:
                self.engine.set_status(e, states.REMOVED, now)
