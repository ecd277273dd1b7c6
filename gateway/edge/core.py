"""The edge core process: a local broker for nearby devices with local shadows, components, the MQTT bridge, the
durable spool towards the cloud, and shadow sync — all working whether or not the cloud link is up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.server import ApiServer
from gateway.broker.exceptions import PublishRefused
from gateway.broker.listeners import server_ssl_context
from gateway.clock import Clock, SystemClock
from gateway.composition import open_store, start_mqtt_core
from gateway.config import Config, MqttLimits
from gateway.edge.bridge import EDGE_DOOR, Bridge, BridgeTargets, LocalPubSub
from gateway.edge.client_devices import ClientDeviceAuth
from gateway.edge.cloud import CloudLink
from gateway.edge.components import ComponentRunner
from gateway.edge.config import EdgeConfig
from gateway.edge.forwarder import Forwarder
from gateway.edge.identity import CoreCredentials, provision_core
from gateway.edge.spool import Spool, SpoolPolicy, import_legacy_spool
from gateway.edge.status import (
    ComponentFigures,
    CoreFigures,
    SpoolFigures,
    StatusSchedule,
    SyncFigures,
    Trigger,
    component_status,
    fleet_status,
    health_signature,
    host_info,
    overall_status,
    status_topic,
)
from gateway.edge.sync import ShadowSyncer
from gateway.errors import AwsError, ConfigError, InvalidRequestException, LimitExceededException
from gateway.identity.keystore import LocalCA, ensure_local_ca
from gateway.messages import AckHold, Message
from gateway.shadow.topics import is_valid_thing_name
from gateway.tasks import Job, Lifecycle, start_tasks
from gateway.topics import TopicTrie
from mqttwire import properties as mp
from mqttwire.client import Message as CloudMessage
from mqttwire.packets import V5, V311

log = logging.getLogger("edgesim.edge")

LOCAL_DEVICES_POLICY = "edgesim-edge-local-devices"
STATUS_FILE = "edge.json"


def parse_target(url: str) -> tuple[str, int]:
    scheme, sep, rest = url.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme != "mqtts" or not sep or not host or not port.isdigit():
        raise ConfigError(f"cloud target {url!r}: expected mqtts://host:port")
    return host.strip("[]"), int(port)


class EdgeCore(Lifecycle):
    """`async with EdgeCore(...) as core:` runs the core until the block ends."""

    def __init__(self, name: str, config: EdgeConfig, home: Path, certs_dir: Path, clock: Clock | None = None) -> None:
        self.name = name
        self.thing_name = config.thing_name or name
        self.config = config
        self.home = home
        self.certs_dir = certs_dir
        self.clock = clock or SystemClock()
        self.ports: dict[str, int] = {}
        self.local_triggers: TopicTrie[ComponentRunner] = TopicTrie()
        self.cloud_triggers: TopicTrie[ComponentRunner] = TopicTrie()
        self.components: dict[str, ComponentRunner] = {}
        self.bridge_rejected = 0
        self.local_ca: LocalCA | None = None  # with local_broker.tls_port: the CA of the local devices' certificates
        self._committed: asyncio.Future[None] | None = None  # the spool's open group write
        self._acknowledging: Message | None = None  # the local PUBLISH the bridge is forwarding right now
        self._tasks: list[asyncio.Task[None]] = []
        self.host = host_info()
        self.status_schedule = StatusSchedule(config.fleet_status.interval_s)
        self.status_sent_ms: int | None = None
        self._health_changed = asyncio.Event()  # wakes the fleet status reporter

    # ---- start and stop

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = open_store(stack, self.home / "edge.db")
        row = self.store.one("SELECT sequence FROM edge_fleet_status WHERE id = 1")
        self.status_schedule.sequence = int(row["sequence"]) if row is not None else 0
        import_legacy_spool(self.store, self.home / "spool.db")
        self.spool = Spool(self.store, SpoolPolicy(**cfg.spooler.model_dump()))
        stack.callback(self.spool.close)
        creds = await asyncio.to_thread(self._credentials)
        await self._start_local(stack)
        host, port = parse_target(cfg.cloud.target)
        self.cloud = CloudLink(
            self.thing_name,
            host,
            port,
            self._cloud_tls(creds),
            keepalive=cfg.cloud.keepalive,
            on_message=self._on_cloud_message,
            on_state=self._on_cloud_state,
            protocol=V5 if cfg.cloud.protocol == "mqtt5" else V311,
        )
        self.forwarder = Forwarder(self.spool, self.cloud, cfg.cloud.max_in_flight)
        stack.callback(self.forwarder.link_down)
        stack.push_async_callback(self.cloud.close)
        self.syncer = ShadowSyncer(cfg.shadow_sync(), self.thing_name, self.shadows, self.cloud, self.store, self.clock)
        self.pubsub = LocalPubSub()
        self.bridge = Bridge(
            cfg.mqtt_topic_mapping, BridgeTargets(self._to_local_mqtt, self.pubsub.publish, self._bridge_to_cloud)
        )
        for topic_filter in self.bridge.filters("Pubsub"):
            self.pubsub.subscribe(topic_filter, self.bridge.from_pubsub)
        await self._start_components(stack)
        filters = [*self.bridge.filters("IotCore"), *self.cloud_triggers.filters(), *self.syncer.cloud_filters()]
        self.cloud.filters = dict.fromkeys(filters, 1)
        self.broker.message_hooks.append(self._on_local_message)
        jobs: dict[str, Job] = {
            "edge-cloud-link": self.cloud.run,
            "edge-spool-forwarder": self.forwarder.run,
            "edge-shadow-sync": self.syncer.run,
            "edge-fleet-status": self._report_status,
        }
        if self.local_ca is not None:
            self.client_devices = ClientDeviceAuth(
                self.thing_name,
                cfg.cloud.endpoint,
                self.registry,
                LOCAL_DEVICES_POLICY,
                self.local_ca.root.cert_pem.decode(),
                cfg.local_broker.host,
                self.ports["local_mqtts"],
            )
            jobs["edge-client-devices"] = self.client_devices.run
        self._tasks = start_tasks(stack, jobs)
        await self._start_control(stack)
        log.info("edge core %s: local mqtt %s, cloud %s", self.name, self.ports, cfg.cloud.target)

    def _credentials(self) -> CoreCredentials:
        folder = self.certs_dir / "edge" / self.name
        try:
            return provision_core(self.config.cloud.endpoint, self.thing_name, folder)
        except Exception as exc:
            cached = CoreCredentials(
                self.thing_name, folder / f"{self.thing_name}.cert.pem", folder / f"{self.thing_name}.private.key"
            )
            if cached.cert.exists() and cached.key.exists():
                log.warning("gateway API unreachable (%s): using the cached certificate, starting offline", exc)
                return cached
            raise ConfigError(
                f"cannot provision edge core {self.thing_name!r} through {self.config.cloud.endpoint} ({exc}); "
                "start the gateway first (edgesim up) or point --endpoint at it"
            ) from None

    def _cloud_tls(self, creds: CoreCredentials) -> ssl.SSLContext:
        ca = self.config.cloud.ca or self.certs_dir / "root-ca.pem"
        if not ca.exists():
            raise ConfigError(f"CA file {ca} not found: pass --ca (the gateway's root-ca.pem)")
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(creds.cert), str(creds.key))
        return context

    async def _start_local(self, stack: contextlib.AsyncExitStack) -> None:
        local = self.config.local_broker
        gateway_config = Config(
            host=local.host,
            mqtts_port=local.tls_port or 0,
            insecure_port=local.port,
            data_dir=self.home,
            certs_dir=self.home / "certs",
            dev_policy_name=LOCAL_DEVICES_POLICY,
            mqtt=MqttLimits(publishes_per_second=0),
        )
        if local.tls_port is not None:
            self.local_ca = ensure_local_ca(self.home / "certs")[0]
        core = start_mqtt_core(stack, gateway_config, self.store, self.clock, self.local_ca, LOCAL_DEVICES_POLICY)
        self.registry, self.broker, self.listeners = core.registry, core.broker, core.listeners
        self.shadows = core.shadows
        self.ports["local_mqtt"] = await self.listeners.start_mqtt("mqtt", local.host, local.port, None)
        if local.tls_port is not None and self.local_ca is not None:
            ca = self.local_ca
            # Client devices associated in the cloud present certificates from the cloud's CA (client device auth).
            cloud_ca = self.config.cloud.ca or self.certs_dir / "root-ca.pem"
            trusted = [ca.root.cert_pem.decode(), *([cloud_ca.read_text()] if cloud_ca.exists() else [])]
            context = server_ssl_context(str(ca.server_cert_path), str(ca.server_key_path), trusted)
            self.ports["local_mqtts"] = await self.listeners.start_mqtt("mqtts", local.host, local.tls_port, context)

    async def _start_components(self, stack: contextlib.AsyncExitStack) -> None:
        code_dir = self.config.components_dir
        for component in self.config.components:
            assert code_dir is not None
            runner = ComponentRunner(component, code_dir, EdgeOpsForCore(self), self._health_changed.set)
            self.components[component.name] = runner
            for source in component.event_sources:
                if source.type == "PUB_SUB":
                    self.pubsub.subscribe(source.topic, _submitter(runner))
                elif source.type == "IOT_CORE":
                    self.cloud_triggers.add(source.topic, runner)
                else:
                    self.local_triggers.add(source.topic, runner)
            stack.push_async_callback(runner.stop)
            await runner.start()

    async def _start_control(self, stack: contextlib.AsyncExitStack) -> None:
        self.control = ApiServer("127.0.0.1", 0, self.status, self._control, views={"status": self.status})
        stack.push_async_callback(self.control.stop)
        self.ports["control"] = await self.control.start()
        self.control.ready = True
        record = {"name": self.name, "pid": os.getpid(), "ports": self.ports, "thing": self.thing_name}
        tmp = self.home / f"{STATUS_FILE}.tmp"
        tmp.write_text(json.dumps(record))
        stack.callback((self.home / STATUS_FILE).unlink, missing_ok=True)
        tmp.replace(self.home / STATUS_FILE)

    # ---- control

    async def _control(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and parts == ["offline"]:
            self.cloud.go_offline()
        elif request.method == "POST" and parts == ["online"]:
            self.cloud.go_online()
        elif request.method == "POST" and len(parts) == 3 and parts[0] == "devices" and parts[2] == "certificate":
            try:
                return web.json_response(self.issue_device_certificate(parts[1]))
            except AwsError as exc:
                return web.json_response({"code": exc.code, "message": exc.message}, status=exc.http_status)
        else:
            return web.json_response({"message": f"no such control: {request.method} {request.path}"}, status=404)
        return web.json_response(self.status())

    def issue_device_certificate(self, thing: str) -> dict[str, str]:
        """A certificate from the core's own CA for a local device on the mTLS listener, attached to `thing`."""
        if self.local_ca is None:
            raise InvalidRequestException("the local broker has no mutual-TLS listener: set local_broker.tls_port")
        if not is_valid_thing_name(thing):
            raise InvalidRequestException(f"Invalid thing name: {thing!r}")
        if not self.registry.thing_exists(thing):
            self.registry.create_thing(thing)
        created = self.registry.create_keys_and_certificate(set_as_active=True)
        self.registry.attach_policy(LOCAL_DEVICES_POLICY, created["certificateArn"])
        self.registry.attach_thing_principal(thing, created["certificateArn"])
        return {
            "thingName": thing,
            "certificateArn": created["certificateArn"],
            "certificatePem": created["certificatePem"],
            "privateKey": created["keyPair"]["PrivateKey"],
            "caPem": self.local_ca.root.cert_pem.decode(),
        }

    def status(self) -> dict[str, Any]:
        stats = self.spool.stats
        figures = self.figures()
        statuses = {c.name: component_status(c) for c in figures.components}
        schedule = self.status_schedule
        return {
            "name": self.name,
            "thing": self.thing_name,
            "ports": self.ports,
            "cloud": {
                "online": self.cloud.online,
                "wanted": self.cloud.wanted,
                "connects": self.cloud.connects,
                "last_error": self.cloud.last_error,
                "protocol": self.config.cloud.protocol,
                "refused": self.forwarder.refused,
            },
            "spool": {
                "depth": self.spool.depth,
                "bytes": self.spool.size_bytes,
                "max_bytes": self.spool.policy.max_size_bytes,
                "in_flight": len(self.spool.in_flight),
                "appended": stats.appended,
                "rejected": stats.rejected,
                "evicted": stats.evicted,
                "delivered": self.forwarder.delivered,
            },
            "local": {"connections": len(self.broker.sessions), "messages_in": self.broker.counters()["messages_in"]},
            "shadow_sync": {
                **self.syncer.status(),
                "pending": figures.shadow_sync.pending,
                "last_sync_ms": figures.shadow_sync.last_sync_ms,
            },
            "components": {
                name: {**runner.stats, "status": statuses[name]} for name, runner in self.components.items()
            },
            "bridge": {"forwarded": dict(self.bridge.forwarded), "rejected": self.bridge_rejected},
            "fleet_status": {
                "topic": status_topic(self.thing_name),
                "interval_s": schedule.interval_s,
                "overallDeviceStatus": overall_status(statuses.values()),
                "sequenceNumber": schedule.sequence,
                "last_trigger": schedule.last_trigger,
                "last_sent_ms": self.status_sent_ms,
            },
        }

    # ---- fleet status (the pure parts are in gateway.edge.status)

    def figures(self) -> CoreFigures:
        return CoreFigures(
            thing=self.thing_name,
            components=tuple(_component_figures(name, runner) for name, runner in self.components.items()),
            spool=SpoolFigures(self.spool.depth, self.spool.size_bytes, self.spool.policy.max_size_bytes),
            shadow_sync=SyncFigures(len(self.syncer.pairs), self.syncer.pending, self.syncer.last_sync_ms),
            bridge={"forwarded": dict(self.bridge.forwarded), "rejected": self.bridge_rejected},
        )

    async def _report_status(self) -> None:
        schedule = self.status_schedule
        while True:
            self._health_changed.clear()
            schedule.observe(health_signature(self.figures()))
            trigger, wait = schedule.due(self.clock.monotonic())
            if trigger is not None:
                self._publish_status(trigger)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_changed.wait(), wait)

    def _publish_status(self, trigger: Trigger) -> None:
        """QoS 0 straight on the link, never spooled; if the link just dropped, this report is simply lost."""
        figures = self.figures()
        sequence = self.status_schedule.sent(self.clock.monotonic(), trigger)
        now_ms = self.clock.wall_ms()
        payload = fleet_status(figures, self.host, sequence=sequence, timestamp_ms=now_ms, trigger=trigger)

        def done(error: Exception | None) -> None:
            if error is None:
                self.status_sent_ms = now_ms
            else:
                log.debug("fleet status #%d not sent: %s", sequence, error)

        self.cloud.send(status_topic(self.thing_name), json.dumps(payload).encode(), 0, done)
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO edge_fleet_status(id, sequence) VALUES (1, ?)", (sequence,))

    # ---- message flows

    def _on_local_message(self, message: Message) -> None:
        if message.door != EDGE_DOOR:
            self._acknowledging = message
            try:
                self.bridge.from_local_mqtt(message.topic, message.payload, message.qos, message.properties)
            finally:
                self._acknowledging = None
        for runner in self.local_triggers.match(message.topic):
            runner.submit(message.topic, message.payload)
        if message.door == "shadow":
            self.syncer.on_local_message(message)

    def _on_cloud_message(self, message: CloudMessage) -> None:
        if message.topic.startswith("$aws/things/"):
            self.syncer.on_cloud_message(Message(message.topic, message.payload, message.qos, door="cloud"))
        self.bridge.from_iot_core(message.topic, message.payload, message.qos, message.properties)
        for runner in self.cloud_triggers.match(message.topic):
            runner.submit(message.topic, message.payload)

    def _on_cloud_state(self, online: bool) -> None:
        log.info("edge core %s: cloud link %s", self.name, "online" if online else "offline")
        self.syncer.on_state(online)
        self.status_schedule.link(online)
        self._health_changed.set()
        if online:
            self.forwarder.wake()
        else:
            self.forwarder.link_down()

    def _to_local_mqtt(self, topic: str, payload: bytes, qos: int, properties: mp.Properties | None = None) -> None:
        """The bridge's and components' messages enter the local broker by its one intake, like any door's; a bridged
        MQTT 5 message keeps its properties (a copy: the bridge may hand the same ones to several mappings)."""
        props = dict(properties) if properties else None
        try:
            self.broker.intake.admit(topic, payload, min(qos, 1), False, props, door=EDGE_DOOR)
        except PublishRefused as refusal:
            log.warning("edge core %s: not delivered locally on %s: %s", self.name, topic, refusal.message)

    def to_cloud(
        self, topic: str, payload: bytes, qos: int, properties: mp.Properties | None = None
    ) -> asyncio.Future[None]:
        """Spool a cloud-bound message: LimitExceededException if refused, else a future done once it is committed.
        Appends of one loop turn share a commit (one fsync), so whoever acknowledges them waits for that future."""
        block = mp.encode_properties(properties) if properties else None
        result, committed = self.spool.append_soon(topic, payload, qos, self.clock.wall_ms(), self.cloud.online, block)
        if not result.accepted or committed is None:
            raise LimitExceededException(result.reason or "the spool refused the message")
        if committed is not self._committed:  # the first append of this group write: wake the drain once it is in
            self._committed = committed
            committed.add_done_callback(self._spool_committed)
        return committed

    def _spool_committed(self, committed: asyncio.Future[None]) -> None:
        if self._committed is committed:
            self._committed = None
        if committed.cancelled() or committed.exception() is not None:
            log.error("spool commit failed: the messages of this group are not acknowledged: %s", committed.exception())
            return
        self.forwarder.wake()

    def _bridge_to_cloud(self, topic: str, payload: bytes, qos: int, properties: mp.Properties | None = None) -> None:
        message = self._acknowledging
        try:
            committed = self.to_cloud(topic, payload, qos, properties)
        except LimitExceededException as exc:
            self.bridge_rejected += 1
            log.warning("bridge: %s dropped: %s", topic, exc.message)
            return
        except sqlite3.Error as exc:  # not spooled: the device must not be told it was
            self.bridge_rejected += 1
            log.error("bridge: %s could not be spooled: %s", topic, exc)
            if message is not None and message.acknowledged:
                if message.hold is None:
                    message.hold = AckHold()
                message.hold.take()
                message.hold.fail()
            return
        if message is not None and message.acknowledged:
            # The device's PUBACK waits for the commit (the broker holds it, in PUBLISH order).
            if message.hold is None:
                message.hold = AckHold()
            hold = message.hold
            hold.take()
            committed.add_done_callback(functools.partial(_release_after_commit, hold))


def _release_after_commit(hold: AckHold, committed: asyncio.Future[None]) -> None:
    if committed.cancelled() or committed.exception() is not None:  # logged by _spool_committed
        hold.fail()
    else:
        hold.release()


def _component_figures(name: str, runner: ComponentRunner) -> ComponentFigures:
    stats = runner.stats
    restarts, last_error = stats["restarts"], stats["last_error"]
    return ComponentFigures(
        name,
        runner.config.version,
        runner.phase,
        runner.consecutive_crashes,
        restarts if isinstance(restarts, int) else 0,
        str(last_error) if last_error else None,
    )


def _submitter(runner: ComponentRunner) -> Callable[[str, bytes], None]:
    def submit(topic: str, payload: bytes) -> None:
        runner.submit(topic, payload)

    return submit


class EdgeOpsForCore:
    """What a component may ask of the core (gateway.edge.components.EdgeOps)."""

    def __init__(self, core: EdgeCore) -> None:
        self.core = core

    async def publish(self, topic: str, payload: bytes) -> None:
        self.core.pubsub.publish(topic, payload)

    async def publish_to_iot_core(self, topic: str, payload: bytes, qos: int) -> None:
        await asyncio.shield(self.core.to_cloud(topic, payload, qos))  # shared by the group: never cancel it

    async def get_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        return self.core.shadows.get_thing_shadow(thing, shadow)

    async def update_thing_shadow(self, thing: str, shadow: str | None, payload: bytes) -> bytes:
        return self.core.shadows.update_thing_shadow(thing, shadow, payload)

    async def delete_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        deleted = self.core.shadows.delete_thing_shadow(thing, shadow)
        self.core.syncer.local_deleted(thing, shadow)
        return deleted
