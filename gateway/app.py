"""Gateway: builds every part from Config, starts them in order and stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.actions.remote import RemoteSinks
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
from gateway.broker.core import Broker
from gateway.broker.listeners import Listeners, server_ssl_context
from gateway.broker.retained import RetainedStore
from gateway.broker.sessions import SessionStore
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.datadir import DataDirLock
from gateway.identity.authorizer import DEV_POLICY_DOCUMENT
from gateway.identity.keystore import ensure_local_ca
from gateway.identity.policy_doc import PolicyDocument
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
from gateway.shadow.document import ShadowLimits
from gateway.shadow.service import ShadowService
from gateway.sinks.cloudwatch import CloudWatchSink
from gateway.sinks.firehose.service import FirehoseService
from gateway.sinks.kinesis.service import KinesisService
from gateway.sinks.lambda_.mappings import EventSourceMappings
from gateway.sinks.lambda_.service import LambdaService
from gateway.sinks.s3 import ObjectStore
from gateway.sinks.sqs.service import SqsService
from gateway.store import Store
from gateway.tasks import Lifecycle, cancel_and_wait

log = logging.getLogger("edgesim")


class Gateway(Lifecycle):
    """`async with Gateway(config) as gw:` runs every listener until the block ends."""

    store: Store
    registry: Registry
    broker: Broker
    shadows: ShadowService
    provisioning_templates: ProvisioningTemplates
    provisioning: ProvisioningMqttApi
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
    https: HttpsPublish
    live: LiveFeed
    fleet_index: FleetIndex
    client_devices: ClientDevices
    jobs: JobsService
    api_token: str | None = None

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.ports: dict[str, int] = {}
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Gateway:
        if self._started:
            raise RuntimeError("this Gateway is already running")
        self._started = True
        return await super().__aenter__()

    async def _start(self) -> None:
        cfg = self.config
        self._lock = DataDirLock(cfg.data_dir)
        self._lock.acquire()  # before anything that could touch another gateway's state
        budget = descriptor_budget(raise_descriptor_limit())
        self.accept_errors = quiet_accept_errors(asyncio.get_running_loop())
        self.local_ca, _ = ensure_local_ca(cfg.certs_dir, hostnames=("localhost", *cfg.server_names))
        self.store = Store(cfg.db_path)
        self.registry = Registry(self.store, self.clock, cfg.region, cfg.account)
        self.registry.local_ca = self.local_ca.root
        self.registry.ensure_ca_registered(self.local_ca.root.cert_pem.decode())
        dev_policy = self._dev_policy() if cfg.insecure_port is not None else None
        self.broker = Broker(
            cfg, self.registry, self.clock, RetainedStore(self.store), dev_policy, SessionStore(self.store)
        )
        self.broker.start()
        self.registry.events.publish = self._publish_event
        self.shadows = ShadowService(self.store, self.broker, self.clock, ShadowLimits())
        self.kinesis = KinesisService(self.store, self.clock, cfg.region, cfg.account)
        self.s3 = ObjectStore(cfg.data_dir / "s3")
        self.firehose = FirehoseService(
            self.store, self.s3, self.clock, cfg.region, cfg.account, invoke=self._invoke_for_firehose
        )
        self._tasks.append(asyncio.create_task(self._flush_firehose(), name="firehose-buffers"))
        self.sqs = SqsService(
            self.store, self.clock, cfg.region, cfg.account, cfg.host, lambda: self.ports.get("api", cfg.api_port)
        )
        self._tasks.append(asyncio.create_task(self._trim_streams(), name="kinesis-retention"))
        self.lambdas = LambdaService(
            self.store,
            self.clock,
            cfg.region,
            cfg.account,
            cfg.data_dir / "lambda",
            api_endpoint=lambda: f"http://{cfg.host}:{self.ports.get('api', cfg.api_port)}",
            sqs=self.sqs,
        )
        await self.lambdas.start()
        self.event_sources = EventSourceMappings(self)
        await self.event_sources.start()
        self.remote_sinks = RemoteSinks(cfg.sink_endpoint_url, cfg.region) if cfg.sink_backend == "aws" else None
        self.cloudwatch = CloudWatchSink(self.store)
        self.destinations = TopicRuleDestinations(
            self.store,
            self.clock,
            cfg.region,
            cfg.account,
            lambda: f"http://{cfg.host}:{self.ports.get('api', cfg.api_port)}",
        )
        self.rules_engine = RulesEngine(self)
        self.rules = RulesService(self, self.rules_engine)
        self.rules.load()
        self.broker.message_hooks.append(self.rules_engine.on_message)
        self.provisioning_templates = ProvisioningTemplates(self.store, self.clock, cfg.region, cfg.account)
        self.registry.jit = JustInTime(self.registry, self.provisioning_templates.template)
        self.provisioning = ProvisioningMqttApi(
            self.broker, self.registry, self.provisioning_templates, self._invoke_for_firehose
        )
        self.jobs = build_jobs(self)
        self._tasks.append(asyncio.create_task(self.jobs.run(), name="jobs-scheduler"))
        if cfg.rules_dir is not None:
            folder = RulesFolder(self.rules, cfg.rules_dir)
            folder.sync()
            self._tasks.append(asyncio.create_task(folder.watch(), name="rules-folder-watch"))
        self.listeners = Listeners(self.broker)
        self.metrics = Metrics(self)
        self._tasks.append(asyncio.create_task(self.metrics.lag.run(), name="event-loop-lag"))
        self.live = LiveFeed(self)
        self.live.start()
        self.api_token = required_token(cfg.host, cfg.api_token)
        self.fleet_index = FleetIndex(self.store, self.registry, ConnectivityTracker(self))
        self.client_devices = ClientDevices(self.store)
        rest = RestDispatcher(self)
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
            front=AwsFront(self, rest.verify_signature),
            max_connections=cfg.http.max_connections or max(16, budget // 4),
            header_timeout_s=cfg.http.header_timeout_s,
            body_timeout_s=cfg.http.body_timeout_s,
        )
        self.ports["api"] = await self.api.start()
        self.ssl_context = server_ssl_context(
            str(self.local_ca.server_cert_path), str(self.local_ca.server_key_path), self._trusted_pems()
        )
        self.registry.subscribe(self._trust_new_anchors)
        # Descriptors: a quarter of the budget for the API port, the rest shared by the MQTT ports.
        mqtt_share = max(16, (budget - budget // 4) // (2 if cfg.insecure_port is not None else 1))
        self.ports["mqtts"] = await self.listeners.start_mqtt(
            "mqtts", cfg.host, cfg.mqtts_port, self.ssl_context, mqtt_share
        )
        if cfg.wss_port is not None:
            self.ports["wss"] = await self.listeners.start_websocket(cfg.host, cfg.wss_port, self.ssl_context)
        if cfg.https_port is not None:
            self.https = HttpsPublish(self)
            self.ports["https"] = await self.https.start(cfg.host, cfg.https_port, self.ssl_context)
        if cfg.insecure_port is not None:
            self.ports["mqtt"] = await self.listeners.start_mqtt("mqtt", cfg.host, cfg.insecure_port, None, mqtt_share)
        self._tasks.append(asyncio.create_task(self._watch_other_writers(), name="registry-watch"))
        self.api.ready = True

    async def _stop(self) -> None:
        await cancel_and_wait(self._tasks)
        if hasattr(self, "provisioning"):
            await self.provisioning.close()
        if hasattr(self, "live"):
            await self.live.stop()
        if hasattr(self, "rules_engine"):
            await self.rules_engine.stop()
        if hasattr(self, "destinations"):
            await self.destinations.stop()
        if hasattr(self, "event_sources"):
            await self.event_sources.stop()
        if hasattr(self, "lambdas"):
            await self.lambdas.stop()
        if hasattr(self, "sqs"):
            await self.sqs.moves.close()
        if hasattr(self, "broker"):
            await self.broker.stop()
        if hasattr(self, "listeners"):
            await self.listeners.stop()
        if hasattr(self, "https"):
            await self.https.stop()
        if hasattr(self, "api"):
            await self.api.stop()
        if hasattr(self, "firehose"):
            self.firehose.flush_all()  # buffered records are durable anyway; this just delivers them before exit
        if hasattr(self, "store"):
            self.store.close()
        if hasattr(self, "_lock"):
            self._lock.release()

    def _dev_policy(self) -> PolicyDocument:
        return self.registry.ensure_policy(self.config.dev_policy_name, DEV_POLICY_DOCUMENT)

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
                self.ssl_context.load_verify_locations(cadata=pem)

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
