"""`edgesim demo`: a gateway, a few provisioned devices publishing telemetry, a subscriber, live figures."""

from __future__ import annotations

import asyncio
import json
import math
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from gateway.app import Gateway
from gateway.config import Config
from gateway.identity.keystore import write_device_files

DEVICE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "iot:Connect",
            "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}",
        },
        {
            "Effect": "Allow",
            "Action": "iot:Publish",
            "Resource": "arn:aws:iot:*:*:topic/demo/${iot:Connection.Thing.ThingName}/*",
        },
        {"Effect": "Allow", "Action": ["iot:Subscribe", "iot:Receive"], "Resource": "*"},
    ],
}


@dataclass
class Figures:
    sent: int = 0
    acked: int = 0
    received: int = 0
    alerts: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(client_id: str, port: int, cert: Path, key: Path, ca: Path) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED)
    return client


def _provision(gw: Gateway, name: str, out_dir: Path) -> tuple[Path, Path]:
    registry = gw.registry
    if not registry.thing_exists(name):
        registry.create_thing(name, None, {"kind": "demo"})
    cert = out_dir / f"{name}.cert.pem"
    key = out_dir / f"{name}.private.key"
    if cert.exists() and key.exists():
        return cert, key
    created = registry.create_keys_and_certificate(set_as_active=True)
    registry.attach_thing_principal(name, created["certificateArn"])
    policy = "edgesim-demo-device"
    if not registry.store.one("SELECT 1 FROM policies WHERE name=?", (policy,)):
        registry.create_policy(policy, json.dumps(DEVICE_POLICY))
    registry.attach_policy(policy, created["certificateArn"])
    write_device_files(
        out_dir, name, created["certificatePem"], created["keyPair"]["PrivateKey"], created["keyPair"]["PublicKey"]
    )
    return cert, key


def _table(figures: Figures, started: float, gw: Gateway, devices: int) -> Table:
    elapsed = max(time.monotonic() - started, 1e-6)
    with figures.lock:
        lat = sorted(figures.latencies_ms[-2000:])
    p50 = lat[len(lat) // 2] if lat else math.nan
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else math.nan
    table = Table(title=f"edgesim demo — {elapsed:5.1f}s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("devices connected", f"{len(gw.broker.sessions) - 1} / {devices}")
    table.add_row("published (QoS 1)", str(figures.sent))
    table.add_row("acknowledged", str(figures.acked))
    table.add_row("received by subscriber", str(figures.received))
    table.add_row("messages/s", f"{figures.received / elapsed:,.1f}")
    table.add_row("latency p50 / p99", f"{p50:.2f} / {p99:.2f} ms")
    table.add_row("policy denials", str(gw.broker.stats["denied"]))
    rules = gw.rules.metrics()
    table.add_row("rules loaded", str(len(rules)))
    table.add_row("rules fired", str(sum(m["fired"] for m in rules.values())))
    table.add_row("alerts republished (hot_alerts)", str(figures.alerts))
    table.add_row("shadow updates (battery_to_shadow)", str(gw.shadows.stats["updates"]))
    to_stream = rules.get("all_to_kinesis", {})
    table.add_row("records into Kinesis 'telemetry'", str(to_stream.get("action_success", 0)))
    return table


async def run_demo(cfg: Config, devices: int, duration: float | None, interval: float) -> None:
    out_dir = cfg.certs_dir / "demo"
    figures = Figures()
    async with Gateway(cfg) as gw:
        port = gw.ports["mqtts"]
        ca = gw.local_ca.root_cert_path
        names = [f"demo-sensor-{i:02d}" for i in range(devices)]
        if "telemetry" not in gw.kinesis.streams:
            gw.kinesis.create_stream("telemetry", 2)
        creds = {name: _provision(gw, name, out_dir) for name in [*names, "demo-dashboard", "demo-viewer"]}

        sub = _client("demo-dashboard", port, *creds["demo-dashboard"], ca)

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic.startswith("alerts/"):
                with figures.lock:
                    figures.alerts += 1
                return
            body = json.loads(msg.payload)
            with figures.lock:
                figures.received += 1
                figures.latencies_ms.append((time.time() - body["sentAt"]) * 1000)

        sub.on_message = on_message
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe([("demo/+/telemetry", 1), ("alerts/#", 1)])
        await asyncio.to_thread(sub.connect, "127.0.0.1", port)
        sub.loop_start()
        clients = []
        for name in names:
            client = _client(name, port, *creds[name], ca)

            def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
                with figures.lock:
                    figures.acked += 1

            client.on_publish = on_publish
            await asyncio.to_thread(client.connect, "127.0.0.1", port)
            client.loop_start()
            clients.append((name, client))
        rng = random.Random(7)
        started = time.monotonic()
        hint = Panel(
            f"Try, in another terminal:\n"
            f"  mosquitto_sub -h 127.0.0.1 -p {port} --cafile {ca} \\\n"
            f"    --cert {creds['demo-viewer'][0]} --key {creds['demo-viewer'][1]} \\\n"
            f"    -i demo-viewer -t 'demo/#' -v\n"
            f"  edgesim shadow get demo-sensor-09 --endpoint http://127.0.0.1:{gw.ports['api']}\n"
            f"  edgesim rules stats --endpoint http://127.0.0.1:{gw.ports['api']}\n"
            f"  edgesim streams read telemetry --follow --endpoint http://127.0.0.1:{gw.ports['api']}\n"
            f"  (Ctrl-C here stops the demo)",
            title="next",
        )
        try:
            with Live(Group(_table(figures, started, gw, devices), hint), refresh_per_second=4) as live:
                while duration is None or time.monotonic() - started < duration:
                    tick = time.monotonic()
                    for i, (name, client) in enumerate(clients):
                        t = time.monotonic() - started
                        payload = {
                            "device": name,
                            # Later devices run hotter and drain faster, so the example rules have work to do.
                            "temperature": round(20 + 1.5 * i + 3 * math.sin(t / 10 + i) + rng.gauss(0, 0.2), 2),
                            "battery": round(max(0.0, 100 - 2 * t - 8 * i), 1),
                            "sentAt": time.time(),
                        }
                        client.publish(f"demo/{name}/telemetry", json.dumps(payload), qos=1)
                        with figures.lock:
                            figures.sent += 1
                    live.update(Group(_table(figures, started, gw, devices), hint))
                    await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
        finally:
            for _, client in clients:
                client.disconnect()
                client.loop_stop()
            sub.disconnect()
            sub.loop_stop()
