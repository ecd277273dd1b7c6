"""CloudWatch kept locally: what the cloudwatchLogs and cloudwatchMetric rule actions write, readable back.

Writes are grouped into one transaction per loop turn; `durable()` resolves once they are committed, so an
acknowledged message's log event or datapoint is on disk. The newest KEEP_ROWS rows of each kind are kept.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.store import Store

log = logging.getLogger("edgesim.cloudwatch")

KEEP_ROWS = 10_000
SUMMARY_ROWS = 500  # log groups, and metrics, listed by summary()
EXPORTED_METRICS = 1000  # distinct metrics on /metrics (templated names could otherwise grow it without bound)
# CloudWatch's StandardUnit values (PutMetricData), which the cloudwatchMetric action's metricUnit must name.
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
        "",
    }
)


@dataclass(frozen=True)
class LogEvent:
    group: str
    timestamp_ms: int
    message: str


@dataclass(frozen=True)
class Datapoint:
    namespace: str
    name: str
    value: float
    unit: str
    timestamp_ms: int


class CloudWatchSink:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._logs: list[LogEvent] = []
        self._points: list[Datapoint] = []
        self._flushed: asyncio.Future[None] | None = None
        self.totals = {"log_events": 0, "datapoints": 0}
        # The latest value per (namespace, name, unit), for /metrics.
        self.latest: dict[tuple[str, str, str], float] = {}

    def put_log_events(self, events: list[LogEvent]) -> None:
        self._logs.extend(events)
        self.totals["log_events"] += len(events)
        self._schedule()

    def put_datapoint(self, point: Datapoint) -> None:
        self._points.append(point)
        self.totals["datapoints"] += 1
        key = (point.namespace, point.name, point.unit)
        if key in self.latest or len(self.latest) < EXPORTED_METRICS:
            self.latest[key] = point.value
        self._schedule()

    async def durable(self) -> None:
        if self._flushed is not None:
            await asyncio.shield(self._flushed)

    def _schedule(self) -> None:
        if self._flushed is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            with self.store.transaction() as db:
                self._write(db)
            return
        self._flushed = self.store.commit_soon(self._write)

    def _write(self, db: sqlite3.Connection) -> None:
        """One write of the store's group commit (its waiters all fail if that commit fails)."""
        self._flushed = None
        logs, self._logs = self._logs, []
        points, self._points = self._points, []
        db.executemany(
            "INSERT INTO cloudwatch_log_events(log_group, timestamp_ms, message) VALUES (?,?,?)",
            [(e.group, e.timestamp_ms, e.message) for e in logs],
        )
        db.executemany(
            "INSERT INTO cloudwatch_datapoints(namespace, name, value, unit, timestamp_ms) VALUES (?,?,?,?,?)",
            [(p.namespace, p.name, p.value, p.unit, p.timestamp_ms) for p in points],
        )
        for table in ("cloudwatch_log_events", "cloudwatch_datapoints"):
            if logs if table == "cloudwatch_log_events" else points:
                db.execute(f"DELETE FROM {table} WHERE seq <= (SELECT MAX(seq) FROM {table}) - ?", (KEEP_ROWS,))

    # ---- reading (CLI, dashboard)
    def log_events(self, group: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = ("WHERE log_group=?", [group]) if group else ("", [])
        rows = self.store.query(
            f"SELECT log_group, timestamp_ms, message FROM cloudwatch_log_events {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [
            {"logGroupName": r["log_group"], "timestamp": r["timestamp_ms"], "message": r["message"]}
            for r in reversed(rows)
        ]

    def datapoints(self, namespace: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = ("WHERE namespace=?", [namespace]) if namespace else ("", [])
        rows = self.store.query(
            f"SELECT namespace, name, value, unit, timestamp_ms FROM cloudwatch_datapoints {where} "
            "ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [
            {
                "namespace": r["namespace"],
                "metricName": r["name"],
                "value": r["value"],
                "unit": r["unit"],
                "timestamp": r["timestamp_ms"],
            }
            for r in reversed(rows)
        ]

    def summary(self) -> dict[str, Any]:
        """Per log group and per metric: how many entries and the latest one (dashboard, `edgesim cloudwatch`)."""
        groups = self.store.query(
            "SELECT log_group, COUNT(*) AS n, MAX(timestamp_ms) AS last FROM cloudwatch_log_events GROUP BY log_group "
            "ORDER BY log_group LIMIT ?",
            (SUMMARY_ROWS,),
        )
        metrics = self.store.query(
            "SELECT d.namespace, d.name, d.unit, d.value, d.timestamp_ms, c.n FROM cloudwatch_datapoints d JOIN "
            "(SELECT COUNT(*) AS n, MAX(seq) AS last FROM cloudwatch_datapoints GROUP BY namespace, name, unit) c "
            "ON d.seq = c.last ORDER BY d.namespace, d.name LIMIT ?",
            (SUMMARY_ROWS,),
        )
        out_metrics = [
            {
                "namespace": m["namespace"],
                "metricName": m["name"],
                "unit": m["unit"],
                "datapoints": m["n"],
                "lastValue": m["value"],
                "lastTimestamp": m["timestamp_ms"],
            }
            for m in metrics
        ]
        return {
            "logGroups": [
                {"logGroupName": g["log_group"], "events": g["n"], "lastTimestamp": g["last"]} for g in groups
            ],
            "metrics": out_metrics,
        }
