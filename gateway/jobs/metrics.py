"""Jobs in the gateway's Prometheus metrics, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.jobs.mqtt import JobsMqtt
from gateway.store import Store


def jobs_metrics(store: Store, mqtt: JobsMqtt) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("edgesim_jobs", "Jobs by state", labels=["status"])
    for row in store.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status"):
        jobs.add_metric([row["status"]], row["n"])
    yield jobs
    executions = GaugeMetricFamily(
        "edgesim_job_executions", "Latest job executions by state, per job not yet finished", labels=["job", "status"]
    )
    rows = store.query(
        "SELECT e.job_id, e.status, COUNT(*) AS n FROM job_executions e JOIN jobs j ON j.job_id = e.job_id "
        "WHERE e.superseded = 0 AND j.completed_ms IS NULL GROUP BY e.job_id, e.status ORDER BY e.job_id, e.status"
    )
    for row in rows:
        executions.add_metric([row["job_id"], row["status"]], row["n"])
    yield executions
    requests = CounterMetricFamily("edgesim_jobs_mqtt_requests", "Jobs MQTT API requests answered", labels=["reply"])
    requests.add_metric(["accepted"], mqtt.stats["requests"] - mqtt.stats["rejected"])
    requests.add_metric(["rejected"], mqtt.stats["rejected"])
    yield requests
