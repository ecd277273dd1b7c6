"""The cloudwatchLogs and cloudwatchMetric rule actions, kept locally (`edgesim cloudwatch`, dashboard, /metrics)."""

from __future__ import annotations

import math
from typing import Any

from gateway import jsonutil
from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.cloudwatch import UNITS, Datapoint, LogEvent


def _required(kind: str, fields: dict[str, Any], *names: str) -> None:
    for name in names:
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise InvalidRequestException(f"{kind}.{name} is required")


@register("cloudwatchLogs")
class CloudWatchLogsAction:
    kind = "cloudwatchLogs"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        _required(self.kind, fields, "logGroupName")
        batch = fields.get("batchMode", False)
        if not isinstance(batch, bool):
            raise InvalidRequestException("cloudwatchLogs.batchMode must be a boolean")
        self.batch = batch
        self.fields = TemplatedFields.compile({"logGroupName": fields["logGroupName"]})
        self.clock = sinks.clock
        self.cloudwatch = sinks.cloudwatch

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["logGroupName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        group = self.resource(ctx)
        if not group:
            raise ActionError("cloudwatchLogs.logGroupName rendered empty")
        now = self.clock.wall_ms()
        events: list[LogEvent] = []
        if self.batch:
            # batchMode: the output is an array of {"timestamp": epoch ms, "message": text} (AWS's format).
            if not isinstance(output, list) or not output:
                raise ActionError("cloudwatchLogs batchMode needs the SQL output to be a non-empty array")
            for item in output:
                if not isinstance(item, dict) or "message" not in item:
                    raise ActionError("each batchMode entry must be an object with a message (and a timestamp)")
                text = item["message"] if isinstance(item["message"], str) else jsonutil.dumps(item["message"]).decode()
                stamp = item.get("timestamp", now)
                if not isinstance(stamp, int) or isinstance(stamp, bool):
                    raise ActionError("a batchMode entry's timestamp must be epoch milliseconds")
                events.append(LogEvent(group, stamp, text))
        else:
            try:
                text = output_bytes(output).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ActionError("the message is not UTF-8 text; CloudWatch Logs takes text") from exc
            events.append(LogEvent(group, now, text))
        self.cloudwatch.put_log_events(events)
        await self.cloudwatch.durable()


@register("cloudwatchMetric")
class CloudWatchMetricAction:
    kind = "cloudwatchMetric"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        _required(self.kind, fields, "metricNamespace", "metricName", "metricValue", "metricUnit")
        unit = fields["metricUnit"]
        if "${" not in unit and unit not in UNITS:
            raise InvalidRequestException(
                f"cloudwatchMetric.metricUnit {unit!r} is not a CloudWatch unit ({', '.join(sorted(UNITS))})"
            )
        names = ("metricNamespace", "metricName", "metricValue", "metricUnit", "metricTimestamp")
        self.fields = TemplatedFields.compile({n: str(fields[n]) for n in names if fields.get(n) is not None})
        self.clock = sinks.clock
        self.cloudwatch = sinks.cloudwatch

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        fields = self.fields.render(ctx)
        return f"{fields['metricNamespace']}/{fields['metricName']}"

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        fields = self.fields.render(ctx)
        try:
            value = float(fields["metricValue"])
        except ValueError:
            raise ActionError(f"metricValue {fields['metricValue']!r} is not a number") from None
        if not math.isfinite(value):
            raise ActionError(f"metricValue {fields['metricValue']!r} is not a finite number")
        if fields["metricUnit"] not in UNITS:
            raise ActionError(f"metricUnit {fields['metricUnit']!r} is not a CloudWatch unit")
        stamp_ms = self.clock.wall_ms()
        if fields.get("metricTimestamp"):
            try:
                stamp_ms = int(fields["metricTimestamp"]) * 1000  # AWS takes epoch seconds here
            except ValueError:
                raise ActionError(f"metricTimestamp {fields['metricTimestamp']!r} is not epoch seconds") from None
        if not fields["metricNamespace"] or not fields["metricName"]:
            raise ActionError("metricNamespace and metricName must not render empty")
        self.cloudwatch.put_datapoint(
            Datapoint(fields["metricNamespace"], fields["metricName"], value, fields["metricUnit"], stamp_ms)
        )
        await self.cloudwatch.durable()
