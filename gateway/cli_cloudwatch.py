"""`edgesim cloudwatch`: what the cloudwatchLogs and cloudwatchMetric rule actions recorded on a gateway."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, console, emit
from gateway.cli_rules import fetch_view

cloudwatch_app = typer.Typer(
    help="CloudWatch as the rules' cloudwatchLogs and cloudwatchMetric actions wrote it (kept locally).",
    no_args_is_help=True,
)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@cloudwatch_app.command("logs")
def cloudwatch_logs(
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this log group.")] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest events.", min=1, max=1000)] = 50,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Log events written by cloudwatchLogs rule actions, oldest first (without --group: a summary per group)."""
    if group is None and not as_json:
        summary = fetch_view(endpoint, "cloudwatch/summary")["logGroups"]
        table = Table("log group", "events", "last event")
        for g in summary:
            table.add_row(escape(g["logGroupName"]), str(g["events"]), _when(g["lastTimestamp"]))
        if not summary:
            console.print("no log events yet: a rule with a cloudwatchLogs action writes them")
            return
        console.print(table)
        console.print("show one group's events with --group NAME")
        return
    events = [e for e in fetch_view(endpoint, "cloudwatch/logs") if group is None or e["logGroupName"] == group]
    events = events[-limit:]
    if as_json:
        emit({"events": events}, True)
        return
    if not events:
        console.print(f"no events in log group {escape(group or '')}")
    for event in events:
        console.print(f"{_when(event['timestamp'])}  {event['message']}", markup=False, soft_wrap=True)


@cloudwatch_app.command("metrics")
def cloudwatch_metrics(
    namespace: Annotated[str | None, typer.Option(help="Only this namespace.")] = None,
    datapoints: Annotated[bool, typer.Option("--datapoints", help="List datapoints instead of a summary.")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Metrics written by cloudwatchMetric rule actions: per metric its count and latest value (or each datapoint)."""
    if datapoints:
        points = [p for p in fetch_view(endpoint, "cloudwatch/metrics") if namespace in (None, p["namespace"])]
        table = Table("time", "namespace", "metric", "value", "unit")
        for p in points:
            table.add_row(
                _when(p["timestamp"]), escape(p["namespace"]), escape(p["metricName"]), str(p["value"]), p["unit"]
            )
        emit({"datapoints": points}, as_json, table)
        return
    metrics = [m for m in fetch_view(endpoint, "cloudwatch/summary")["metrics"] if namespace in (None, m["namespace"])]
    table = Table("namespace", "metric", "unit", "datapoints", "last value", "last time")
    for m in metrics:
        table.add_row(
            escape(m["namespace"]),
            escape(m["metricName"]),
            m["unit"],
            str(m["datapoints"]),
            str(m["lastValue"]),
            _when(m["lastTimestamp"]),
        )
    emit({"metrics": metrics}, as_json, table)
