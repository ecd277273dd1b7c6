"""GET /metrics: the gateway's own counters in the Prometheus text format, read at scrape time (nothing is counted
twice on the message path), plus the event loop's lag."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.jobs.metrics import jobs_metrics

if TYPE_CHECKING:
    from gateway.api.live import LiveFeed
    from gateway.broker.core import Broker
    from gateway.clock import Clock
    from gateway.rules.engine import RulesEngine
    from gateway.rules.service import RulesService
    from gateway.shadow.service import ShadowService
    from gateway.sinks.cloudwatch import CloudWatchSink
    from gateway.sinks.kinesis.service import KinesisService
    from gateway.sinks.lambda_.service import LambdaService
    from gateway.sinks.sqs.service import SqsService
    from gateway.store import Store

LAG_INTERVAL_S = 0.5


class MetricSources(Protocol):
    """The parts whose counters /metrics reads at scrape time."""

    clock: Clock
    store: Store
    broker: Broker
    shadows: ShadowService
    rules: RulesService
    rules_engine: RulesEngine
    sqs: SqsService
    lambdas: LambdaService
    kinesis: KinesisService
    cloudwatch: CloudWatchSink
    live: LiveFeed


class LoopLag:
    """How late a timer fires: the event loop's lag, the first sign of a saturated gateway."""

    def __init__(self) -> None:
        self.last_s = 0.0
        self.max_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            self.last_s = max(0.0, loop.time() - due)
            self.max_s = max(self.max_s, self.last_s)


class GatewayCollector(Collector):
    def __init__(self, gateway: MetricSources, lag: LoopLag) -> None:
        self.gw = gateway
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        yield from self._broker()
        yield from self._shadows()
        yield from self._rules()
        yield from self._sinks()
        yield from self._cloudwatch()
        yield from self._edge()
        if hasattr(self.gw, "jobs"):
            yield from jobs_metrics(self.gw.store, self.gw.jobs.mqtt)
        yield GaugeMetricFamily("edgesim_event_loop_lag_seconds", "How late the last timer fired", self.lag.last_s)
        yield GaugeMetricFamily("edgesim_event_loop_lag_max_seconds", "The largest lag seen", self.lag.max_s)

    def _broker(self) -> Iterator[Metric]:
        broker = self.gw.broker
        stats = broker.stats
        yield GaugeMetricFamily("edgesim_mqtt_connections", "Connected MQTT clients", len(broker.sessions))
        yield GaugeMetricFamily(
            "edgesim_mqtt_persistent_sessions_offline", "Persistent sessions whose client is away", len(broker.parked)
        )
        yield CounterMetricFamily("edgesim_mqtt_connects", "Accepted MQTT CONNECTs", stats["connects"])
        denials = CounterMetricFamily("edgesim_policy_denials", "Requests a policy refused", labels=["action"])
        for action, count in sorted(broker.denials.items()):
            denials.add_metric([action], count)
        yield denials
        messages = CounterMetricFamily("edgesim_mqtt_messages", "Messages routed in and delivered out", labels=["way"])
        messages.add_metric(["in"], broker.counters()["messages_in"])
        messages.add_metric(["out"], stats["messages_out"])
        yield messages
        by_door = CounterMetricFamily(
            "edgesim_messages_in", "Messages routed, by the door they came in by and QoS", labels=["door", "qos"]
        )
        for door, counts in sorted(broker.in_by_door.items()):
            by_door.add_metric([door, "0"], counts[0])
            by_door.add_metric([door, "1"], counts[1])
        yield by_door
        out = CounterMetricFamily("edgesim_messages_out", "Messages delivered to subscribers, by QoS", labels=["qos"])
        out.add_metric(["0"], stats["messages_out"] - broker.out_qos1)
        out.add_metric(["1"], broker.out_qos1)
        yield out
        dropped = CounterMetricFamily(
            "edgesim_mqtt_dropped_messages", "Deliveries dropped for slow or full subscribers", labels=["qos"]
        )
        dropped.add_metric(["0"], stats["dropped_qos0"])
        dropped.add_metric(["1"], stats["dropped_qos1"])
        yield dropped

    def _shadows(self) -> Iterator[Metric]:
        stats = self.gw.shadows.stats
        ops = CounterMetricFamily("edgesim_shadow_operations", "Shadow requests served", labels=["operation"])
        for operation, key in (("update", "updates"), ("get", "gets"), ("delete", "deletes")):
            ops.add_metric([operation], stats[key])
        yield ops
        rejections = CounterMetricFamily("edgesim_shadow_rejections", "Shadow requests rejected", labels=["code"])
        for code, count in sorted(self.gw.shadows.rejections.items()):
            rejections.add_metric([str(code)], count)
        yield rejections

    def _rules(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(f"edgesim_rule_{name}", help_text, labels=["rule"])
            for name, help_text in (
                ("matched", "Messages whose topic and WHERE matched the rule"),
                ("fired", "Times the rule's actions ran"),
                ("action_successes", "Rule actions that succeeded"),
                ("action_failures", "Rule actions that failed"),
                ("error_actions", "Times the errorAction ran"),
            )
        }
        for rule, figures in self.gw.rules.metrics().items():
            families["matched"].add_metric([rule], figures["matched"])
            families["fired"].add_metric([rule], figures["fired"])
            families["action_successes"].add_metric([rule], figures["action_success"])
            families["action_failures"].add_metric([rule], figures["action_failure"])
            families["error_actions"].add_metric([rule], figures["error_actions"])
        yield from families.values()
        runs = CounterMetricFamily(
            "edgesim_action_runs", "Rule action runs by type and outcome", labels=["type", "outcome"]
        )
        mean = GaugeMetricFamily("edgesim_action_mean_seconds", "Mean rule action latency", labels=["type"])
        queued = GaugeMetricFamily("edgesim_action_queued", "Rule actions waiting for a worker", labels=["type"])
        for kind, figures in self.gw.rules_engine.executor.action_metrics().items():
            runs.add_metric([kind, "success"], figures["success"])
            runs.add_metric([kind, "failure"], figures["failure"])
            mean.add_metric([kind], figures["mean_ms"] / 1000)
            queued.add_metric([kind], figures["queued"])
        yield from (runs, mean, queued)

    def _sinks(self) -> Iterator[Metric]:
        now = self.gw.clock.wall_ms()
        depth = GaugeMetricFamily(
            "edgesim_sqs_messages", "Messages in each SQS queue by state", labels=["queue", "state"]
        )
        for name, queue in self.gw.sqs.queues.items():
            counts = queue.counts(now=now)
            depth.add_metric([name, "visible"], counts["ApproximateNumberOfMessages"])
            depth.add_metric([name, "in_flight"], counts["ApproximateNumberOfMessagesNotVisible"])
            depth.add_metric([name, "delayed"], counts["ApproximateNumberOfMessagesDelayed"])
        yield depth
        invocations = CounterMetricFamily("edgesim_lambda_invocations", "Lambda invocations", labels=["function"])
        errors = CounterMetricFamily("edgesim_lambda_errors", "Lambda invocations that failed", labels=["function"])
        duration = CounterMetricFamily(
            "edgesim_lambda_duration_seconds", "Time spent in Lambda invocations", labels=["function"]
        )
        for function, figures in self.gw.lambdas.stats.items():
            invocations.add_metric([function], figures["invocations"])
            errors.add_metric([function], figures["errors"])
            duration.add_metric([function], figures.get("duration_us", 0) / 1e6)
        yield from (invocations, errors, duration)
        kinesis = self.gw.kinesis
        shards = GaugeMetricFamily("edgesim_kinesis_open_shards", "Open shards per stream", labels=["stream"])
        records = CounterMetricFamily("edgesim_kinesis_records", "Records written per stream", labels=["stream"])
        throttles = CounterMetricFamily(
            "edgesim_kinesis_throttles", "Writes refused by the per-shard quota", labels=["stream"]
        )
        for name, stream in kinesis.streams.items():
            shards.add_metric([name], len(stream.shards.open_shards))
            records.add_metric([name], stream.records_written)
            throttles.add_metric([name], kinesis.throttles.get(name, 0))
        yield from (shards, records, throttles)

    def _cloudwatch(self) -> Iterator[Metric]:
        """What the cloudwatchMetric and cloudwatchLogs rule actions recorded: the latest value of each metric."""
        cloudwatch = self.gw.cloudwatch
        latest = GaugeMetricFamily(
            "edgesim_cloudwatch_metric",
            "Latest value each cloudwatchMetric rule action recorded",
            labels=["namespace", "metric", "unit"],
        )
        for (namespace, name, unit), value in cloudwatch.latest.items():
            latest.add_metric([namespace, name, unit], value)
        yield latest
        yield CounterMetricFamily(
            "edgesim_cloudwatch_datapoints", "Datapoints recorded by cloudwatchMetric", cloudwatch.totals["datapoints"]
        )
        yield CounterMetricFamily(
            "edgesim_cloudwatch_log_events", "Log events recorded by cloudwatchLogs", cloudwatch.totals["log_events"]
        )

    def _edge(self) -> Iterator[Metric]:
        online = GaugeMetricFamily("edgesim_edge_core_online", "Edge cores connected to the gateway", labels=["core"])
        spool = GaugeMetricFamily(
            "edgesim_edge_spool_messages", "Messages an edge core holds for the cloud (last report)", labels=["core"]
        )
        spool_bytes = GaugeMetricFamily(
            "edgesim_edge_spool_bytes", "Bytes an edge core holds for the cloud (last report)", labels=["core"]
        )
        for core in self.gw.live.edge()["cores"]:
            online.add_metric([core["name"]], 1.0 if core["online"] else 0.0)
            if core["spool"]:
                spool.add_metric([core["name"]], core["spool"].get("messages", 0))
                spool_bytes.add_metric([core["name"]], core["spool"].get("bytes", 0))
        yield from (online, spool, spool_bytes)


class Metrics:
    """One registry per gateway: several gateways in one process (tests) keep their own figures."""

    def __init__(self, gateway: MetricSources) -> None:
        self.lag = LoopLag()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(gateway, self.lag))

    def render(self) -> bytes:
        return generate_latest(self.registry)
