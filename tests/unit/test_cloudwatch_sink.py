"""The local CloudWatch store: what cloudwatchLogs/cloudwatchMetric write, the summary, and the row cap."""

from __future__ import annotations

import pytest

from gateway.sinks import cloudwatch
from gateway.sinks.cloudwatch import CloudWatchSink, Datapoint, LogEvent
from gateway.store import Store


def test_summary_and_latest_values() -> None:
    sink = CloudWatchSink(Store(":memory:"))
    sink.put_log_events([LogEvent("g1", 1, "a"), LogEvent("g1", 2, "b"), LogEvent("g2", 3, "c")])
    for value, stamp in ((1.0, 10), (2.5, 20)):
        sink.put_datapoint(Datapoint("ns", "temp", value, "None", stamp))
    sink.put_datapoint(Datapoint("ns", "rpm", 7.0, "Count", 30))
    summary = sink.summary()
    assert summary["logGroups"] == [
        {"logGroupName": "g1", "events": 2, "lastTimestamp": 2},
        {"logGroupName": "g2", "events": 1, "lastTimestamp": 3},
    ]
    assert [(m["metricName"], m["datapoints"], m["lastValue"], m["lastTimestamp"]) for m in summary["metrics"]] == [
        ("rpm", 1, 7.0, 30),
        ("temp", 2, 2.5, 20),
    ]
    assert [e["message"] for e in sink.log_events("g1")] == ["a", "b"]
    assert sink.latest == {("ns", "temp", "None"): 2.5, ("ns", "rpm", "Count"): 7.0}
    assert sink.totals == {"log_events": 3, "datapoints": 3}


def test_only_the_newest_rows_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloudwatch, "KEEP_ROWS", 3)
    sink = CloudWatchSink(Store(":memory:"))
    for i in range(5):
        sink.put_log_events([LogEvent("g", i, str(i))])
        sink.put_datapoint(Datapoint("ns", "m", float(i), "None", i))
    assert [e["message"] for e in sink.log_events()] == ["2", "3", "4"]
    assert [p["value"] for p in sink.datapoints()] == [2.0, 3.0, 4.0]
