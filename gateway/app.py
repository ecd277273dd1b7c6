"""Gateway: builds every part from Config, starts them in order and stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway import auth_setup
from gateway.actions.local import local_sinks
from gateway.actions.remote import RemoteSinks, remote_sinks
from gateway.actions.sinks import ActionSinks
from gateway.api import iot_provisioning  # noqa: F401  (registers the provisioning template operations)
from gateway.api.auth import required_token
from gateway.api.dashboard import Dashboard
from gateway.api.fleet_api import ConnectivityTracker
from gateway.api.front import AwsFront
from gateway.api.greengrass import ClientDevices
from gateway.api.https_publish import HttpsPublish
from gateway.api.jobs_api import build as build_jobs
from gateway.api.live import LiveFeed
from gateway.api.rest import RestDispatcher
from gateway.api.server import ApiServer
from gateway.broker.alpn import alpn_ssl_context, start_alpn
from gateway.broker.core import Broker
from gateway.broker.listeners import Listeners, server_ssl_context
from gateway.clock import Clock, SystemClock
from gateway.composition import open_store, start_mqtt_core
from gateway.config import Config
from gateway.datadir import DataDirLock
from gateway.identity.keystore import ensure_local_ca
from gateway.jobs.service import JobsService
from gateway.messages import Message
from gateway.metrics import Metrics
from gateway.netguard import descriptor_budget, quiet_accept_errors, raise_descriptor_limit
from gateway.provisioning.mqtt_api import ProvisioningMqttApi
from gateway.provisioning.templates import ProvisioningTemplates
from gateway.registry import Registry, RegistryChange
from gateway.registry.fleet_index import FleetIndex
from gateway.registry.jit import JustInTime
from gateway.rules.destinations import TopicRuleDestinations
from gateway.rules.engine import RulesEngine
from gateway.rules.files import RulesFolder
from gateway.rules.service import RulesService
from gateway.shadow.service import ShadowService
from gateway.sinks.cloudwatch import CloudWatchSink
from gateway.sinks.firehose.service import FirehoseService
from gateway.sinks.kinesis.service import KinesisService
from gateway.sinks.lambda_.mappings import EventSourceMappings
from gateway.sinks.lambda_.service import LambdaService
from gateway.sinks.s3 import ObjectStore
from gateway.sinks.sqs.service import SqsService
from gateway.store import Store
from gateway.tasks import Job, Lifecycle, start_tasks

log = logging.getLogger("edgesim")


class Gateway(Lifecycle):
    """`async with Gateway(config) as gw:` runs every listener until the block ends."""

    store: Store
    registry: Registry
    broker: Broker
    shadows: ShadowService
    kinesis: KinesisService
    s3: ObjectStore
    firehose: FirehoseService
    sqs: SqsService
    lambdas: LambdaService
    event_sources: EventSourceMappings
    remote_sinks: RemoteSinks | None = None
    cloudwatch: CloudWatchSink
    destinations: TopicRuleDestinations
    rules_engine: RulesEngine
    rules: RulesService
    listeners: Listeners
    api: ApiServer
    live: LiveFeed
    fleet_index: FleetIndex
    client_devices: ClientDevices
    api_token: str | None = None
    provisioning_templates: ProvisioningTemplates
    provisioning: ProvisioningMqttApi
    jobs: JobsService
    auth: auth_setup.AuthServices
    front: AwsFront

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.ports: dict[str, int] = {}
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self.https: HttpsPublish | None = None

    async def __aenter__(self) -> Gateway:
        if self._started:
            raise RuntimeError("this Gateway is already running")
        self._started = True
        return await super().__aenter__()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        lock = DataDirLock(cfg.data_dir)
        lock.acquire()  # before anything that could touch another gateway's state
        stack.callback(lock.release)
        budget = descriptor_budget(raise_descriptor_limit())
        self.accept_errors = quiet_accept_errors(asyncio.get_running_loop())
        self.local_ca, _ = ensure_local_ca(cfg.certs_dir, hostnames=("localhost", *cfg.server_names))
        self.store = open_store(stack, cfg.db_path)
        dev_policy = cfg.dev_policy_name if cfg.insecure_port is not None else None
        core = start_mqtt_core(stack, cfg, self.store, self.clock, self.local_ca, dev_policy)
        self.registry, self.broker, self.listeners, self.shadows = (
            core.registry,
            core.broker,
            core.listeners,
            core.shadows,
        )
        self.registry.events.publish = self._publish_event
        self.kinesis = KinesisService(self.store, self.clock, cfg.region, cfg.account)
        self.s3 = ObjectStore(cfg.data_dir / "s3")
        self.firehose = FirehoseService(
            self.store, self.s3, self.clock, cfg.region, cfg.account, invoke=self._invoke_for_firehose
        )
        stack.callback(self.firehose.flush_all)  # buffered records are durable anyway; this delivers them before exit
        self.sqs = SqsService(
            self.store, self.clock, cfg.region, cfg.account, cfg.host, lambda: self.ports.get("api", cfg.api_port)
        )
        stack.push_async_callback(self.sqs.moves.close)
        self.lambdas = LambdaService(
            self.store,
            self.clock,
            cfg.region,
            cfg.account,
            cfg.data_dir / "lambda",
            api_endpoint=lambda: f"http://{cfg.host}:{self.ports.get('api', cfg.api_port)}",
            sqs=self.sqs,
        )
        stack.push_async_callback(self.lambdas.stop)
        await self.lambdas.start()
        self.auth = auth_setup.install(self)
        stack.push_async_callback(self.auth.hook.stop)
        self.event_sources = EventSourceMappings(
            self.store, self.clock, self.lambdas, self.kinesis, self.sqs, cfg.region, cfg.account
        )
        stack.push_async_callback(self.event_sources.stop)
        await self.event_sources.start()
        self.cloudwatch = CloudWatchSink(self.store)
        self.destinations = TopicRuleDestinations(
            self.store,
            self.clock,
            cfg.region,
            cfg.account,
            lambda: f"http://{cfg.host}:{self.ports.get('api', cfg.api_port)}",
        )
        stack.push_async_callback(self.destinations.stop)
        self.rules_engine = RulesEngine(self._action_sinks(), self.shadows)
        stack.push_async_callback(self.rules_engine.stop)
        self.rules = RulesService(self.rules_engine, self.store, self.clock, self.registry.arn, self.destinations)
        self.rules.load()
        self.broker.message_hooks.append(self.rules_engine.on_message)
        self.provisioning_templates = ProvisioningTemplates(self.store, self.clock, cfg.region, cfg.account)
        self.registry.jit = JustInTime(self.registry, self.provisioning_templates.template)
        self.provisioning = ProvisioningMqttApi(
            self.broker, self.registry, self.provisioning_templates, self._invoke_for_firehose
        )
        stack.push_async_callback(self.provisioning.close)
        self.jobs = build_jobs(self)
        jobs: dict[str, Job] = {"jobs-scheduler": self.jobs.run}
        if cfg.rules_dir is not None:
            folder = RulesFolder(self.rules, cfg.rules_dir)
            folder.sync()
            jobs["rules-folder-watch"] = folder.watch
        self.metrics = Metrics(self)
        self.live = LiveFeed(self)
        self.api_token = required_token(cfg.host, cfg.api_token)
        self.fleet_index = FleetIndex(self.store, self.registry, ConnectivityTracker(self.broker))
        self.client_devices = ClientDevices(self.store)
        rest = RestDispatcher(self)
        self.front = AwsFront(self, rest.verify_signature)
        self.api = ApiServer(
            cfg.host,
            cfg.api_port,
            self.status,
            rest.handle,
            views={
                "rules/metrics": self.rules.metrics,
                "rules/outcomes": self.rules.outcomes,
                "status": self.status,
                "lambda/logs": self.lambdas.recent_logs,
                "actions/metrics": self.rules_engine.executor.action_metrics,
                "cloudwatch/summary": self.cloudwatch.summary,
                "cloudwatch/logs": lambda: self.cloudwatch.log_events(limit=1000),
                "cloudwatch/metrics": lambda: self.cloudwatch.datapoints(limit=1000),
            },
            metrics=self.metrics.render,
            routes=Dashboard(self, self.live).routes,
            token=self.api_token,
            check_signature=rest.verify_signature if cfg.sigv4_credentials else None,
            front=self.front,
            max_connections=cfg.http.max_connections or max(16, budget // 4),
            header_timeout_s=cfg.http.header_timeout_s,
            body_timeout_s=cfg.http.body_timeout_s,
        )
        stack.push_async_callback(self.api.stop)
        self.ports["api"] = await self.api.start()
        # Started after the API, so it stops first: its closing ends the dashboard's open streams, which the API's
        # shutdown would otherwise wait out.
        self.live.start()
        stack.push_async_callback(self.live.stop)
        self.ssl_context = server_ssl_context(
            str(self.local_ca.server_cert_path), str(self.local_ca.server_key_path), self._trusted_pems()
        )
        # Asks for a client certificate without requiring one: SigV4 and custom-authorizer clients have none.
        self.optional_cert_contexts = [
            alpn_ssl_context(str(self.local_ca.server_cert_path), str(self.local_ca.server_key_path),
                             self._trusted_pems(), alpn=alpn)
            for alpn in (False, True)
        ]  # fmt: skip
        self.registry.subscribe(self._trust_new_anchors)
        # Descriptors: a quarter of the budget for the API port, the rest shared by the MQTT ports.
        mqtt_share = max(16, (budget - budget // 4) // (2 if cfg.insecure_port is not None else 1))
        self.ports["mqtts"] = await self.listeners.start_mqtt(
            "mqtts", cfg.host, cfg.mqtts_port, self.ssl_context, mqtt_share
        )
        if cfg.wss_port is not None:
            self.ports["wss"] = await self.listeners.start_websocket(
                cfg.host, cfg.wss_port, self.optional_cert_contexts[0]
            )
        if cfg.https_port is not None:
            self.https = HttpsPublish(self)
            stack.push_async_callback(self.https.stop)
            self.ports["https"] = await self.https.start(cfg.host, cfg.https_port, self.ssl_context)
        if cfg.insecure_port is not None:
            self.ports["mqtt"] = await self.listeners.start_mqtt("mqtt", cfg.host, cfg.insecure_port, None, mqtt_share)
        if cfg.alpn_port is not None:
            http = self.https.protocol_factory() if self.https is not None else None
            self.ports["alpn"] = await start_alpn(
                self.listeners, cfg.host, cfg.alpn_port, self.optional_cert_contexts[1], http, mqtt_share
            )
        jobs["firehose-buffers"] = self._flush_firehose
        jobs["kinesis-retention"] = self._trim_streams
        jobs["event-loop-lag"] = self.metrics.lag.run
        jobs["registry-watch"] = self._watch_other_writers
        self._tasks = start_tasks(stack, jobs)
        self.api.ready = True

    def _action_sinks(self) -> ActionSinks:
        """Where rule actions deliver: this gateway's own services, or (--sink-backend aws) the real ones. Chosen
        here, once; no action asks again."""
        cfg = self.config
        if cfg.sink_backend == "aws":
            self.remote_sinks = RemoteSinks(cfg.sink_endpoint_url, cfg.region)
            return remote_sinks(
                self.remote_sinks, self.clock, self.sqs, self.cloudwatch, self.broker, self.destinations
            )
        return local_sinks(
            self.clock,
            self.kinesis,
            self.sqs,
            self.lambdas,
            self.firehose,
            self.s3,
            self.cloudwatch,
            self.broker,
            self.destinations,
        )

    def _publish_event(self, topic: str, payload: bytes) -> None:
        """Registry and JITR events: routed like any message, so rules see them as well as subscribers."""
        self.broker.route(Message(topic, payload, 1, received_ms=self.clock.wall_ms(), door="events"))

    def _trusted_pems(self) -> list[str]:
        rows = self.store.query("SELECT pem FROM ca_certificates")
        rows += self.store.query("SELECT pem FROM certificates WHERE ca_id IS NULL")
        return [r["pem"] for r in rows]

    def _trust_new_anchors(self, change: RegistryChange) -> None:
        # OpenSSL's store only grows; removal is enforced by our own status check after the handshake.
        if change.kind in ("ca", "certificate"):
            for pem in self._trusted_pems():
                for ctx in (self.ssl_context, *self.optional_cert_contexts):
                    ctx.load_verify_locations(cadata=pem)

    async def _trim_streams(self) -> None:
        while True:
            await asyncio.sleep(60.0)
            self.kinesis.trim()

    async def _invoke_for_firehose(self, function: str, payload: bytes) -> tuple[bytes, str | None]:
        result = await self.lambdas.invoke(function, payload)
        return result.payload, result.function_error

    async def _flush_firehose(self) -> None:
        """Deliver Firehose buffers whose interval is up (size-triggered flushes happen on put)."""
        while True:
            await asyncio.sleep(0.2)
            try:
                await self.firehose.flush_due_async()
            except Exception:
                log.exception("firehose flush failed; the records stay buffered")

    async def _watch_other_writers(self) -> None:
        """Notice registry changes made by another process (the CLI) on the same database."""
        last = self.store.one("PRAGMA data_version")
        while True:
            await asyncio.sleep(1.0)
            now = self.store.one("PRAGMA data_version")
            if now is not None and last is not None and now[0] != last[0]:
                self.registry.external_change()
            last = now

    def status(self) -> dict[str, Any]:
        return {
            "ports": self.ports,
            "connections": len(self.broker.sessions) if hasattr(self, "broker") else 0,
            "stats": self.broker.counters() if hasattr(self, "broker") else {},
        }
