"""Edge core benchmark (issue 7): local function latency, spool append rate offline, drain rate after reconnect.

One run, all on 127.0.0.1: a gateway (`edgesim up`), an edge core (`edgesim edge run`) between it and local
clients on the core's plain local listener.

  (1) local function invocation: a local device publishes to `bench/ping`; a pinned component (LOCAL_MQTT event
      source) publishes the event back on local pub/sub, bridged to `bench/pong` on the local broker; p50/p99 of
      publish → pong, one at a time;
  (2) spool append rate while offline: the core's cloud link switched off, local publishers send N QoS 1 messages
      to a topic the bridge maps to IotCore; every PUBACK means the message is committed in the spool;
  (3) drain rate: the link switched back on; the N spooled messages are published to the gateway (QoS 1, bounded
      in flight) and deleted once PUBACKed: N / time until the spool is empty.

    .venv/bin/python bench/edge.py [--quick] [--json out.json] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from broker import HOST, Edgesim, prepare
from common import stop_and_clean, write_json
from mqttload import cpu_seconds
from rich.console import Console
from rich.table import Table

from mqttwire.client import AsyncMqttClient, Message

console = Console()
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    latency_samples: int
    spooled: int
    payload_bytes: int
    publishers: int
    window: int  # un-PUBACKed QoS 1 messages per local publisher
    max_in_flight: int  # the core's maxInFlightPublishes towards the cloud


FULL = Settings(2_000, 100_000, 100, 4, 100, 100)
QUICK = Settings(200, 10_000, 100, 4, 100, 100)

ECHO = """
def handle(event, context):
    context.publish("bench/pong", event)
"""


def edge_config(home: Path, s: Settings) -> Path:
    components = home / "components"
    components.mkdir(parents=True, exist_ok=True)
    (components / "echo.py").write_text(ECHO)
    config = {
        "cloud": {"maxInFlightPublishes": s.max_in_flight},
        "local_broker": {"host": HOST, "port": 0},
        "spooler": {"maxSizeInBytes": s.spooled * s.payload_bytes * 2},
        "mqttTopicMapping": {
            "Spool": {"topic": "bench/spool/#", "source": "LocalMqtt", "target": "IotCore"},
            "Pong": {"topic": "bench/pong", "source": "Pubsub", "target": "LocalMqtt"},
        },
        "components_dir": str(components),
        "components": [
            {
                "name": "echo",
                "handler": "echo.handle",
                "pinned": True,
                "event_sources": [{"topic": "bench/ping", "type": "LOCAL_MQTT"}],
            }
        ],
    }
    path = home / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class EdgeCoreProcess:
    def __init__(self, home: Path, gw: Edgesim, config: Path) -> None:
        self.home, self.gw, self.config = home / "edge", gw, config
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "gateway", "edge", "run", "bench-edge",
            "--config", str(self.config), "--home", str(self.home), "--certs-dir", str(self.gw.mat.certs),
            "--endpoint", f"http://{HOST}:{self.gw.api_port}", "--target", f"mqtts://{HOST}:{self.gw.port}",
            "--json",
        ]  # fmt: skip
        log = open(self.home.parent / "edge.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        record = self.home / "edge.json"
        while not record.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("edge core did not start:\n" + (self.home.parent / "edge.log").read_text()[-3000:])
            time.sleep(0.05)
        self.ports = json.loads(record.read_text())["ports"]

    def call(self, method: str, path: str) -> dict[str, Any]:
        url = f"http://{HOST}:{self.ports['control']}{path}"
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/edgesim/status")

    def wait(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"edge never got {what}: {status}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def measure_latency(port: int, samples: int) -> dict[str, Any]:
    pongs: asyncio.Queue[Message] = asyncio.Queue()
    client = AsyncMqttClient("bench-pinger", HOST, port, on_message=pongs.put_nowait)
    await client.connect()
    try:
        await client.subscribe([("bench/pong", 1)])
        latencies: list[float] = []
        for i in range(samples + 50):  # the first 50 warm the worker up
            started = time.perf_counter()
            await client.publish("bench/ping", json.dumps({"i": i}).encode(), qos=1)
            while True:
                pong = await asyncio.wait_for(pongs.get(), 10)
                if json.loads(pong.payload).get("i") == i:
                    break
            if i >= 50:
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await client.disconnect()
    return {"p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99), "samples": len(latencies)}


async def flood(port: int, s: Settings) -> float:
    """Send s.spooled QoS 1 messages from s.publishers local clients; seconds until the last PUBACK."""
    per_client = s.spooled // s.publishers
    pad = b"x" * s.payload_bytes

    async def one(n: int) -> None:
        client = AsyncMqttClient(f"bench-spooler-{n}", HOST, port)
        await client.connect()
        window = asyncio.Semaphore(s.window)
        pending: list[asyncio.Future[None]] = []
        for _ in range(per_client):
            await window.acquire()
            future = client.publish(f"bench/spool/{n}", pad, qos=1)
            future.add_done_callback(lambda _f: window.release())
            pending.append(future)
        await asyncio.gather(*pending)
        await client.disconnect()

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(s.publishers)))
    return time.perf_counter() - started


def run(home: Path, s: Settings) -> dict[str, Any]:
    mat = prepare(home)
    gw = Edgesim(mat)
    edge: EdgeCoreProcess | None = None
    results: dict[str, Any] = {}
    try:
        gw.start()
        edge = EdgeCoreProcess(home, gw, edge_config(home, s))
        edge.start()
        edge.wait(lambda st: st["cloud"]["online"], 30, "online")
        port = edge.ports["local_mqtt"]
        console.log(f"gateway pid {gw.pid}, edge core pid {edge.proc.pid if edge.proc else '?'}, local port {port}")

        results["latency"] = asyncio.run(measure_latency(port, s.latency_samples))
        console.log(
            f"(1) local function: p50 {results['latency']['p50_ms']:.2f} ms, p99 {results['latency']['p99_ms']:.2f} ms"
        )

        edge.call("POST", "/offline")
        edge.wait(lambda st: not st["cloud"]["online"], 10, "offline")
        assert edge.proc is not None
        cpu0 = cpu_seconds(edge.proc.pid)
        seconds = asyncio.run(flood(port, s))
        status = edge.status()
        sent = (s.spooled // s.publishers) * s.publishers
        results["append"] = {
            "messages": sent,
            "seconds": seconds,
            "per_s": sent / seconds,
            "edge_cpu_pct": 100 * (cpu_seconds(edge.proc.pid) - cpu0) / seconds,
            "depth": status["spool"]["depth"],
            "rejected": status["spool"]["rejected"],
        }
        console.log(
            f"(2) spool append offline: {results['append']['per_s']:,.0f} msg/s, depth {status['spool']['depth']:,}"
        )

        cpu0, gcpu0 = cpu_seconds(edge.proc.pid), cpu_seconds(gw.pid)
        started = time.perf_counter()
        edge.call("POST", "/online")
        status = edge.wait(lambda st: st["spool"]["depth"] == 0, 600, "an empty spool")
        seconds = time.perf_counter() - started
        results["drain"] = {
            "messages": sent,
            "seconds": seconds,
            "per_s": sent / seconds,
            "delivered": status["spool"]["delivered"],
            "edge_cpu_pct": 100 * (cpu_seconds(edge.proc.pid) - cpu0) / seconds,
            "gateway_cpu_pct": 100 * (cpu_seconds(gw.pid) - gcpu0) / seconds,
            "gateway_messages_in": (gw.broker_stats() or {}).get("messages_in"),
        }
        console.log(f"(3) drain after reconnect: {results['drain']['per_s']:,.0f} msg/s")
    finally:
        if edge is not None:
            edge.stop()
        stop_and_clean(gw, home, True, console)
    return results


def report(r: dict[str, Any], s: Settings) -> Table:
    table = Table(title="edgesim edge core benchmark (all on 127.0.0.1)")
    for column in ("figure", "unit", "value"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    if "latency" in r:
        lat = r["latency"]
        table.add_row(f"(1) local function, local topic → reply ({lat['samples']:,} samples)", "ms", "")
        table.add_row("    p50 / p99", "ms", f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}")
    if "append" in r:
        a = r["append"]
        table.add_row(
            f"(2) spool append while offline ({a['messages']:,} x {s.payload_bytes} B, QoS 1)",
            "msg/s",
            f"{a['per_s']:,.0f}",
        )
        table.add_row("    edge core CPU", "CPU %", f"{a['edge_cpu_pct']:.0f}")
        table.add_row("    spool depth / rejected", "msgs", f"{a['depth']:,} / {a['rejected']:,}")
    if "drain" in r:
        d = r["drain"]
        table.add_row(f"(3) drain after reconnect ({d['messages']:,} spooled)", "msg/s", f"{d['per_s']:,.0f}")
        table.add_row("    edge core / gateway CPU", "CPU %", f"{d['edge_cpu_pct']:.0f} / {d['gateway_cpu_pct']:.0f}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts: a sanity run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs, databases)")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    home = Path(tempfile.mkdtemp(prefix="edgesim-edge-bench-"))
    results = run(home, s)
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    Console(width=max(console.width, 120)).print(report(results, s))
    write_json(args.json, args.quick, s, results, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
