"""Jobs, executions, rollout queues and templates in SQLite: rows in, dataclasses out (no rules here)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.jobs.states import IN_PROGRESS, PENDING, QUEUED
from gateway.store import Store


@dataclass
class Job:
    job_id: str
    status: str
    target_selection: str
    spec: dict[str, Any]
    document: str | None
    created_ms: int
    updated_ms: int
    completed_ms: int | None = None
    started_ms: int | None = None
    force_canceled: bool = False
    reason_code: str | None = None
    comment: str | None = None
    rollout_window: int = 0
    rollout_released: int = 0
    notified: int = 0

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(
            row["job_id"], row["status"], row["target_selection"], json.loads(row["spec"]), row["document"],
            row["created_ms"], row["updated_ms"], row["completed_ms"], row["started_ms"], bool(row["force_canceled"]),
            row["reason_code"], row["comment"], row["rollout_window"], row["rollout_released"], row["notified"],
        )  # fmt: skip


@dataclass
class Execution:
    job_id: str
    thing: str
    execution_number: int
    status: str
    queued_ms: int
    updated_ms: int
    version: int = 1
    status_details: dict[str, str] = field(default_factory=dict)
    started_ms: int | None = None
    step_deadline_ms: int | None = None
    retry_attempt: int = 0
    force_canceled: bool = False

    @classmethod
    def from_row(cls, row: Any) -> Execution:
        return cls(
            row["job_id"], row["thing"], row["execution_number"], row["status"], row["queued_ms"], row["updated_ms"],
            row["version"], json.loads(row["status_details"]), row["started_ms"], row["step_deadline_ms"],
            row["retry_attempt"], bool(row["force_canceled"]),
        )  # fmt: skip


_JOB_COLUMNS = (
    "job_id, status, target_selection, spec, document, created_ms, updated_ms, completed_ms, started_ms, "
    "force_canceled, reason_code, comment, rollout_window, rollout_released, notified"
)
_EXEC_COLUMNS = (
    "job_id, thing, execution_number, status, version, status_details, queued_ms, started_ms, updated_ms, "
    "step_deadline_ms, retry_attempt, force_canceled"
)


class JobsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- jobs
    def job(self, job_id: str) -> Job | None:
        row = self.store.one("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        return None if row is None else Job.from_row(row)

    def save_job(self, job: Job) -> None:
        self.store.db.execute(
            # An upsert, not REPLACE: a REPLACE deletes the row first, and the delete cascades to the executions.
            f"INSERT INTO jobs({_JOB_COLUMNS}) VALUES ({','.join('?' * 15)}) ON CONFLICT(job_id) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in _JOB_COLUMNS.split(", ")[1:]),
            (
                job.job_id, job.status, job.target_selection, json.dumps(job.spec), job.document, job.created_ms,
                job.updated_ms, job.completed_ms, job.started_ms, int(job.force_canceled), job.reason_code,
                job.comment, job.rollout_window, job.rollout_released, job.notified,
            ),
        )  # fmt: skip

    def delete_job(self, job_id: str) -> None:
        self.store.db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,))

    def jobs(self, status: str | None = None, target_selection: str | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if status:
            sql += " AND status=?"
            args.append(status)
        if target_selection:
            sql += " AND target_selection=?"
            args.append(target_selection)
        return [Job.from_row(r) for r in self.store.query(sql + " ORDER BY created_ms DESC, job_id", args)]

    def active_jobs(self) -> list[Job]:
        rows = self.store.query(
            "SELECT * FROM jobs WHERE status IN ('IN_PROGRESS','SCHEDULED') "
            "OR (status='CANCELED' AND completed_ms IS NULL)"  # canceled, with executions still running
        )
        return [Job.from_row(r) for r in rows]

    # ---- rollout queue
    def enqueue(self, job_id: str, things: Iterable[str]) -> None:
        start = self.store.query("SELECT COALESCE(MAX(seq), 0) FROM job_rollout_queue WHERE job_id=?", (job_id,))[0][0]
        self.store.db.executemany(
            "INSERT OR IGNORE INTO job_rollout_queue(job_id, seq, thing) VALUES (?,?,?)",
            [(job_id, start + i + 1, t) for i, t in enumerate(things)],
        )

    def queued_targets(self, job_id: str, limit: int) -> list[str]:
        rows = self.store.query(
            "SELECT thing FROM job_rollout_queue WHERE job_id=? ORDER BY seq LIMIT ?", (job_id, limit)
        )
        return [r["thing"] for r in rows]

    def dequeue(self, job_id: str, things: Iterable[str]) -> None:
        self.store.db.executemany(
            "DELETE FROM job_rollout_queue WHERE job_id=? AND thing=?", [(job_id, t) for t in things]
        )

    def awaiting_rollout(self, job_id: str) -> int:
        return int(self.store.query("SELECT COUNT(*) FROM job_rollout_queue WHERE job_id=?", (job_id,))[0][0])

    def clear_queue(self, job_id: str) -> None:
        self.store.db.execute("DELETE FROM job_rollout_queue WHERE job_id=?", (job_id,))

    # ---- executions
    def save_execution(self, e: Execution) -> None:
        self.store.db.execute(
            f"INSERT INTO job_executions({_EXEC_COLUMNS}) VALUES ({','.join('?' * 12)}) "
            "ON CONFLICT(job_id, thing, execution_number) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in _EXEC_COLUMNS.split(", ")[3:]),
            (
                e.job_id, e.thing, e.execution_number, e.status, e.version, json.dumps(e.status_details),
                e.queued_ms, e.started_ms, e.updated_ms, e.step_deadline_ms, e.retry_attempt, int(e.force_canceled),
            ),
        )  # fmt: skip

    def delete_execution(self, job_id: str, thing: str, number: int) -> None:
        self.store.db.execute(
            "DELETE FROM job_executions WHERE job_id=? AND thing=? AND execution_number=?", (job_id, thing, number)
        )

    def latest(self, job_id: str, thing: str) -> Execution | None:
        row = self.store.one(
            "SELECT * FROM job_executions WHERE job_id=? AND thing=? ORDER BY execution_number DESC LIMIT 1",
            (job_id, thing),
        )
        return None if row is None else Execution.from_row(row)

    def execution(self, job_id: str, thing: str, number: int) -> Execution | None:
        row = self.store.one(
            "SELECT * FROM job_executions WHERE job_id=? AND thing=? AND execution_number=?", (job_id, thing, number)
        )
        return None if row is None else Execution.from_row(row)

    def executions_for_job(self, job_id: str, status: str | None = None) -> list[Execution]:
        sql, args = "SELECT * FROM job_executions WHERE job_id=?", [job_id]
        if status:
            sql += " AND status=?"
            args.append(status)
        return [Execution.from_row(r) for r in self.store.query(sql + " ORDER BY thing, execution_number", args)]

    def executions_for_thing(self, thing: str, status: str | None = None) -> list[Execution]:
        sql, args = "SELECT * FROM job_executions WHERE thing=?", [thing]
        if status:
            sql += " AND status=?"
            args.append(status)
        rows = self.store.query(sql + " ORDER BY queued_ms DESC, job_id", args)
        return [Execution.from_row(r) for r in rows]

    def pending_for_thing(self, thing: str) -> list[Execution]:
        """IN_PROGRESS executions first, then QUEUED ones, each oldest first: the order AWS hands them out."""
        rows = self.store.query(
            "SELECT * FROM job_executions WHERE thing=? AND status IN (?,?) "
            "ORDER BY CASE status WHEN 'IN_PROGRESS' THEN 0 ELSE 1 END, queued_ms, job_id",
            (thing, IN_PROGRESS, QUEUED),
        )
        return [Execution.from_row(r) for r in rows]

    def pending_for_job(self, job_id: str) -> list[Execution]:
        marks = ",".join("?" * len(PENDING))
        rows = self.store.query(
            f"SELECT * FROM job_executions WHERE job_id=? AND status IN ({marks})", (job_id, *sorted(PENDING))
        )
        return [Execution.from_row(r) for r in rows]

    def counts(self, job_id: str) -> dict[str, int]:
        """Things per state of their latest execution (a retried execution is superseded by its retry)."""
        rows = self.store.query(
            "SELECT status, COUNT(*) AS n FROM job_executions WHERE job_id=? AND superseded=0 GROUP BY status",
            (job_id,),
        )
        return {r["status"]: r["n"] for r in rows}

    def supersede(self, e: Execution) -> None:
        self.store.db.execute(
            "UPDATE job_executions SET superseded=1 WHERE job_id=? AND thing=? AND execution_number=?",
            (e.job_id, e.thing, e.execution_number),
        )

    def step_timed_out(self, now_ms: int) -> list[Execution]:
        rows = self.store.query(
            "SELECT * FROM job_executions WHERE status=? AND step_deadline_ms <= ?", (IN_PROGRESS, now_ms)
        )
        return [Execution.from_row(r) for r in rows]

    def started_before(self, job_id: str, started_ms: int) -> list[Execution]:
        rows = self.store.query(
            "SELECT * FROM job_executions WHERE job_id=? AND status=? AND started_ms <= ?",
            (job_id, IN_PROGRESS, started_ms),
        )
        return [Execution.from_row(r) for r in rows]

    # ---- templates
    def template(self, template_id: str) -> dict[str, Any] | None:
        row = self.store.one("SELECT record FROM job_templates WHERE template_id=?", (template_id,))
        return None if row is None else dict(json.loads(row["record"]))

    def save_template(self, template_id: str, record: dict[str, Any], created_ms: int) -> None:
        self.store.db.execute(
            "INSERT INTO job_templates(template_id, record, created_ms) VALUES (?,?,?)",
            (template_id, json.dumps(record), created_ms),
        )

    def templates(self) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT record FROM job_templates ORDER BY created_ms DESC, template_id")
        return [dict(json.loads(r["record"])) for r in rows]

    def delete_template(self, template_id: str) -> None:
        self.store.db.execute("DELETE FROM job_templates WHERE template_id=?", (template_id,))

    # ---- event switches (UpdateEventConfigurations writes them)
    def event_enabled(self, event_type: str) -> bool:
        row = self.store.one("SELECT enabled FROM event_configurations WHERE event_type=?", (event_type,))
        return bool(row and row["enabled"])
