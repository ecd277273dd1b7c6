"""One simulated device: connect through the fleet's ramp, report its shadow, publish paced telemetry, answer deltas
and commands, and act out its faults."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from devices.behaviour import FaultPlan, reported_for_delta, shadow_prefix, spoil
from devices.claim import ClaimRefused, DeviceClaim, provision_by_claim, store_identity
from devices.connect_errors import CAUSE_PREFIX, connect_cause
from devices.figures import Figures
from devices.job_agent import Downloader, JobAgent
from devices.payload import PayloadBuilder
from devices.properties import TelemetryProperties
from devices.spec import DeviceSpec
from devices.template import TemplateError
from mqttwire.client import MAX_INFLIGHT, AsyncMqttClient, ConnectError, Message, MqttError

log = logging.getLogger("edgesim.devices")

MAX_BACKOFF_S = 30.0
DRAIN_TIMEOUT_S = 5.0
MAX_BURST = 32  # overdue ticks a device catches up on in one loop turn
DEVICE_WINDOW = min(2 * MAX_BURST, MAX_INFLIGHT)  # unacknowledged publishes a device behind schedule allows itself


@dataclass(frozen=True)
class Target:
    """Where the devices connect: `mqtts://host:port` (mutual TLS) or `mqtt://host:port` (plain, e.g. mosquitto)."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Target:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"target {url!r}: expected mqtts://host:port or mqtt://host:port")
        host, _, port = rest.rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"target {url!r}: expected mqtts://host:port or mqtt://host:port")
        return cls(host.strip("[]"), int(port), scheme == "mqtts")


class ConnectRamp:
    """Paces connection attempts across one process's devices: at most `rate` starts per second (0: no limit) and at
    most `max_in_flight` handshakes at once, so a fast ramp never queues more attempts than the machine completes
    (a queued attempt would time out before it began and be retried, feeding the storm)."""

    def __init__(self, rate: float, max_in_flight: int = min(32, (os.cpu_count() or 1) + 4)) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self.slots = asyncio.Semaphore(max_in_flight)

    async def wait(self) -> None:
        if not self.interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SimDevice:
    """Runs until cancelled; `close()` then drains unacknowledged publishes and disconnects cleanly."""

    def __init__(
        self,
        spec: DeviceSpec,
        target: Target,
        ssl_context: ssl.SSLContext | None,
        figures: Figures,
        ramp: ConnectRamp,
        epoch: float,
        claim: DeviceClaim | None = None,
        *,
        jit: bool = False,
        credentials: tuple[str, bytes | None] | None = None,
        websocket_path: str | None = None,
        downloader: Downloader | None = None,
    ) -> None:
        self.spec = spec
        self.figures = figures
        self.ramp = ramp
        self.epoch = epoch  # loop time the fleet started: simulated second 0 for every device
        self.rng = random.Random(spec.seed)
        self.faults = FaultPlan(spec.faults, random.Random(spec.seed ^ 0x5EED))
        self.payload = PayloadBuilder(spec.payload, spec.seed)
        self.variables: dict[str, object] = spec.variables()
        self._vars: dict[str, object] = dict(self.variables)
        shadow = spec.shadow
        self.initial = PayloadBuilder(shadow.initial, spec.seed + 1) if shadow is not None else None
        self.prefix = shadow_prefix(spec.thing_name, shadow.name if shadow is not None else None)
        self.target = target
        self.claim = claim
        self.credentials = credentials  # (username, password) for a custom authorizer
        self.websocket_path = websocket_path  # MQTT over a WebSocket (a SigV4-presigned /mqtt URL)
        self.awaiting_jit = jit  # JITP/JITR: the first connect that gets in is this device's provisioning
        self.client = self._new_client(ssl_context)
        self.properties = TelemetryProperties(spec, self.variables)
        self.seq = 0
        self.reported_initial = False
        self.state = "idle"
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop = asyncio.get_running_loop()  # devices are built by the fleet's coroutine, on the loop they run on
        self._rebooting: asyncio.Future[None] | None = None
        self.jobs: JobAgent | None = None
        if spec.jobs is not None:
            rng = random.Random(spec.seed ^ 0x10B5)
            self.jobs = JobAgent(spec.thing_name, spec.jobs, rng, figures, self, downloader)

    def _new_client(self, ssl_context: ssl.SSLContext | None) -> AsyncMqttClient:
        spec = self.spec
        return AsyncMqttClient(
            spec.client_id,
            self.target.host,
            self.target.port,
            ssl_context=ssl_context,
            on_message=self._on_message,
            on_connection_lost=self._on_lost,
            protocol=spec.protocol,
            clean_start=spec.session_expiry == 0,  # a device with a session expiry resumes it on reconnect
            session_expiry=spec.session_expiry,
            topic_aliases=spec.topic_aliases,
            username=self.credentials[0] if self.credentials else None,
            password=self.credentials[1] if self.credentials else None,
            websocket_path=self.websocket_path,
        )

    # ---- life

    def _t(self) -> float:
        return self._loop.time() - self.epoch

    def _gauge(self, state: str) -> None:
        gauges = self.figures.gauges
        if self.state in gauges:
            gauges[self.state] -= 1
        if state in gauges:
            gauges[state] += 1
        self.state = state

    async def run(self) -> None:
        if self.claim is not None:
            await self._provision(self.claim)
        backoff = 1.0
        disconnect_in = self.faults.next_disconnect_in()
        disconnect_at = None if disconnect_in is None else self._t() + disconnect_in
        while True:
            if self._rebooting is not None:
                await self._rebooting
                if self.client.connected:  # the reboot reconnected: back to the schedule
                    await self._session(disconnect_at)
                    continue
            until = self.faults.offline_until(self._t())
            if until is not None:
                self._gauge("offline")
                self.figures.inc("faults.offline_window")
                await asyncio.sleep(until - self._t())
                continue
            if not await self._connect():
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            ended = await self._session(disconnect_at)
            if ended == "fault":
                self.figures.inc("faults.disconnect")
                self.client.abort()
                self._gauge("offline")
                await asyncio.sleep(self.faults.reconnect_delay())
                disconnect_in = self.faults.next_disconnect_in()
                disconnect_at = None if disconnect_in is None else self._t() + disconnect_in
            elif ended == "offline":
                self.client.abort()

    async def _provision(self, claim: DeviceClaim) -> None:
        """Fleet provisioning by claim until this device has a certificate of its own, then use it."""
        backoff = 1.0
        files = claim.files
        while not (files.cert.exists() and files.key.exists()):
            self._gauge("connecting")
            try:
                async with self.ramp.slots:
                    await self.ramp.wait()
                    cert, key, _ = await provision_by_claim(
                        self.spec.client_id, self.target.host, self.target.port, claim.claim_context,
                        claim.options.template, claim.options.render(self.spec), self.spec.protocol,
                    )  # fmt: skip
            except (ClaimRefused, MqttError, TimeoutError, OSError) as exc:
                self.figures.inc("provisioning_failures")
                log.debug("%s: provisioning by claim failed: %s", self.spec.client_id, exc)
                self._gauge("failed")
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            store_identity(files.cert, files.key, cert, key)
            self.figures.inc("provisioned")
        self.client = self._new_client(claim.context_for(files))

    async def _connect(self) -> bool:
        self._gauge("connecting")
        try:
            async with self.ramp.slots:
                await self.ramp.wait()
                await self.client.connect()
        except ConnectError as exc:
            self.figures.error("connect_refused")
            self.figures.inc(CAUSE_PREFIX + connect_cause(exc))
            log.debug("%s: %s", self.spec.client_id, exc)
            self._gauge("failed")
            return False
        except MqttError as exc:
            self.figures.error("connect")
            self.figures.inc(CAUSE_PREFIX + connect_cause(exc))
            log.debug("%s: %s", self.spec.client_id, exc)
            self._gauge("failed")
            return False
        self.figures.inc("connects")
        if self.awaiting_jit:
            self.awaiting_jit = False
            self.figures.inc("provisioned")
        self._gauge("connected")
        try:
            await self._subscribe_and_report()
        except MqttError as exc:
            self.figures.error("subscribe")
            log.debug("%s: %s", self.spec.client_id, exc)
            self.client.abort()
            self._gauge("failed")
            return False
        return True

    async def _subscribe_and_report(self) -> None:
        filters: list[tuple[str, int]] = []
        if self.spec.shadow is not None:
            filters += [(f"{self.prefix}/update/delta", 1), (f"{self.prefix}/get/accepted", 1)]
        if self.spec.command_topic is not None:
            filters.append((self.spec.command_topic, 1))
        if self.jobs is not None:
            filters += self.jobs.filters()
        if filters:
            granted = await self.client.subscribe(filters)
            if any(code >= 0x80 for code in granted):
                raise MqttError(f"{self.spec.client_id}: subscription refused: {filters}")
        if self.initial is not None and not self.reported_initial:
            reported = self.initial.build(self._t(), self._message_vars())
            self._publish(f"{self.prefix}/update", {"state": {"reported": reported}}, 1, count="shadow_reports")
            self.reported_initial = True
        if self.spec.shadow is not None and self.spec.shadow.apply_delta:
            # Deltas that arrived while offline are in the document's `delta`: ask for it, as AWS's samples do.
            self._publish(f"{self.prefix}/get", b"", 1, count=None)
        if self.jobs is not None:
            self.jobs.on_connected()

    async def _session(self, disconnect_at: float | None) -> str:
        """Publish on an absolute schedule until the connection is lost, a fault is due, or an offline window opens.
        The schedule does not drift: tick k is at phase + k * interval, whatever each publish cost."""
        spec = self.spec
        phase = self.rng.uniform(0, spec.interval)
        offline_at = self.faults.next_offline_start(self._t())
        k = max(0, int((self._t() - phase) // spec.interval) + 1)
        burst = MAX_BURST  # sleep before the first tick, even if it is due
        while True:
            due = phase + k * spec.interval + self.rng.uniform(0, spec.jitter * spec.interval)
            for deadline, outcome in ((disconnect_at, "fault"), (offline_at, "offline")):
                if deadline is not None and deadline <= due:
                    await asyncio.sleep(max(0.0, deadline - self._t()))
                    return outcome if self.client.connected else "lost"
            wait = due - self._t()
            if wait > 0 or burst >= MAX_BURST:
                burst = 0
                await asyncio.sleep(max(0.0, wait))
                # Behind schedule with a full in-flight window: wait for PUBACKs rather than queue in the client.
                if self.client.pending >= DEVICE_WINDOW:
                    await self.client.room(DEVICE_WINDOW)
                if not self.client.connected:
                    return "lost"
            # Ticks already due (a busy loop fell behind) go out now, up to MAX_BURST per loop turn: the client
            # sends what one turn publishes in one write.
            self._publish_telemetry()
            burst += 1
            k += 1

    def _message_vars(self) -> dict[str, object]:
        """The template variables of the message being built; one dict per device, refreshed per message (a payload
        is rendered at once, nothing keeps the dict)."""
        current = self._vars
        current["seq"] = self.seq
        current["timestamp"] = int((time.time() + self.spec.clock_skew) * 1000)
        return current

    def _publish_telemetry(self) -> None:
        self.seq += 1
        document = self.payload.build(self._t(), self._message_vars())
        fault = self.faults.payload_fault()
        if fault is not None:
            self.figures.inc(f"faults.{fault}")
            data = spoil(json.dumps(document).encode(), fault)
            self._publish(self.spec.topic, data, self.spec.qos, count="sent", properties=self._properties())
            return
        self._publish(self.spec.topic, document, self.spec.qos, count="sent", properties=self._properties())

    def _properties(self) -> bytes | None:
        properties = self.properties
        if properties.empty or properties.block is not None:
            return properties.block
        try:
            return properties.render(self._vars)
        except TemplateError:
            self.figures.error("user_properties")
            return None

    def _publish(
        self, topic: str, body: dict[str, Any] | bytes, qos: int, count: str | None, properties: bytes | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        figures = self.figures
        loop = self._loop
        sent_at = loop.time()
        if count is not None:
            figures.inc(count)
        if count != "sent" or qos != 1:
            if count == "sent":
                figures.sent_rate.add(sent_at)
            self.client.send(topic, data, qos, self._count_error, properties=properties)
            return
        figures.sent_rate.add(sent_at)

        def acked(error: MqttError | None) -> None:
            if error is not None:
                figures.error("publish")
                return
            now = loop.time()
            figures.inc("acked")
            figures.acked_rate.add(now)
            figures.latency.record((now - sent_at) * 1000)

        self.client.send(topic, data, qos, acked, properties=properties)

    def _count_error(self, error: MqttError | None) -> None:
        if error is not None:
            self.figures.error("publish")

    # ---- incoming

    def _on_lost(self) -> None:
        self.figures.inc("disconnects")
        self._gauge("connecting")

    def _on_message(self, message: Message) -> None:
        topic = message.topic
        if self.jobs is not None and self.jobs.owns(topic):
            self.jobs.on_message(topic, message.payload)
        elif topic.startswith(self.prefix):
            self._on_shadow(topic[len(self.prefix) :], message.payload)
        elif self.spec.command_topic is not None:
            self._on_command(message)

    def _on_shadow(self, suffix: str, payload: bytes) -> None:
        shadow = self.spec.shadow
        if shadow is None or not shadow.apply_delta:
            return
        try:
            document = json.loads(payload)
        except ValueError:
            self.figures.error("shadow_payload")
            return
        if suffix == "/update/delta":
            delta = document.get("state")
        elif suffix == "/get/accepted":
            delta = document.get("state", {}).get("delta")
        else:
            return
        if not isinstance(delta, dict) or not delta:
            return
        low, high = shadow.delta_delay
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self.rng.uniform(low, high), self._apply_delta, delta)
        self._timers.add(handle)

    def _apply_delta(self, delta: dict[str, Any]) -> None:
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        if not self.client.connected:
            return  # the get after reconnecting brings the delta back
        self.figures.inc("deltas_applied")
        self._publish(f"{self.prefix}/update", reported_for_delta(delta), 1, count="shadow_reports")

    def _on_command(self, message: Message) -> None:
        self.figures.inc("commands")
        reply = self.spec.reply_topic
        if reply is None:
            return
        try:
            command: Any = json.loads(message.payload)
        except ValueError:
            command = message.payload.decode("utf-8", "replace")
        self._publish(reply, {"ok": True, "command": command}, 1, count=None)

    # ---- the job agent's host

    @property
    def connected(self) -> bool:
        return self.client.connected

    def publish_json(self, topic: str, body: dict[str, Any], on_done: Callable[[Exception | None], None]) -> None:
        self.client.send(topic, orjson.dumps(body), 1, on_done)

    def report_firmware(self, field: str, version: str) -> None:
        self._publish(f"{self.prefix}/update", {"state": {"reported": {field: version}}}, 1, count="shadow_reports")

    async def reboot(self, downtime: float) -> None:
        """Go offline as a restarting device does (a clean DISCONNECT after the pending PUBACKs), come back after
        `downtime` seconds; the run loop waits for this instead of reconnecting on its own."""
        self.figures.inc("jobs.reboots")
        self._rebooting = self._loop.create_future()
        try:
            await self._drain_and_disconnect()
            self._gauge("offline")
            await asyncio.sleep(downtime)
            await self._connect()
        finally:
            self._rebooting.set_result(None)
            self._rebooting = None

    async def close(self) -> None:
        """Wait (bounded) for unacknowledged publishes, then DISCONNECT."""
        for handle in self._timers:
            handle.cancel()
        if self.jobs is not None:
            self.jobs.close()
        await self._drain_and_disconnect()
        self._gauge("idle")

    async def _drain_and_disconnect(self) -> None:
        """Wait (bounded) for unacknowledged publishes, then DISCONNECT (or drop the connection if that fails)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        while self.client.connected and self.client.pending and loop.time() < deadline:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.05)
        if self.client.connected:
            try:
                await self.client.disconnect(timeout=2.0)
            except MqttError:
                self.client.abort()
