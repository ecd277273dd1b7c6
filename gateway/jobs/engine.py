"""The moving parts shared by the control plane, the device API and the scheduler: executions are created, finished,
retried and timed out here, jobs complete, abort and cancel here, and every change is committed before the
notifications and events it causes are published."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.jobs import rollout, states, views
from gateway.jobs.documents import Presigner, presigned_expiry, resolve_placeholders
from gateway.jobs.repo import Execution, Job, JobsRepo
from gateway.messages import Message
from gateway.store import Store

MAX_RELEASE_PER_ROUND = 2000
Snapshot = tuple[tuple[tuple[str, str], ...], tuple[str, int] | None]


class JobsRegistry(Protocol):
    """What Jobs needs of the registry."""

    def arn(self, kind: str, name: str) -> str: ...

    def thing_exists(self, thing_name: str) -> bool: ...


Publish = Callable[[Message], None]


class JobsEngine:
    def __init__(
        self,
        store: Store,
        registry: JobsRegistry,
        clock: Clock,
        publish: Publish,
        presign: Presigner | None = None,
    ) -> None:
        self.store = store
        self.repo = JobsRepo(store)
        self.registry = registry
        self.clock = clock
        self.publish = publish
        self.presign = presign
        self._touched: dict[str, Snapshot] | None = None
        # Things per execution state, per job: kept as executions move, so a device's update costs no count query.
        self._counts: dict[str, dict[str, int]] = {}
        # Whether JOB / JOB_EXECUTION events are on: UpdateEventConfigurations' switches (the registry writes them).
        self.events_enabled: Callable[[str], bool] = self.repo.event_enabled
        self._out: list[tuple[str, dict[str, Any], dict[int, Any] | None]] = []
        self._views: dict[str, tuple[Job | None, str | None]] = {}
        self._memo = False

    # ---- change bracket: commit first, then publish
    @contextmanager
    def change(self) -> Iterator[None]:
        """One durable change. Notifications (notify, notify-next) and events go out only after it has committed."""
        if self._touched is not None:  # nested: the outer bracket publishes
            yield
            return
        self._touched, self._out = {}, []
        try:
            with self.store.transaction():
                yield
            touched, out = self._touched, self._out
        except BaseException:
            self._counts.clear()  # it may hold moves that were rolled back
            raise
        finally:
            self._touched, self._out, self._views = None, [], {}
        now = self.clock.wall_ms()
        self._memo = True  # the notifications below share each job's document view
        try:
            for thing, before in touched.items():
                self._notify(thing, before, now)
        finally:
            self._memo, self._views = False, {}
        for topic, body, props in out:
            self._send(topic, body, props)

    def emit(self, topic: str, body: dict[str, Any], props: dict[int, Any] | None = None) -> None:
        """Publish after the current change commits (at once outside one)."""
        if self._touched is None:
            self._send(topic, body, props)
        else:
            self._out.append((topic, body, props))

    def _send(self, topic: str, body: dict[str, Any], props: dict[int, Any] | None) -> None:
        now = self.clock.wall_ms()
        self.publish(Message(topic, json.dumps(body).encode(), 1, False, None, None, now, "jobs", properties=props))

    def touch(self, thing: str) -> None:
        """Note a thing's pending executions before they change, to tell after the commit what did."""
        if self._touched is not None and thing not in self._touched:
            self._touched[thing] = self._snapshot(thing)

    def _snapshot(self, thing: str) -> Snapshot:
        pending = self.repo.pending_for_thing(thing)
        head = (pending[0].job_id, pending[0].execution_number) if pending else None
        return tuple(sorted((e.job_id, e.status) for e in pending)), head

    def _notify(self, thing: str, before: Snapshot, now: int) -> None:
        pending = self.repo.pending_for_thing(thing)
        ids = tuple(sorted((e.job_id, e.status) for e in pending))
        head = (pending[0].job_id, pending[0].execution_number) if pending else None
        base = f"$aws/things/{thing}/jobs"
        if {j for j, _ in ids} != {j for j, _ in before[0]}:
            jobs: dict[str, list[dict[str, Any]]] = {}
            for e in pending:
                jobs.setdefault(e.status, []).append(views.device_summary(e))
            self._send(f"{base}/notify", {"timestamp": now // 1000, "jobs": jobs}, None)
        if head != before[1]:
            body: dict[str, Any] = {"timestamp": now // 1000}
            if pending:
                body["execution"] = self.device_view(pending[0], now)
            self._send(f"{base}/notify-next", body, None)

    def counts(self, job_id: str) -> dict[str, int]:
        counts = self._counts.get(job_id)
        if counts is None:
            counts = self._counts[job_id] = self.repo.counts(job_id)
        return dict(counts)

    def _moved(self, job_id: str, old: str | None, new: str | None) -> None:
        counts = self._counts.get(job_id)
        if counts is None:
            return
        if old is not None:
            counts[old] = counts.get(old, 0) - 1
            if counts[old] <= 0:
                del counts[old]
        if new is not None:
            counts[new] = counts.get(new, 0) + 1

    def forget_counts(self, job_id: str) -> None:
        self._counts.pop(job_id, None)

    # ---- views that need state
    def job_arn(self, job_id: str) -> str:
        return self.registry.arn("job", job_id)

    def thing_arn(self, thing: str) -> str:
        return self.registry.arn("thing", thing)

    def document_for_device(self, job: Job) -> str | None:
        if job.document is None or self.presign is None:
            return job.document
        return resolve_placeholders(job.document, self.presign, presigned_expiry(job.spec.get("presignedUrlConfig")))

    def deadline(self, e: Execution, job: Job | None) -> int | None:
        minutes = ((job.spec.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")) if job else None
        return rollout.timeout_deadline(e.status, e.started_ms, minutes, e.step_deadline_ms)

    def device_view(self, e: Execution, now: int, include_document: bool = True) -> dict[str, Any]:
        # One change notifies many things of the same job: its document and timeout are read (and signed) once.
        memo = self._views.get(e.job_id)
        if memo is None:
            job = self.repo.job(e.job_id)
            memo = (job, self.document_for_device(job) if job else None)
            if self._memo or self._touched is not None:
                self._views[e.job_id] = memo
        job, document = memo
        document = document if include_document else None
        return views.device_execution(e, document, now, self.deadline(e, job), include_document=include_document)

    # ---- executions
    def new_execution(self, job: Job, thing: str, now: int, retry_of: Execution | None = None) -> Execution:
        self.touch(thing)
        latest = retry_of or self.repo.latest(job.job_id, thing)
        number = latest.execution_number + 1 if latest else 1
        if latest is not None:
            self.repo.supersede(latest)
        self._moved(job.job_id, latest.status if latest else None, states.QUEUED)
        e = Execution(job.job_id, thing, number, states.QUEUED, now, now,
                      retry_attempt=(retry_of.retry_attempt + 1) if retry_of else 0)  # fmt: skip
        self.repo.save_execution(e)
        return e

    def set_status(self, e: Execution, status: str, now: int, details: dict[str, str] | None = None) -> None:
        """Move an execution (already checked against the state diagram) and record it; terminal ones may retry and
        may complete or abort their job."""
        self.touch(e.thing)
        self._moved(e.job_id, e.status, status)
        e.status = status
        e.version += 1
        e.updated_ms = now
        if details is not None:
            e.status_details = details
        if status == states.IN_PROGRESS and e.started_ms is None:
            e.started_ms = now
        if status in states.TERMINAL:
            e.step_deadline_ms = None
        self.repo.save_execution(e)
        if status not in states.TERMINAL:
            return
        job = self.repo.job(e.job_id)
        if job is None:
            return
        self._execution_event(e, now)
        retry_config = job.spec.get("jobExecutionsRetryConfig")
        if job.status == states.IN_PROGRESS and e.retry_attempt < rollout.retries_allowed(retry_config, status):
            self.new_execution(job, e.thing, now, retry_of=e)
        self.settle(job, now)

    def _execution_event(self, e: Execution, now: int) -> None:
        if self.events_enabled("JOB_EXECUTION"):
            body = views.execution_event(e, self.thing_arn(e.thing), now)
            self.emit(f"$aws/events/jobExecution/{e.job_id}/{e.status.lower()}", body)

    def job_event(self, job: Job, operation: str, now: int) -> None:
        if self.events_enabled("JOB"):
            self.emit(
                f"$aws/events/job/{job.job_id}/{operation}",
                views.job_event(job, operation, now, self.counts(job.job_id)),
            )

    # ---- jobs
    def settle(self, job: Job, now: int) -> None:
        """After executions changed: abort when the failure criteria say so, complete a finished snapshot job, end a
        cancellation once nothing runs."""
        counts = self.counts(job.job_id)
        if job.status == states.IN_PROGRESS:
            reason = rollout.abort_reason(job.spec.get("abortConfig"), counts)
            if reason is not None:
                self.cancel(job, now, force=False, comment=f"Job aborted: {reason} executions reached the abortConfig "
                            "threshold", reason_code=None)  # fmt: skip
                return
            if states.is_complete(job.target_selection, job.status, counts, self.repo.awaiting_rollout(job.job_id)):
                job.status = states.COMPLETED
                job.completed_ms = job.updated_ms = now
                self.repo.save_job(job)
                self.job_event(job, "completed", now)
        elif (
            job.status == states.CANCELED
            and job.completed_ms is None
            and not any(counts.get(s, 0) for s in states.PENDING)
        ):
            job.completed_ms = job.updated_ms = now
            self.repo.save_job(job)
            self.job_event(job, "canceled", now)

    def cancel(self, job: Job, now: int, *, force: bool, comment: str | None, reason_code: str | None) -> None:
        already = job.status == states.CANCELED
        job.status = states.CANCELED
        job.force_canceled = job.force_canceled or force
        job.comment = comment if comment is not None else job.comment
        job.reason_code = reason_code if reason_code is not None else job.reason_code
        job.updated_ms = now
        self.repo.save_job(job)
        self.repo.clear_queue(job.job_id)
        if not already:
            self.job_event(job, "cancellation_in_progress", now)
        for e in self.repo.pending_for_job(job.job_id):
            if e.status == states.QUEUED or force:
                if force and e.status == states.IN_PROGRESS:
                    e.force_canceled = True
                self.set_status(e, states.CANCELED, now)
        # Each execution's move settled a fresh copy of the job; settle what is stored now, not this stale one.
        stored = self.repo.job(job.job_id)
        if stored is not None:
            self.settle(stored, now)
            job.completed_ms = stored.completed_ms

    def start(self, job: Job, things: list[str], now: int) -> None:
        """Begin a job's rollout: its targets wait in the queue, and as many as the rate allows are notified now."""
        job.status = states.IN_PROGRESS
        job.started_ms = now
        job.updated_ms = now
        self.repo.save_job(job)
        self.repo.enqueue(job.job_id, things)
        self.release(job, now)
        self.settle(job, now)

    def release(self, job: Job, now: int) -> int:
        """Create executions for as many queued targets as the rollout rate allows now."""
        if job.status != states.IN_PROGRESS or job.started_ms is None:
            return 0
        counts = self.counts(job.job_id)
        rate = rollout.rollout_rate(job.spec.get("jobExecutionsRolloutConfig"), job.notified,
                                    counts.get(states.SUCCEEDED, 0))  # fmt: skip
        allowance, window = rollout.rollout_allowance(
            rate, job.started_ms, now, rollout.RolloutWindow(job.rollout_window, job.rollout_released)
        )
        # A round notifies at most MAX_RELEASE_PER_ROUND things, so a huge job never stalls the event loop for long:
        # the scheduler's next round, a second later, goes on.
        things = self.repo.queued_targets(job.job_id, min(allowance, MAX_RELEASE_PER_ROUND)) if allowance else []
        for thing in things:
            self.new_execution(job, thing, now)
        self.repo.dequeue(job.job_id, things)
        job.rollout_window, job.rollout_released = window.window, window.released + len(things)
        job.notified += len(things)
        self.repo.save_job(job)
        return len(things)
