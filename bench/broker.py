"""Broker benchmark: edgesim against bare amqtt and mosquitto, same mTLS settings.

usage: python bench/broker.py [--quick] [--only edgesim,amqtt,mosquitto] [--phases main,connections,auth]
                              [--connections N] [--connect-limit S] [--json out.json] [--keep]

Each broker runs alone in its own process on 127.0.0.1 (start, measure, stop), except in the connect duel below; the
load generator (bench/mqttload.py) runs in this process, so on two cores the broker and the generator each get one.
Every client presents the same allow-all device certificate issued by edgesim's local CA, with its own client id.

Phases, each on a freshly started broker process:
  main         connect rate and broker CPU per connect, memory per idle connection (1,000 held), latency,
               fan-in (MQTT 3.1.1, and MQTT 5 with and without user properties on edgesim and mosquitto, with
               v5/v3 ratios; each compared run five times for 3 s, in A B C C B A A B C ... order: the best
               run in the main table, the medians in the v5/v3 one), QoS 0 flood

With two or more brokers and the main phase, a connect duel follows: every broker up at once on a fresh process,
their storms of 1,000 mTLS connects taking turns (A B, B A, A B, B A), the fastest of each kept; its figures are
the connect rate and broker CPU per connect in the table (the main phase's single storm stays in the JSON).
  connections  N idle mTLS connections held at once (10,000; 500 with --quick): broker RSS with N connected and
               KB per connection, against the goals <= 40 KB per connection and < 500 MB RSS at 10,000
  auth         edgesim only: connects/s by authentication method (bench/auth_connects.py): mTLS, a custom
               authorizer on the ALPN port with its function cold and warm, SigV4-presigned WebSocket upgrades
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import auth_connects
from common import write_json
from mqttload import (
    CONNACK,
    DISCONNECT_BYTES,
    Client,
    ConnectResult,
    MqttError,
    Target,
    close_all,
    connect_packet,
    connect_storm,
    cpu_seconds,
    fan_in,
    latency,
    split_frames,
)
from rich.console import Console
from rich.table import Table

from mqttwire.packets import V5

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BROKERS = ("edgesim", "amqtt", "mosquitto")
ALIASES = {"gateway": "edgesim"}
PHASES = ("main", "connections", "auth")
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}

console = Console()


@dataclass(frozen=True)
class Settings:
    connections: int
    concurrency: int
    publishers: int
    window_s: float
    warmup_s: float
    inflight: int  # un-PUBACKed QoS 1 messages per publisher
    e2e_window: int  # undelivered messages per publisher in the end-to-end runs (QoS 0, QoS 1 e2e)
    lat_publishers: int
    lat_rate: float
    lat_s: float
    lat_warmup_s: float
    held_connections: int  # the "connections" phase: idle mTLS connections held at once (0: phase off)
    held_concurrency: int  # handshakes in flight while opening them
    held_limit_s: float  # give up opening more after this long, and report what was reached
    # Each compared fan-in variant runs this often, in A B C C B A A B C ... order, and keeps its best run: on a
    # shared machine one window can lose 10-20 % to a slow spell lasting seconds to minutes (the same code measured
    # 0.86x and 1.04x its twin in consecutive windows), and a fixed order would charge a drift to one variant. Many
    # short windows sample the machine's states more evenly than a few long ones.
    fanin_runs: int = 5
    compare_window_s: float = 3.0
    # Connect storms per broker in the connect duel (all brokers up at once, taking turns), the fastest kept; with
    # one broker, or 1 here, the main phase's single storm (which also gives the memory figure) is the figure.
    connect_runs: int = 4
    connect_limit_s: float = 120.0


FULL = Settings(1000, 50, 100, 5.0, 1.0, 10, 10, 10, 100.0, 5.0, 1.0, 10_000, 100, 120.0)
QUICK = Settings(200, 50, 100, 2.0, 0.5, 10, 10, 10, 100.0, 2.0, 0.5, 500, 100, 120.0, fanin_runs=1, connect_runs=1)

# The goals for the gateway: broker memory per idle mTLS connection, and broker RSS with 10,000 connected.
GOAL_KB_PER_CONN = 40.0
GOAL_RSS_MB = 500.0
GOAL_AT = 10_000


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Material:
    home: Path
    certs: Path
    data: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def prepare(home: Path) -> Material:
    """edgesim's local CA and server cert, plus ONE registered device cert with an allow-all policy."""
    from gateway.clock import SystemClock
    from gateway.identity.keystore import ensure_local_ca, write_private, write_public
    from gateway.registry import Registry
    from gateway.store import Store

    certs, data = home / "certs", home / "data"
    local, _ = ensure_local_ca(certs)
    store = Store(data / "edgesim.db")
    try:
        registry = Registry(store, SystemClock(), "us-east-1", "123456789012")
        registry.local_ca = local.root
        # What the gateway does at start-up, done first so the device cert is issued under a registered CA.
        registry.ensure_ca_registered(local.root.cert_pem.decode())
        registry.create_thing("bench", None, {})
        out = registry.create_keys_and_certificate(set_as_active=True, key_type="ec")
        registry.attach_thing_principal("bench", out["certificateArn"], None)
        registry.create_policy("bench-allow-all", json.dumps(ALLOW_ALL))
        registry.attach_policy("bench-allow-all", out["certificateArn"])
    finally:
        store.close()
    client_cert, client_key = home / "client.cert.pem", home / "client.private.key"
    write_public(client_cert, out["certificatePem"].encode())
    write_private(client_key, out["keyPair"]["PrivateKey"].encode())
    return Material(
        home, certs, data, local.root_cert_path, local.server_cert_path, local.server_key_path, client_cert, client_key
    )


# ---------------------------------------------------------------- broker processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class BrokerProcess:
    name = "?"

    def __init__(self, mat: Material) -> None:
        self.mat = mat
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = mat.home / f"{self.name}.log"
        self.version = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child; closed below
        try:
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.wait_ready(time.monotonic() + 30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited (code {code}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_file(self, path: Path, deadline: float) -> dict[str, int]:
        while time.monotonic() < deadline:
            if path.exists():
                text = path.read_text()
                if text:
                    return dict(json.loads(text))
            self.check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not come up in time:\n{self.log_tail()}")

    def _wait_port(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} in time:\n{self.log_tail()}")

    def broker_stats(self) -> dict[str, Any] | None:
        return None


class Edgesim(BrokerProcess):
    name = "edgesim"

    def __init__(self, mat: Material) -> None:
        super().__init__(mat)
        self.ports_file = mat.home / "edgesim-ports.json"
        self.api_port = 0
        self.extra_args: list[str] = []  # the auth phase's listeners and access key
        self.ports: dict[str, int] = {}
        self.version = "edgesim (this tree)"

    def command(self) -> list[str]:
        self.ports_file.unlink(missing_ok=True)
        return [
            sys.executable, "-m", "gateway", "up",
            "--host", HOST,
            "--mqtts-port", "0", "--wss-port", "-1", "--https-port", "-1", "--api-port", "0",
            "--data-dir", str(self.mat.data), "--certs-dir", str(self.mat.certs),
            "--ports-file", str(self.ports_file),
            "--publishes-per-second", "0",
            "--log-level", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        ports = self._wait_file(self.ports_file, deadline)
        self.ports = ports
        self.port, self.api_port = int(ports["mqtts"]), int(ports["api"])

    def broker_stats(self) -> dict[str, Any] | None:
        """The gateway's own counters (messages in/out, QoS 0 drops) from its /health endpoint."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.api_port}/health", timeout=5) as resp:
                body = json.loads(resp.read())
            return {"connections": body.get("connections"), **body.get("stats", {})}
        except (OSError, ValueError):
            return None


class Amqtt(BrokerProcess):
    name = "amqtt"

    def __init__(self, mat: Material) -> None:
        super().__init__(mat)
        self.ports_file = mat.home / "amqtt-ports.json"
        from importlib.metadata import version

        self.version = f"amqtt {version('amqtt')}"

    def command(self) -> list[str]:
        self.ports_file.unlink(missing_ok=True)
        m = self.mat
        return [
            sys.executable, str(BENCH / "amqtt_ref.py"), str(self.ports_file),
            str(m.server_cert), str(m.server_key), str(m.ca),
        ]  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        self.port = int(self._wait_file(self.ports_file, deadline)["mqtts"])


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def ensure_mosquitto() -> str | None:
    """The mosquitto binary, installing the Debian package if it is missing; None if that fails."""
    found = find_mosquitto()
    if found:
        return found
    console.log("[yellow]mosquitto missing: apt-get install -y mosquitto mosquitto-clients[/yellow]")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "mosquitto", "mosquitto-clients"]
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0 and find_mosquitto():
            return find_mosquitto()
        console.log(f"[red]apt-get install failed[/red]: {done.stderr.strip()[-500:]}")
    return None


class Mosquitto(BrokerProcess):
    name = "mosquitto"

    def __init__(self, mat: Material, binary: str) -> None:
        super().__init__(mat)
        self.binary = binary
        self.conf = mat.home / "mosquitto.conf"
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()
        self.version = first[0].strip() if first else "mosquitto"

    def command(self) -> list[str]:
        m = self.mat
        self.port = free_port()
        self.conf.write_text(
            "\n".join(
                [
                    "user root",  # no privilege drop: the key files are 0600 root
                    "persistence false",
                    # edgesim and asyncio (amqtt) set TCP_NODELAY on every connection; mosquitto only when asked.
                    "set_tcp_nodelay true",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    f"listener {self.port} {HOST}",
                    f"cafile {m.ca}",
                    f"certfile {m.server_cert}",
                    f"keyfile {m.server_key}",
                    "require_certificate true",
                    "allow_anonymous true",
                    "",
                ]
            )
        )
        return [self.binary, "-c", str(self.conf)]

    def wait_ready(self, deadline: float) -> None:
        self._wait_port(deadline)


# ---------------------------------------------------------------- one broker, every figure


async def warm_up(broker: BrokerProcess, mat: Material) -> None:
    """A few connections first, so lazily built state does not count as per-connection memory."""
    target = Target(HOST, broker.port, mat.ca, mat.client_cert, mat.client_key)
    ctx = target.context()
    deadline = time.monotonic() + 15
    while True:
        try:
            probe = await Client.connect(HOST, broker.port, ctx, "bench-probe")
            break
        except Exception as exc:
            broker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot connect to {broker.name}: {exc!r}\n{broker.log_tail()}") from exc
            await asyncio.sleep(0.2)
    await probe.subscribe("bench/warmup", 1)
    await probe.close()
    _, clients = await connect_storm(target, count=20, concurrency=10, tag="-warm")
    await close_all(clients)


async def settle(broker: BrokerProcess, idle_pct: float = 10.0, max_s: float = 20.0) -> float:
    """Wait until the broker's CPU falls below `idle_pct` over 0.25 s, so no phase inherits the last one's work."""
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        before = cpu_seconds(broker.pid)
        await asyncio.sleep(0.25)
        if 100.0 * (cpu_seconds(broker.pid) - before) / 0.25 < idle_pct:
            break
    waited = time.monotonic() - start
    if waited > 1.0:
        console.log(f"{broker.name}: busy for {waited:.1f} s after the previous phase")
    return waited


def _stats_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: int(after[k]) - int(before.get(k, 0)) for k in after if isinstance(after[k], int) and k != "connections"}


async def _storm(broker: BrokerProcess, target: Target, s: Settings, tag: str) -> tuple[ConnectResult, list[IdleTls]]:
    """One connect storm with the lean client (the asyncio one capped the figure at its own CPU): its result with the
    CPU seconds the broker and this load generator took, and the connections it opened (the caller closes them)."""
    conns: list[IdleTls] = []
    errors: list[str] = []
    b0, g0 = cpu_seconds(broker.pid), time.process_time()
    seconds, attempted, _ = await open_idle(
        target, s.connections, s.concurrency, s.connect_limit_s, conns, errors, prefix=f"bench-idle{tag}"
    )
    b1, g1 = cpu_seconds(broker.pid), time.process_time()
    per_s = len(conns) / seconds if seconds else 0.0
    return ConnectResult(attempted, len(conns), seconds, per_s, errors, broker_cpu_s=b1 - b0, gen_cpu_s=g1 - g0), conns


def connect_summary(runs: list[ConnectResult]) -> dict[str, Any]:
    """A broker's connect figures from its storms: the fastest storm's, with every storm's rate and CPU in `runs`."""
    best = max(runs, key=lambda run: run.per_s)
    return asdict(best) | {
        "errors": [e for run in runs for e in run.errors][:5],
        "error_count": sum(len(run.errors) for run in runs),
        "broker_cpu_pct": 100.0 * best.broker_cpu_s / best.seconds if best.seconds else None,
        "gen_cpu_pct": 100.0 * best.gen_cpu_s / best.seconds if best.seconds else None,
        "broker_ms_per_connect": 1000.0 * best.broker_cpu_s / best.connected if best.connected else None,
        "runs": [{"per_s": run.per_s, "broker_cpu_s": run.broker_cpu_s, "gen_cpu_s": run.gen_cpu_s} for run in runs],
    }


async def connect_duel(brokers: list[BrokerProcess], mat: Material, s: Settings) -> dict[str, dict[str, Any]]:
    """Every broker up at once, their connect storms taking turns (A B, B A, A B, ...), the fastest of each kept.

    This machine's speed drifts over minutes: storms minutes apart, one broker after the other, measured the drift
    as often as the brokers (the same two brokers came out 0.74x in one run and 1.16x in another)."""
    targets = {b.name: Target(HOST, b.port, mat.ca, mat.client_cert, mat.client_key) for b in brokers}
    for broker in brokers:
        await warm_up(broker, mat)
    runs: dict[str, list[ConnectResult]] = {b.name: [] for b in brokers}
    with console.status("connect duel") as status:
        for turn in range(s.connect_runs):
            for broker in brokers if turn % 2 == 0 else brokers[::-1]:
                for other in brokers:
                    await settle(other)
                status.update(f"connect duel, turn {turn + 1}/{s.connect_runs}: {broker.name}, {s.connections} mTLS")
                result, conns = await _storm(broker, targets[broker.name], s, f"-duel{turn}")
                await close_idle(conns)
                broker.check_alive()
                runs[broker.name].append(result)
                console.log(
                    f"{broker.name}: duel turn {turn + 1}: {result.per_s:,.0f} connects/s, broker CPU "
                    f"{1000.0 * result.broker_cpu_s / max(1, result.connected):.2f} ms per connect"
                )
    return {name: connect_summary(broker_runs) for name, broker_runs in runs.items()}


async def measure(broker: BrokerProcess, mat: Material, s: Settings) -> dict[str, Any]:
    target = Target(HOST, broker.port, mat.ca, mat.client_cert, mat.client_key)
    out: dict[str, Any] = {"version": broker.version}
    status = console.status(f"[bold]{broker.name}[/bold]: warming up")
    with status:
        await warm_up(broker, mat)
        await settle(broker)

        # 3 + 4: connect rate, then memory per idle connection while they are held.
        status.update(f"[bold]{broker.name}[/bold]: {s.connections} mTLS connects, {s.concurrency} at a time")
        rss_before = rss_kb(broker.pid)
        first, held = await _storm(broker, target, s, "")
        await asyncio.sleep(1.0)
        rss_after = rss_kb(broker.pid)
        alive = sum(not c.closed for c in held)
        status.update(f"[bold]{broker.name}[/bold]: closing {len(held)} idle connections")
        await close_idle(held)
        broker.check_alive()
        out["connect"] = connect_summary([first])  # replaced by the connect duel's turns when it runs
        best = first
        out["memory"] = {
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "held": alive,
            "kb_per_conn": (rss_after - rss_before) / alive if alive else float("nan"),
        }
        console.log(
            f"{broker.name}: connect {best.connected}/{best.attempted} in {best.seconds:.2f} s "
            f"= {best.per_s:,.0f}/s (CPU broker "
            f"{out['connect']['broker_cpu_pct'] or 0:.0f} %, load-gen {out['connect']['gen_cpu_pct'] or 0:.0f} %); "
            f"RSS {rss_before / 1024:.1f} → {rss_after / 1024:.1f} MB with {alive} held = "
            f"{out['memory']['kb_per_conn']:.1f} KB/conn"
        )
        if out["connect"]["error_count"]:
            console.log(
                f"[red]{broker.name}: {out['connect']['error_count']} connect failures[/red], "
                f"e.g. {out['connect']['errors'][0]}"
            )

        # 2: latency at a fixed rate, on a broker not yet through an overload.
        out["settle_s"] = {"latency": await settle(broker)}
        status.update(
            f"[bold]{broker.name}[/bold]: latency, QoS 1, {s.lat_publishers} x {s.lat_rate:g} msg/s for {s.lat_s:g} s"
        )
        lat = await latency(
            target, publishers=s.lat_publishers, rate_per_publisher=s.lat_rate, seconds=s.lat_s,
            warmup=s.lat_warmup_s, window=s.inflight, broker_cpu=lambda: cpu_seconds(broker.pid),
        )  # fmt: skip
        broker.check_alive()
        out["latency"] = asdict(lat)
        console.log(
            f"{broker.name}: latency at {lat.rate} msg/s: p50 {lat.p50_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms, "
            f"max {lat.max_ms:.2f} ms ({lat.samples} samples, loss {lat.loss_pct:.2f} %); "
            f"broker CPU {lat.broker_cpu_pct or 0:.0f} %"
        )
        for err in lat.errors[:5]:
            console.log(f"[red]{broker.name}: {err}[/red]")

        # 1: fan-in, MQTT 3.1.1 and (where the broker speaks it) MQTT 5 side by side: the compared variants run in
        # A B C order, then C B A, A B C ... (fanin_runs times), each keeping its best run. The PUBACK-window QoS 1
        # run overloads the subscriber's queue on purpose, so it goes last, once.
        v5 = broker.name in V5_BROKERS
        variants = [(key, qos, e2e, v, up, title) for key, qos, e2e, v, up, title in FANIN_VARIANTS if v != V5 or v5]
        compared = [v for v in variants if v[1] == 0 or v[2]]
        order = [v for run in range(s.fanin_runs) for v in (compared if run % 2 == 0 else compared[::-1])]
        order += [v for v in variants if v not in compared]
        if s.fanin_runs > 1:
            # One short unrecorded pass first: a broker's first run of a message shape was seen up to a sixth slower
            # than its later runs, which would count against whichever variant meets it first.
            for _key, qos, e2e, protocol, user_props, title in compared:
                await settle(broker)
                status.update(f"[bold]{broker.name}[/bold]: warming up fan-in {title}")
                await fan_in(
                    replace(target, protocol=protocol), qos=qos, publishers=s.publishers, seconds=1.0, warmup=0.5,
                    window=s.e2e_window, end_to_end=e2e, user_properties=user_props, tag="-warm",
                )  # fmt: skip
                broker.check_alive()
        for key, qos, e2e, protocol, user_props, title in order:
            out["settle_s"][key] = await settle(broker)
            seconds = s.compare_window_s if s.fanin_runs > 1 and (qos == 0 or e2e) else s.window_s
            status.update(
                f"[bold]{broker.name}[/bold]: fan-in {title}, {s.publishers} publishers → 1 subscriber, "
                f"{seconds:g} s window"
            )
            before = broker.broker_stats()
            res = await fan_in(
                replace(target, protocol=protocol), qos=qos, publishers=s.publishers, seconds=seconds,
                warmup=s.warmup_s, window=s.inflight if qos and not e2e else s.e2e_window, end_to_end=e2e,
                broker_cpu=lambda: cpu_seconds(broker.pid), user_properties=user_props,
            )  # fmt: skip
            broker.check_alive()
            out[key] = _best_run(
                out.get(key), asdict(res) | {"broker_stats": _stats_delta(before, broker.broker_stats())}
            )
            console.log(
                f"{broker.name}: fan-in {title}: offered {res.offered_per_s:,.0f}/s, delivered "
                f"{res.delivered_per_s:,.0f}/s; sent {res.sent:,} received {res.received:,} "
                f"(loss {res.loss_pct:.2f} %, out-of-order/dup {res.out_of_order}, stalls {res.stalls}); "
                f"CPU broker {res.broker_cpu_pct or 0:.0f} %, publishers {res.gen_cpu_pct:.0f} %, "
                f"subscriber {res.sub_cpu_pct:.0f} %"
            )
            if out[key]["broker_stats"]:
                console.log(f"{broker.name}: broker counters {out[key]['broker_stats']}")
            for err in res.errors[:5]:
                console.log(f"[red]{broker.name}: {err}[/red]")
        # 5: a QoS 0 flood: each publisher keeps up to FLOOD_WINDOW messages outstanding, far more than one
        # subscriber takes, so only the broker's own limits (and TCP) bound its memory.
        out["settle_s"]["flood_qos0"] = await settle(broker)
        status.update(f"[bold]{broker.name}[/bold]: QoS 0 flood, {s.publishers} publishers → 1 subscriber")
        out["flood_qos0"] = await _flood(broker, target, s)
        flood = out["flood_qos0"]
        console.log(
            f"{broker.name}: QoS 0 flood: offered {flood['offered_per_s']:,.0f}/s, delivered "
            f"{flood['delivered_per_s']:,.0f}/s (loss {flood['loss_pct']:.1f} %); "
            f"RSS {flood['rss_before_kb'] / 1024:.1f} → peak {flood['rss_peak_kb'] / 1024:.1f} MB, "
            f"{flood['rss_after_kb'] / 1024:.1f} MB after"
        )
    out["rss_end_kb"] = rss_kb(broker.pid)
    return out


FLOOD_WINDOW = 2_000
V5_BROKERS = ("edgesim", "mosquitto")  # amqtt 0.12 speaks MQTT 3.1.1 only
V311 = 4
# (result key, QoS, end-to-end window, protocol, two user properties per message, title)
FANIN_VARIANTS = [
    ("fanin_qos0", 0, False, V311, False, "QoS 0, end-to-end window"),
    ("fanin5_qos0", 0, False, V5, False, "MQTT 5 QoS 0, end-to-end window"),
    ("fanin5up_qos0", 0, False, V5, True, "MQTT 5 QoS 0 + user properties, end-to-end window"),
    ("fanin_qos1_e2e", 1, True, V311, False, "QoS 1, end-to-end window"),
    ("fanin5_qos1_e2e", 1, True, V5, False, "MQTT 5 QoS 1, end-to-end window"),
    ("fanin5up_qos1_e2e", 1, True, V5, True, "MQTT 5 QoS 1 + user properties, end-to-end window"),
    ("fanin_qos1", 1, False, V311, False, "QoS 1, PUBACK window only"),
]
GOAL_V5_RATIO = 0.9  # MQTT 5 fan-in at least 0.9x the same broker's MQTT 3.1.1 figure


def _best_run(kept: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The run that delivered more, with every run's delivered/s (and loss) kept in `runs` for the JSON."""
    summary = {"delivered_per_s": new["delivered_per_s"], "loss_pct": new["loss_pct"]}
    if kept is None:
        return new | {"runs": [summary]}
    runs = [*kept["runs"], summary]
    best = kept if kept["delivered_per_s"] >= new["delivered_per_s"] else new
    # Loss is a correctness figure, not a speed one: the worst run's counts.
    return best | {"runs": runs, "loss_pct": max(kept["loss_pct"], new["loss_pct"])}


async def _flood(broker: BrokerProcess, target: Target, s: Settings) -> dict[str, Any]:
    before = rss_kb(broker.pid)
    peak = before

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb(broker.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    stats_before = broker.broker_stats()
    try:
        res = await fan_in(
            target, qos=0, publishers=s.publishers, seconds=s.window_s, warmup=s.warmup_s, window=FLOOD_WINDOW,
            tag="-flood", broker_cpu=lambda: cpu_seconds(broker.pid),
        )  # fmt: skip
    finally:
        sampler.cancel()
    broker.check_alive()
    await asyncio.sleep(1.0)
    stats = _stats_delta(stats_before, broker.broker_stats())
    if stats:
        console.log(f"{broker.name}: broker counters during the flood {stats}")
    return asdict(res) | {
        "rss_before_kb": before,
        "rss_peak_kb": peak,
        "rss_after_kb": rss_kb(broker.pid),
        "broker_stats": stats,
    }


# ---------------------------------------------------------------- N idle connections held at once

HELD_KEEP_ALIVE = 1200  # AWS IoT's maximum: no broker drops an idle client during a slow phase
HELD_HANDSHAKE_S = 30.0  # one connection's TCP + TLS + CONNECT..CONNACK
TLS_RECORD = 16 * 1024


class IdleTls(asyncio.Protocol):
    """One idle mTLS MQTT client, TLS over memory BIOs on a plain TCP transport.

    asyncio's own TLS transport (mqttload.Client) zero-fills a 256 KiB read buffer per connection: 2.5 GB in this
    process for 10,000 connections, on the cores the brokers need. Same context, certificate and CONNECT as
    mqttload.Client (clean session, its own client id); after the CONNACK whatever arrives is decrypted and dropped.
    """

    __slots__ = ("_buf", "_in", "_out", "_ssl", "_tcp", "client_id", "closed", "connack", "ready")
    _tcp: asyncio.Transport

    def __init__(self, ctx: ssl.SSLContext, host: str, client_id: str, connack: asyncio.Future[None]) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._in, self._out, server_hostname=host)
        self._buf = bytearray()
        self.client_id = client_id
        self.connack: asyncio.Future[None] | None = connack
        self.ready = False  # TLS handshake done
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._step()

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        self._step()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection closed before CONNACK ({exc!r})" if exc else "connection closed before CONNACK")

    def _fail(self, why: str) -> None:
        fut, self.connack = self.connack, None
        if fut is not None and not fut.done():
            fut.set_exception(MqttError(f"{self.client_id}: {why}"))

    def _step(self) -> None:
        try:
            if not self.ready:
                try:
                    self._ssl.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush()
                    return
                self.ready = True
                self._ssl.write(connect_packet(self.client_id, HELD_KEEP_ALIVE))
            while self._in.pending or self._ssl.pending():
                data = self._ssl.read(TLS_RECORD)
                if not data:  # close_notify
                    self._fail("closed by the broker (close_notify)")
                    self._tcp.close()
                    return
                if self.connack is not None:
                    self._on_plaintext(data)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self._fail(f"TLS error {exc!r}")
            self._tcp.abort()
            return
        self._flush()

    def _on_plaintext(self, data: bytes) -> None:
        self._buf += data
        frames, used = split_frames(self._buf)
        del self._buf[:used]
        for first, body in frames:
            if first >> 4 == CONNACK:
                fut, self.connack = self.connack, None
                self._buf = bytearray()
                if fut is None or fut.done():
                    return
                if len(body) != 2 or body[1] != 0:
                    fut.set_exception(MqttError(f"CONNACK refused {self.client_id}: {body.hex()}"))
                else:
                    fut.set_result(None)
                return

    def _flush(self) -> None:
        if self._out.pending and not self._tcp.is_closing():
            self._tcp.write(self._out.read())

    def close(self) -> None:
        """DISCONNECT, then TCP close once it is written."""
        if self.closed or self._tcp.is_closing():
            return
        with contextlib.suppress(ssl.SSLError):
            self._ssl.write(DISCONNECT_BYTES)
            self._flush()
        self._tcp.close()

    def abort(self) -> None:
        if not self._tcp.is_closing():
            self._tcp.abort()


async def open_idle(
    target: Target,
    count: int,
    concurrency: int,
    limit_s: float,
    conns: list[IdleTls],
    errors: list[str],
    prefix: str = "bench-held",
) -> tuple[float, int, bool]:
    """Open `count` idle connections into `conns`, `concurrency` handshakes at a time, for at most `limit_s`.

    Returns (seconds, attempted, complete): complete is False when the time limit cut the run short.
    """
    loop = asyncio.get_running_loop()
    ctx = target.context()
    next_index = 0

    async def one(index: int) -> None:
        client_id = f"{prefix}-{index}"
        connack: asyncio.Future[None] = loop.create_future()
        proto: IdleTls | None = None
        try:
            async with asyncio.timeout(HELD_HANDSHAKE_S):
                _, proto = await loop.create_connection(
                    lambda: IdleTls(ctx, target.host, client_id, connack), target.host, target.port
                )
                await connack
            conns.append(proto)
            proto = None
        except (OSError, MqttError, TimeoutError, ssl.SSLError) as exc:
            errors.append(f"{client_id}: {exc!r}")
        finally:
            if proto is not None:  # failed, timed out or cancelled by the time limit
                proto.abort()

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index, next_index = next_index, next_index + 1
            await one(index)

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, count))]
    _, pending = await asyncio.wait(workers, timeout=limit_s)
    elapsed = time.perf_counter() - start
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in workers:
        if not task.cancelled() and task.exception() is not None:
            errors.append(f"worker: {task.exception()!r}")
    # A cut-short attempt was neither connected nor an error: it does not count as attempted.
    attempted = len(conns) + len(errors)
    return elapsed, attempted, not pending


async def close_idle(conns: list[IdleTls], within_s: float = 30.0) -> float:
    start = time.perf_counter()
    for conn in conns:
        conn.close()
    deadline = time.monotonic() + within_s
    while any(not c.closed for c in conns) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for conn in conns:
        if not conn.closed:
            conn.abort()
    await asyncio.sleep(0)
    return time.perf_counter() - start


def _nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def hold_connections(broker: BrokerProcess, mat: Material, s: Settings) -> dict[str, Any]:
    """The "connections" phase: N idle mTLS connections at once; broker RSS before and with all of them held."""
    n = s.held_connections
    target = Target(HOST, broker.port, mat.ca, mat.client_cert, mat.client_key)
    if _nofile() < n + 256:
        console.log(
            f"[red]open-files limit {_nofile()} is below {n:,} connections + 256: expect EMFILE errors[/red] "
            "(raise the hard limit: ulimit -Hn)"
        )
    status = console.status(f"[bold]{broker.name}[/bold]: warming up")
    conns: list[IdleTls] = []
    errors: list[str] = []
    with status:
        await warm_up(broker, mat)
        await settle(broker)
        rss_before, gen_before = rss_kb(broker.pid), rss_kb(os.getpid())
        b0, g0, t0 = cpu_seconds(broker.pid), time.process_time(), time.monotonic()

        async def progress() -> None:
            while True:
                status.update(
                    f"[bold]{broker.name}[/bold]: {len(conns):,}/{n:,} idle mTLS connections, "
                    f"{s.held_concurrency} handshakes in flight, {len(errors)} errors, "
                    f"{time.monotonic() - t0:.0f}/{s.held_limit_s:g} s; broker RSS {rss_kb(broker.pid) / 1024:.0f} MB"
                )
                await asyncio.sleep(1.0)

        ticker = asyncio.create_task(progress())
        try:
            seconds, attempted, complete = await open_idle(target, n, s.held_concurrency, s.held_limit_s, conns, errors)
            b1, g1 = cpu_seconds(broker.pid), time.process_time()
            broker.check_alive()
            status.update(f"[bold]{broker.name}[/bold]: {len(conns):,} connected; waiting for the broker to settle")
            settled_s = await settle(broker, max_s=30.0)
            await asyncio.sleep(1.0)
            rss_after, gen_after = rss_kb(broker.pid), rss_kb(os.getpid())
            held = sum(not c.closed for c in conns)
            stats = broker.broker_stats()
        finally:
            ticker.cancel()
            status.update(f"[bold]{broker.name}[/bold]: closing {len(conns):,} idle connections")
            close_s = await close_idle(conns)
        broker.check_alive()
    complete = complete and held == n
    out: dict[str, Any] = {
        "target": n,
        "attempted": attempted,
        "connected": len(conns),
        "held": held,
        "dropped": len(conns) - held,  # closed by the broker after their CONNACK, before RSS was read
        "complete": complete,
        "time_limit_s": s.held_limit_s,
        "concurrency": s.held_concurrency,
        "seconds": seconds,  # to connect all of them (or up to the time limit)
        "per_s": len(conns) / seconds if seconds else 0.0,
        "error_count": len(errors),
        "errors": errors[:5],
        "settle_s": settled_s,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_before_mb": rss_before / 1024,
        "rss_after_mb": rss_after / 1024,
        "kb_per_conn": (rss_after - rss_before) / held if held else float("nan"),
        "broker_reported": stats.get("connections") if stats else None,  # the gateway's own count, from /health
        "broker_cpu_pct": 100.0 * (b1 - b0) / seconds if seconds else None,
        "gen_cpu_pct": 100.0 * (g1 - g0) / seconds if seconds else None,
        "gen_kb_per_conn": (gen_after - gen_before) / held if held else float("nan"),
        "close_s": close_s,
    }
    console.log(
        f"{broker.name}: {held:,}/{n:,} idle mTLS connections held{'' if complete else ' [yellow](incomplete)[/]'}, "
        f"connected in {seconds:.1f} s = {out['per_s']:,.0f}/s (CPU broker {out['broker_cpu_pct'] or 0:.0f} %, "
        f"load-gen {out['gen_cpu_pct'] or 0:.0f} %); broker RSS {rss_before / 1024:.1f} → {rss_after / 1024:.1f} MB "
        f"= {out['kb_per_conn']:.1f} KB/conn; load-gen {out['gen_kb_per_conn']:.1f} KB/conn; closed in {close_s:.1f} s"
        + (f"; the broker reports {out['broker_reported']:,} connections" if out["broker_reported"] is not None else "")
    )
    if errors:
        console.log(f"[red]{broker.name}: {len(errors)} connect failures[/red], e.g. {errors[0]}")
    if not complete:
        console.log(
            f"[yellow]{broker.name}: {held:,} of {n:,} connections held "
            f"({'time limit ' + format(s.held_limit_s, 'g') + ' s reached' if held == len(conns) else 'some dropped'})"
            "[/yellow]"
        )
    return out


def goals(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The issue's memory goals, judged on the gateway's "connections" figures."""
    held = results.get("edgesim", {}).get("connections")
    if not held:
        return None
    kb = float(held["kb_per_conn"])
    measured_at = int(held["held"])
    if measured_at == GOAL_AT:
        rss_mb, projected = float(held["rss_after_mb"]), False
    else:  # what the same broker would weigh at 10,000 at the measured KB per connection
        rss_mb, projected = (held["rss_before_kb"] + kb * GOAL_AT) / 1024, True
    kb_ok = not math.isnan(kb) and kb <= GOAL_KB_PER_CONN
    rss_ok = not math.isnan(rss_mb) and rss_mb < GOAL_RSS_MB
    return {
        "kb_per_conn_goal": GOAL_KB_PER_CONN,
        "rss_mb_goal": GOAL_RSS_MB,
        "rss_goal_at": GOAL_AT,
        "measured_at": measured_at,
        "complete": bool(held["complete"]) and not held["error_count"],
        "kb_per_conn": kb,
        "rss_mb_at_goal": rss_mb,
        "rss_projected": projected,
        "kb_per_conn_met": kb_ok,
        "rss_met": rss_ok,
        "met": kb_ok and rss_ok and bool(held["complete"]) and not held["error_count"],
    }


def goals_line(g: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]NOT met[/red]"

    at = f"{g['rss_goal_at']:,}"
    rss = (
        f"projected {g['rss_mb_at_goal']:,.0f} MB at {at} from {g['measured_at']:,} connections"
        if g["rss_projected"]
        else f"{g['rss_mb_at_goal']:,.0f} MB with {at} connected"
    )
    line = (
        f"Goals: ≤ {g['kb_per_conn_goal']:g} KB of broker memory per idle mTLS connection, "
        f"< {g['rss_mb_goal']:g} MB RSS with {at} connected. edgesim: {g['kb_per_conn']:.1f} KB/conn "
        f"({mark(g['kb_per_conn_met'])}), {rss} ({mark(g['rss_met'])})"
    )
    if not g["complete"]:
        line += "; [red]not every connection was made and held[/red]"
    if g["rss_projected"]:
        line += f" — run with --connections {GOAL_AT} to measure it"
    return line + "."


# ---------------------------------------------------------------- report

# (label, path into the result, unit, higher is better; None: informational, no ratio)
ROWS: list[tuple[str, tuple[str, str], str, bool | None]] = [
    ("Fan-in QoS 0 delivered (e2e window)", ("fanin_qos0", "delivered_per_s"), "msg/s", True),
    ("Fan-in QoS 0 loss", ("fanin_qos0", "loss_pct"), "%", None),
    ("Fan-in QoS 1 delivered (e2e window)", ("fanin_qos1_e2e", "delivered_per_s"), "msg/s", True),
    ("Fan-in QoS 1 loss (e2e window)", ("fanin_qos1_e2e", "loss_pct"), "%", None),
    ("Fan-in MQTT 5 QoS 0 delivered (e2e window)", ("fanin5_qos0", "delivered_per_s"), "msg/s", True),
    ("Fan-in MQTT 5 QoS 0 + user props delivered", ("fanin5up_qos0", "delivered_per_s"), "msg/s", True),
    ("Fan-in MQTT 5 QoS 1 delivered (e2e window)", ("fanin5_qos1_e2e", "delivered_per_s"), "msg/s", True),
    ("Fan-in MQTT 5 QoS 1 + user props delivered", ("fanin5up_qos1_e2e", "delivered_per_s"), "msg/s", True),
    ("Fan-in MQTT 5 loss (all four runs, max)", ("v5", "max_loss_pct"), "%", None),
    ("Fan-in QoS 1 accepted (PUBACK window)", ("fanin_qos1", "offered_per_s"), "msg/s", None),
    ("Fan-in QoS 1 delivered (PUBACK window)", ("fanin_qos1", "delivered_per_s"), "msg/s", True),
    ("Fan-in QoS 1 loss (PUBACK window)", ("fanin_qos1", "loss_pct"), "%", None),
    ("Latency p50 @ 1,000 msg/s QoS 1", ("latency", "p50_ms"), "ms", False),
    ("Latency p99 @ 1,000 msg/s QoS 1", ("latency", "p99_ms"), "ms", False),
    ("Latency run loss", ("latency", "loss_pct"), "%", None),
    ("Broker CPU at 1,000 msg/s QoS 1", ("latency", "broker_cpu_pct"), "CPU %", False),
    ("QoS 0 flood offered", ("flood_qos0", "offered_per_s"), "msg/s", None),
    ("QoS 0 flood delivered", ("flood_qos0", "delivered_per_s"), "msg/s", True),
    ("QoS 0 flood loss", ("flood_qos0", "loss_pct"), "%", None),
    ("Peak RSS during the QoS 0 flood", ("flood_qos0", "rss_peak_kb"), "KB", False),
    ("RSS after the QoS 0 flood", ("flood_qos0", "rss_after_kb"), "KB", False),
    ("Connect rate (mTLS)", ("connect", "per_s"), "conn/s", True),
    ("Broker CPU per mTLS connect", ("connect", "broker_ms_per_connect"), "ms", False),
    ("Connect failures", ("connect", "error_count"), "", None),
    ("Memory per idle mTLS conn", ("memory", "kb_per_conn"), "KB", False),
    ("RSS idle baseline", ("memory", "rss_before_kb"), "KB", None),
    ("RSS with idle conns held", ("memory", "rss_after_kb"), "KB", None),
    # The "connections" phase ({n}: its N), on a fresh broker process.
    ("{n} idle mTLS conns: held", ("connections", "held"), "", None),
    ("{n} idle mTLS conns: connect failures", ("connections", "error_count"), "", None),
    ("{n} idle mTLS conns: time to connect all", ("connections", "seconds"), "s", False),
    ("{n} idle mTLS conns: connect rate", ("connections", "per_s"), "conn/s", True),
    ("{n} idle mTLS conns: broker RSS before", ("connections", "rss_before_mb"), "MB", None),
    ("{n} idle mTLS conns: broker RSS, all held", ("connections", "rss_after_mb"), "MB", False),
    ("{n} idle mTLS conns: memory per conn", ("connections", "kb_per_conn"), "KB", False),
    # Who was the bottleneck: 100 % is one full core (the machine has two).
    ("Broker CPU, QoS 0 window", ("fanin_qos0", "broker_cpu_pct"), "CPU %", None),
    ("Publishers' CPU, QoS 0 window", ("fanin_qos0", "gen_cpu_pct"), "CPU %", None),
    ("Subscriber CPU, QoS 0 window", ("fanin_qos0", "sub_cpu_pct"), "CPU %", None),
    ("Broker CPU, QoS 1 e2e window", ("fanin_qos1_e2e", "broker_cpu_pct"), "CPU %", None),
    ("Publishers' CPU, QoS 1 e2e window", ("fanin_qos1_e2e", "gen_cpu_pct"), "CPU %", None),
    ("Subscriber CPU, QoS 1 e2e window", ("fanin_qos1_e2e", "sub_cpu_pct"), "CPU %", None),
    ("Broker CPU, QoS 1 PUBACK window", ("fanin_qos1", "broker_cpu_pct"), "CPU %", None),
    ("Publishers' CPU, QoS 1 PUBACK window", ("fanin_qos1", "gen_cpu_pct"), "CPU %", None),
    ("Subscriber CPU, QoS 1 PUBACK window", ("fanin_qos1", "sub_cpu_pct"), "CPU %", None),
    ("Broker CPU, connects", ("connect", "broker_cpu_pct"), "CPU %", None),
    ("Load-gen CPU, connects", ("connect", "gen_cpu_pct"), "CPU %", None),
    ("Broker CPU, {n} idle conns", ("connections", "broker_cpu_pct"), "CPU %", None),
    ("Load-gen CPU, {n} idle conns", ("connections", "gen_cpu_pct"), "CPU %", None),
]


def _get(result: dict[str, Any] | None, path: tuple[str, str]) -> float | None:
    if not result or path[0] not in result:
        return None
    value = result[path[0]].get(path[1])
    return None if value is None else float(value)


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit in ("ms", "%"):
        return f"{value:,.2f}"
    if unit in ("s", "MB"):
        return f"{value:,.1f}"
    if unit == "KB" and abs(value) < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(ours: float | None, ref: float | None, higher: bool | None) -> str:
    if higher is None or ours is None or ref is None or ref == 0 or math.isnan(ours) or math.isnan(ref):
        return "—"
    ratio = ours / ref
    good = ratio >= 1 if higher else ratio <= 1
    return f"[{'green' if good else 'red'}]{ratio:.2f}x[/]"


def _incomplete(result: dict[str, Any] | None, path: tuple[str, str]) -> bool:
    """A figure from a "connections" phase that did not hold all N connections."""
    if not result or path[0] != "connections":
        return False
    return not result.get("connections", {}).get("complete", True)


def report(results: dict[str, dict[str, Any]], s: Settings, quick: bool) -> Table:
    names = [n for n in BROKERS if n in results]
    held_n = f"{s.held_connections:,}"
    notes = [
        f"* incomplete: {n} held {results[n]['connections']['held']:,} of {held_n} connections "
        f"({results[n]['connections']['error_count']:,} failures, time limit {s.held_limit_s:g} s); "
        "its figures are at that point"
        for n in names
        if _incomplete(results[n], ("connections", ""))
    ]
    has_main = any("connect" in results[n] for n in names)
    has_held = any("connections" in results[n] for n in names)
    shape = []
    if has_main or not has_held:
        shape.append(f"{s.connections} connections, {s.publishers} publishers, {s.window_s:g} s windows")
    if has_held:
        shape.append(f"{held_n} idle connections held")
    table = Table(
        title=f"edgesim broker benchmark ({'--quick' if quick else 'full'}: {', '.join(shape)}; all mTLS on {HOST})",
        caption="\n".join(notes) or None,
    )
    table.add_column("figure")
    table.add_column("unit")
    table.add_column("better")
    for name in names:
        table.add_column(name, justify="right")
    for ref in ("amqtt", "mosquitto"):
        if "edgesim" in results and ref in results:
            table.add_column(f"edgesim/{ref}", justify="right")
    for label, path, unit, higher in ROWS:
        if not any(path[0] in results[n] for n in names):
            continue  # a phase not run
        if label.startswith("Broker CPU, QoS 0"):
            table.add_section()
        values = {n: _get(results[n], path) for n in names}
        star = {n: "*" if _incomplete(results[n], path) else "" for n in names}
        cells = [label.format(n=held_n), unit, {True: "↑", False: "↓", None: ""}[higher]]
        cells += [_fmt(values[n], unit) + star[n] for n in names]
        for ref in ("amqtt", "mosquitto"):
            if "edgesim" in results and ref in results:
                ratio = _ratio(values["edgesim"], values[ref], higher)
                cells.append(ratio + ("*" if ratio != "—" and (star["edgesim"] or star[ref]) else ""))
        table.add_row(*cells)
    return table


V5_PAIRS = [
    ("QoS 0 e2e", "fanin_qos0", "fanin5_qos0", "fanin5up_qos0"),
    ("QoS 1 e2e", "fanin_qos1_e2e", "fanin5_qos1_e2e", "fanin5up_qos1_e2e"),
]


def v5_summary(result: dict[str, Any]) -> dict[str, Any] | None:
    """MQTT 5 against the same broker's MQTT 3.1.1 in the same run: delivered msg/s and their ratios."""
    if "fanin5_qos0" not in result:
        return None
    out: dict[str, Any] = {"goal_ratio": GOAL_V5_RATIO, "met": True, "statistic": "median of each variant's runs"}
    losses = []
    for label, v3_key, v5_key, up_key in V5_PAIRS:
        v3, v5, up = (_median_rate(result, key) for key in (v3_key, v5_key, up_key))
        ratios = [None if x is None or not v3 else x / v3 for x in (v5, up)]
        out[label] = {"v3": v3, "v5": v5, "v5_user_props": up, "v5_ratio": ratios[0], "v5_user_props_ratio": ratios[1]}
        best = [_get(result, (key, "delivered_per_s")) for key in (v3_key, v5_key, up_key)]
        out[label]["best_run_ratios"] = [None if x is None or not best[0] else x / best[0] for x in best[1:]]
        # Broker CPU per delivered message: steadier than msg/s on a machine the broker shares with others.
        out[label]["broker_us_per_msg"] = [_cost(result, key) for key in (v3_key, v5_key, up_key)]
        out["met"] = out["met"] and all(r is not None and r >= GOAL_V5_RATIO for r in ratios)
        losses += [float(result[k]["loss_pct"]) for k in (v5_key, up_key) if k in result]
    out["max_loss_pct"] = max(losses) if losses else None
    return out


def _median_rate(result: dict[str, Any], key: str) -> float | None:
    """The median delivered msg/s of a variant's runs. The ratios use it rather than the best run: with five short
    windows, one lucky spell of the machine (seen: 46,229 msg/s among four runs of 40,052-41,049) moved a best-run
    ratio by 12 %, and the median moves with neither a lucky nor an unlucky window."""
    runs = result.get(key, {}).get("runs")
    if not runs:
        return _get(result, (key, "delivered_per_s"))
    return float(statistics.median(run["delivered_per_s"] for run in runs))


def _cost(result: dict[str, Any], key: str) -> float | None:
    cpu, rate = _get(result, (key, "broker_cpu_pct")), _get(result, (key, "delivered_per_s"))
    return None if cpu is None or not rate else cpu / 100 / rate * 1e6


def v5_table(results: dict[str, dict[str, Any]]) -> Table | None:
    names = [n for n in BROKERS if results.get(n, {}).get("v5")]
    if not names:
        return None
    table = Table(
        title=f"MQTT 5 vs MQTT 3.1.1, same broker, same run: median msg/s of each variant's runs (goal: v5 ≥ "
        f"{GOAL_V5_RATIO:g}x v3)"
    )
    columns = ("broker", "fan-in", "v3 msg/s", "v5 msg/s", "v5/v3", "v5 + user props msg/s", "v5+props/v3",
               "best runs' ratios", "broker µs/msg v3 / v5 / v5+props (best runs)")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("broker", "fan-in") else "right")

    def ratio(value: float | None) -> str:
        if value is None:
            return "—"
        return f"[{'green' if value >= GOAL_V5_RATIO else 'red'}]{value:.2f}x[/]"

    for name in names:
        summary = results[name]["v5"]
        for label, *_ in V5_PAIRS:
            row = summary[label]
            table.add_row(
                name, label, _fmt(row["v3"], "msg/s"), _fmt(row["v5"], "msg/s"), ratio(row["v5_ratio"]),
                _fmt(row["v5_user_props"], "msg/s"), ratio(row["v5_user_props_ratio"]),
                " / ".join("—" if r is None else f"{r:.2f}x" for r in row["best_run_ratios"]),
                " / ".join("—" if c is None else f"{c:.1f}" for c in row["broker_us_per_msg"]),
            )  # fmt: skip
    return table


# ---------------------------------------------------------------- main


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def duel_connects(brokers: list[BrokerProcess], mat: Material, s: Settings, results: dict[str, dict[str, Any]]) -> None:
    """Run the connect duel on fresh processes of `brokers`; its figures replace each main phase's single storm."""
    try:
        for broker in brokers:
            if isinstance(broker, Edgesim):
                broker.extra_args = []
            broker.start()
        duel = asyncio.run(connect_duel(brokers, mat, s))
        for name, figures in duel.items():
            results[name]["connect"] = figures | {"main_phase_storm": results[name]["connect"]}
    except Exception as exc:
        console.log(f"[red]connect duel failed:[/red] {exc!r}; the main phases' single storms stand")
    finally:
        for broker in brokers:
            with contextlib.suppress(Exception):
                broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and 2 s windows: a fast sanity run")
    parser.add_argument(
        "--only",
        default=",".join(BROKERS),
        help="comma-separated subset of " + ",".join(BROKERS) + " (gateway = edgesim)",
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES) + " (see above)"
    )
    parser.add_argument(
        "--connections", type=int, metavar="N",
        help=f"idle mTLS connections held at once in the connections phase (default {FULL.held_connections:,}, "
        f"{QUICK.held_connections} with --quick; 0 skips the phase)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-limit", type=float, metavar="S",
        help=f"seconds to open them in before reporting what was reached (default {FULL.held_limit_s:g})",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every figure (and raw counts) here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (certs, configs, broker logs)")
    args = parser.parse_args(argv)
    names = [ALIASES.get(n.strip(), n.strip()) for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BROKERS))
    if unknown or not names:
        parser.error(f"--only takes {','.join(BROKERS)}; got {args.only!r}")
    names = [n for n in BROKERS if n in names]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--phases takes {','.join(PHASES)}; got {args.phases!r}")
    settings = QUICK if args.quick else FULL
    if args.connections is not None:
        if args.connections < 0:
            parser.error("--connections must be >= 0")
        settings = replace(settings, held_connections=args.connections)
    if args.connect_limit is not None:
        settings = replace(settings, held_limit_s=args.connect_limit)
    if settings.held_connections == 0:
        phases = [p for p in phases if p != "connections"]
    if not phases:
        parser.error("nothing to run: --connections 0 and no other phase")
    phases = [p for p in PHASES if p in phases]
    _raise_nofile()
    signal.signal(signal.SIGTERM, _on_sigterm)

    home = Path(tempfile.mkdtemp(prefix="edgesim-bench-"))
    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    try:
        console.log(f"preparing certificates and the registry in {home}")
        mat = prepare(home)
        made: list[BrokerProcess] = []
        for name in names:
            broker: BrokerProcess
            if name == "edgesim":
                broker = Edgesim(mat)
            elif name == "amqtt":
                broker = Amqtt(mat)
            else:
                binary = ensure_mosquitto()
                if binary is None:
                    results[name] = {"error": "mosquitto is not installed and apt-get install failed"}
                    continue
                broker = Mosquitto(mat, binary)
            results[name] = {"version": broker.version}
            made.append(broker)
            console.rule(f"{name}  ({broker.version})")
            for phase in phases:  # each phase on a fresh broker process
                if phase == "auth" and not isinstance(broker, Edgesim):
                    continue  # custom authorizers and SigV4 are edgesim's alone
                try:
                    if isinstance(broker, Edgesim):
                        broker.extra_args = auth_connects.GATEWAY_FLAGS if phase == "auth" else []
                    broker.start()
                    console.log(f"{name} listening on {HOST}:{broker.port} (pid {broker.pid}) for the {phase} phase")
                    if phase == "main":
                        results[name].update(asyncio.run(measure(broker, mat, settings)))
                        summary = v5_summary(results[name])
                        if summary is not None:
                            results[name]["v5"] = summary
                    elif phase == "auth":
                        assert isinstance(broker, Edgesim)
                        auth_connects.setup(broker.api_port)
                        count = 200 if args.quick else 1000
                        results[name]["auth"] = asyncio.run(auth_connects.measure(
                            broker.ports, mat.ca, mat.client_cert, mat.client_key, count, 10))  # fmt: skip
                    else:
                        results[name]["connections"] = asyncio.run(hold_connections(broker, mat, settings))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    failed = f"{phase} phase: {exc!r}"
                    results[name]["error"] = (
                        f"{results[name]['error']}; {failed}" if "error" in results[name] else failed
                    )
                    console.log(f"[red]{name} failed in the {phase} phase:[/red] {exc!r}")
                    console.log(f"last lines of {name}'s log:\n{broker.log_tail()}")
                finally:
                    with contextlib.suppress(Exception):
                        tail = broker.log_tail(10)
                        if tail.strip():
                            console.log(f"{name} log (tail):\n{tail}")
                    broker.stop()
        dueling = [b for b in made if "connect" in results[b.name]]
        if len(dueling) > 1 and settings.connect_runs > 1:
            console.rule("connect duel: " + ", ".join(b.name for b in dueling) + " up at once, storms taking turns")
            duel_connects(dueling, mat, settings, results)
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: brokers stopped[/yellow]")
    finally:
        if args.keep:
            console.log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    target = goals(results)
    if target is not None:
        results["edgesim"]["connections"]["goals"] = target
    if results:
        # Wide enough for every column even when stdout is not a terminal.
        wide = Console(width=max(console.width, 150))
        if any(key in res for res in results.values() for key in ("connect", "connections", "error")):
            wide.print(report(results, settings, args.quick))
        if target is not None:
            wide.print(goals_line(target))
        versions = v5_table(results)
        if versions is not None:
            wide.print(versions)
        if "auth" in results.get("edgesim", {}):
            wide.print("connects/s by authentication method (edgesim):")
            for line in auth_connects.summary_lines(results["edgesim"]["auth"]):
                wide.print("  " + line)
        for name, res in results.items():
            if "error" in res:
                console.print(f"[red]{name}: {res['error']}[/red]")
    write_json(args.json, args.quick, settings, results, console)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
