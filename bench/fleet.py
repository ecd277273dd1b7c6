"""Fleet simulator benchmark: the simulator (devices/) at scale against the gateway, flat out against mosquitto, and
through the rules engine into Kinesis.

usage: python bench/fleet.py [--quick] [--only scale,max,rules] [--json out.json] [--keep]

The simulator runs in a child process of its own (`python bench/fleet.py simulate ...`: devices.fleet.run_in_process
on one event loop), so its RSS and CPU are measured apart from this process and from the server. Servers run on
127.0.0.1 ephemeral ports, one at a time: the edgesim gateway for (a) and (c), then mosquitto for (b).

(a) scale: 10,000 devices (1,000 with --quick), QoS 1 every 10 s, over mTLS with ONE certificate attached to every
    thing (provisioned through the gateway's API with the simulator's Provisioner, shared_cert=True); connect ramp
    400/s. Time to connect all, simulator RSS per device, CPU while steady (1,000 msg/s), acked == sent, PUBACK
    latency, gateway RSS and CPU.
(b) max: 100 devices publishing QoS 1 every 2 ms (so the simulator is the bottleneck) against mosquitto over mTLS,
    next to bench/mqttload.py's raw asyncio client with the same shape (100 connections, QoS 1, <= 10 un-PUBACKed
    each). Goal: simulator >= 0.5x the raw client's PUBACKed msg/s.
(c) rules: 1,000 devices x 1 msg/s for 60 s (200 for 10 s with --quick) against the gateway with two topic rules:
    `SELECT * FROM 'dt/#'` into a Kinesis stream (the PUBACK waits for the durable commit) and a republish of the hot
    readings. Publish -> PUBACK p50/p99, acked == sent, records in the stream == acked (read back with GetRecords).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from broker import (
    HOST,
    ROOT,
    Edgesim,
    Material,
    Mosquitto,
    _on_sigterm,
    _raise_nofile,
    ensure_mosquitto,
    prepare,
    rss_kb,
)
from common import stop_and_clean, write_json
from mqttload import HEADER, _publish_qos1_window, _stop_tasks, close_all, connect_many, cpu_seconds
from mqttload import Target as LoadTarget
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from shadow import _wait_idle
from sinksload import create_stream, kinesis_read

from devices.device import Target
from devices.figures import Figures
from devices.fleet import FleetOptions, run_in_process
from devices.payload import PayloadBuilder
from devices.provision import DeviceFiles, Provisioner, iot_client
from devices.spec import DeviceSpec, FleetSpec, expand, parse_fleet
from devices.view import summary

THIS_FILE = str(Path(__file__).resolve())
PARTS = ("scale", "max", "rules")
STREAM = "bench-fleet"
ROLE = "arn:aws:iam::123456789012:role/bench"

console = Console()


@dataclass(frozen=True)
class Settings:
    scale_devices: int  # (a)
    scale_interval_s: float
    connect_rate: float  # per second, the simulator's ramp (a and c)
    fallback_rate: float  # (a) again with this ramp if the fleet did not get fully connected
    stall_s: float  # (a) give up on a ramp when no device has connected for this long
    steady_s: float  # (a) CPU / rate window once every device is connected
    max_devices: int  # (b)
    max_interval_s: float
    raw_window: int  # (b) un-PUBACKed messages per raw connection
    max_warmup_s: float
    max_s: float
    max_rounds: int  # (b) simulator and raw client alternate this many times; each figure is the median round
    rules_devices: int  # (c)
    rules_interval_s: float
    rules_s: float
    shards: int


FULL = Settings(10_000, 10.0, 400.0, 80.0, 20.0, 20.0, 100, 0.002, 10, 2.0, 10.0, 3, 1_000, 1.0, 60.0, 8)
QUICK = Settings(1_000, 10.0, 400.0, 80.0, 20.0, 5.0, 100, 0.002, 10, 1.0, 3.0, 1, 200, 1.0, 10.0, 8)


# ---------------------------------------------------------------- fleet files

# Two device types, each with a small JSON payload (~110 bytes) from a couple of profiles.
FLEET = Template("""\
fleet: $fleet
seed: 11
device_types:
  - name: sensor
    count: $sensors
    thing_name: "{fleet}-sensor-{i:05d}"
    interval: $interval
    jitter: $jitter
    qos: 1
    payload:
      device: "{thing_name}"
      seq: "{seq}"
      ts: "{timestamp}"
      temperature: {profile: sine, mean: 24, amplitude: 6, period: 120, noise: 0.5, decimals: 1}
      humidity: {profile: gaussian, mean: 45, stddev: 5, min: 0, max: 100, decimals: 1}
  - name: meter
    count: $meters
    thing_name: "{fleet}-meter-{i:05d}"
    interval: $interval
    jitter: $jitter
    qos: 1
    payload:
      device: "{thing_name}"
      seq: "{seq}"
      ts: "{timestamp}"
      power: {profile: random_walk, start: 300, step: 25, min: 0, max: 900, decimals: 0}
      battery: {profile: battery, start: 90, drain_per_hour: 5, recharge_at: 10, decimals: 0}
""")


def fleet_text(fleet: str, devices: int, interval_s: float, jitter: float) -> str:
    return FLEET.substitute(
        fleet=fleet, sensors=devices - devices // 2, meters=devices // 2, interval=interval_s, jitter=jitter
    )


def payload_bytes(device: DeviceSpec) -> int:
    """Size of one of this device's messages, so the raw client in (b) sends the same."""
    doc = PayloadBuilder(device.payload, device.seed).build(0.0, {**device.variables(), "seq": 1, "timestamp": 0})
    return len(json.dumps(doc, separators=(",", ":")).encode())


# ---------------------------------------------------------------- the simulator process


def simulate_main(argv: list[str]) -> int:
    """Child process: run a fleet file with devices.fleet.run_in_process until SIGTERM; status in a JSON file that
    is rewritten every tick, the final summary on stdout."""
    parser = argparse.ArgumentParser(prog="fleet.py simulate")
    parser.add_argument("fleet", type=Path)
    parser.add_argument("target")
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--connect-rate", type=float, required=True)
    parser.add_argument("--status", type=Path, required=True)
    args = parser.parse_args(argv)
    me = os.getpid()
    marks: dict[str, float] = {"rss_baseline_kb": rss_kb(me)}  # everything imported, no device yet
    spec = parse_fleet(args.fleet.read_text(), str(args.fleet))
    devices = expand(spec)
    marks["rss_specs_kb"] = rss_kb(me)
    shared = DeviceFiles(args.cert, args.key)
    files = {d.thing_name: shared for d in devices}
    options = FleetOptions(Target.parse(args.target), args.ca, args.connect_rate, files=files)
    tmp = args.status.with_suffix(".tmp")
    elapsed = 0.0

    def on_figures(figures: Figures, seconds: float) -> None:
        nonlocal elapsed
        elapsed = seconds
        if "built_s" not in marks:  # first tick: every SimDevice exists, none has tried to connect yet
            marks["built_s"] = seconds
            marks["rss_built_kb"] = rss_kb(me)
            marks["cpu_built_s"] = time.process_time()
        if "connected_s" not in marks and figures.devices and figures.gauges["connected"] >= figures.devices:
            marks["connected_s"] = seconds
            marks["rss_connected_kb"] = rss_kb(me)
            marks["cpu_connected_s"] = time.process_time()
        tmp.write_text(json.dumps({**summary(figures, seconds), **marks}))
        os.replace(tmp, args.status)

    final = asyncio.run(run_in_process(devices, options, on_figures))
    print(json.dumps({**summary(final, elapsed), **marks}), flush=True)
    return 0


class Simulator:
    """This bench's handle on one simulator child process."""

    def __init__(self, home: Path, name: str) -> None:
        self.name = name
        self.fleet_path = home / f"{name}.yaml"
        self.status_path = home / f"sim-{name}.status.json"
        self.log_path = home / f"sim-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, text: str, target: str, ca: Path, files: DeviceFiles, connect_rate: float) -> None:
        self.fleet_path.write_text(text)
        self.status_path.unlink(missing_ok=True)
        argv = [
            sys.executable, THIS_FILE, "simulate", str(self.fleet_path), target,
            "--ca", str(ca), "--cert", str(files.cert), "--key", str(files.key),
            "--connect-rate", str(connect_rate), "--status", str(self.status_path),
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child; closed below
        try:
            # Its own session: a Ctrl-C reaches this bench only, which then stops the child (see stop/kill).
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        finally:
            log.close()

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (OSError, ValueError):
            return {}

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"simulator {self.name} exited (code {code}):\n{self.log_tail()}")

    def wait_for(self, mark: str, timeout_s: float) -> dict[str, Any]:
        """Poll the status until it has `mark` (built_s: devices built; connected_s: all connected); that status."""
        deadline = time.monotonic() + timeout_s
        with console.status(f"[bold]simulator[/bold]: {self.name} starting") as spinner:
            while time.monotonic() < deadline:
                self.check_alive()
                st = self.status()
                if mark in st:
                    return st
                if st:
                    spinner.update(
                        f"[bold]simulator[/bold]: {self.name}: connected {st['connected']:,} / {st['devices']:,} "
                        f"(connecting {st['connecting']:,}, failed {st['failed']:,}; errors {st['errors'] or 'none'})"
                    )
                time.sleep(0.1)
        st = self.status()
        raise RuntimeError(
            f"simulator {self.name}: no {mark} after {timeout_s:g} s: {st.get('connected', 0):,} of "
            f"{st.get('devices', '?')} devices connected (errors {st.get('errors')}):\n{self.log_tail()}"
        )

    def wait_connected(self, timeout_s: float, stall_s: float) -> tuple[dict[str, Any], str | None]:
        """Until every device is connected: (status, None); or (status, why not) after `timeout_s`, or once no
        device has completed a connect for `stall_s` while some are still unconnected."""
        start = time.monotonic()
        connects, grew = -1, start
        with console.status(f"[bold]simulator[/bold]: {self.name} connecting") as spinner:
            while True:
                self.check_alive()
                st = self.status()
                now = time.monotonic()
                if "connected_s" in st:
                    return st, None
                if st.get("connects", 0) > connects:
                    connects, grew = st["connects"], now
                if now - grew > stall_s:
                    return st, f"no new connection for {stall_s:g} s, after {now - start:.0f} s"
                if now - start > timeout_s:
                    return st, f"not all connected after {timeout_s:g} s"
                spinner.update(
                    f"[bold]simulator[/bold]: {self.name}: connected {st['connected']:,} / {st['devices']:,} "
                    f"(connecting {st['connecting']:,}, backing off {st['failed']:,}; errors {st['errors'] or 'none'})"
                )
                time.sleep(0.2)

    def stop(self, timeout_s: float = 180.0) -> dict[str, Any]:
        """SIGTERM (the fleet drains un-PUBACKed messages and disconnects), then the final summary.

        An overloaded simulator can lose the signal: asyncio's self-pipe is full, so the wakeup byte is dropped
        ("Exception ignored when trying to write to the signal wakeup fd" in its log). SIGTERM is therefore repeated
        every 5 s until the process exits; `stop_signals` in the summary says how many it took."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        signals = 0
        while True:
            self.proc.send_signal(signal.SIGTERM)
            signals += 1
            try:
                out, _ = self.proc.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"simulator {self.name} did not stop within {timeout_s:g} s") from None
        if signals > 1:
            console.log(f"[yellow]simulator {self.name}: took {signals} SIGTERMs to stop (signal lost under load)[/]")
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            return {**json.loads(lines[-1]), "stop_signals": signals}
        except (IndexError, ValueError):
            raise RuntimeError(
                f"simulator {self.name}: no summary (code {self.proc.returncode}):\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """Stop without waiting for a summary (after an error or Ctrl-C): SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def provision(endpoint: str, spec: FleetSpec, devices: list[DeviceSpec], certs: Path) -> tuple[DeviceFiles, float]:
    """Things, one shared certificate and the fleet's policy through the gateway's API: (cert files, seconds)."""
    provisioner = Provisioner(iot_client(endpoint), spec, certs, shared_cert=True)
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"provisioning {len(devices):,} things", total=len(devices))
        files = provisioner.provision(devices, lambda n: progress.advance(task, n), workers=8)
    seconds = time.perf_counter() - start
    console.log(f"provisioned {len(devices):,} things with one shared certificate in {seconds:.1f} s")
    return files[devices[0].thing_name], seconds


def _final_log(name: str, final: dict[str, Any]) -> None:
    lat = final["puback_ms"]
    console.log(
        f"{name}: sent {final['sent']:,}, acked {final['acked']:,}; PUBACK p50 {lat['p50']:.2f} ms, p99 "
        f"{lat['p99']:.2f} ms, max {lat['max']:.2f} ms; connects {final['connects']:,}, losses "
        f"{final['disconnects']:,}; errors {final['errors'] or 'none'}"
    )


# ---------------------------------------------------------------- (a) 10,000 devices from one process


def measure_scale(gw: Edgesim, mat: Material, home: Path, s: Settings) -> dict[str, Any]:
    """(a) with the configured ramp; if the fleet does not get fully connected, that attempt is recorded as it went
    and the same fleet runs again with `fallback_rate`, so the steady figures at this scale are still measured."""
    n = s.scale_devices
    text = fleet_text("scale", n, s.scale_interval_s, 0.1)
    spec = parse_fleet(text, "scale.yaml")
    files, provision_s = provision(f"http://{HOST}:{gw.api_port}", spec, expand(spec), home / "fleet-certs")
    out: dict[str, Any] = {"devices": n, "provision_s": provision_s, "attempts": []}
    for rate in (s.connect_rate, s.fallback_rate):
        _wait_idle(gw.pid)
        attempt = scale_attempt(gw, mat, home, s, text, files, rate)
        out["attempts"].append(attempt)
        if attempt["complete"] or rate == s.fallback_rate:
            break
        console.log(
            f"[red]scale: with --connect-rate {rate:g} only {attempt['connected']:,} of {n:,} devices connected "
            f"({attempt['why']}); connect errors {attempt['final']['errors']}[/red]; "
            f"running again with --connect-rate {s.fallback_rate:g}"
        )
    return out


def scale_attempt(
    gw: Edgesim, mat: Material, home: Path, s: Settings, text: str, files: DeviceFiles, rate: float
) -> dict[str, Any]:
    n = s.scale_devices
    sim = Simulator(home, f"scale-{rate:g}")
    gw_rss_before = rss_kb(gw.pid)
    out: dict[str, Any] = {"connect_rate": rate, "gw_rss_before_kb": gw_rss_before}
    try:
        sim.start(text, f"mqtts://{HOST}:{gw.port}", mat.ca, files, rate)
        sim.wait_for("built_s", 120)
        c0, g0, t0 = cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
        st, why = sim.wait_connected(n / rate + 60, s.stall_s)
        c1, g1, t1 = cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
        out |= {
            "complete": why is None,
            "why": why,
            "connected": st["connected"],
            "build_s": st["built_s"],
            "waited_s": t1 - t0,
            "connect_gw_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
            "connect_sim_cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
            "sim_rss_baseline_kb": st["rss_baseline_kb"],
            "sim_rss_specs_kb": st["rss_specs_kb"],
            "sim_rss_built_kb": st["rss_built_kb"],
            "kb_per_device_spec": (st["rss_specs_kb"] - st["rss_baseline_kb"]) / n,
            "kb_per_device_sim": (st["rss_built_kb"] - st["rss_specs_kb"]) / n,
        }
        if why is None:
            connect_s = st["connected_s"] - st["built_s"]
            out |= {
                "connect_s": connect_s,
                "connect_per_s": n / connect_s,
                # the child's own clock: from its first tick to its last connect
                "connect_sim_cpu_pct": 100.0 * (st["cpu_connected_s"] - st["cpu_built_s"]) / connect_s,
                "sim_rss_connected_kb": st["rss_connected_kb"],
                "kb_per_device": (st["rss_connected_kb"] - st["rss_baseline_kb"]) / n,
                "kb_per_device_conn": (st["rss_connected_kb"] - st["rss_built_kb"]) / n,
            }
            console.log(
                f"scale: {n:,} SimDevices built in {st['built_s']:.2f} s, all connected {connect_s:.1f} s later "
                f"({n / connect_s:,.0f}/s); simulator RSS {st['rss_baseline_kb'] / 1024:.0f} → "
                f"{st['rss_connected_kb'] / 1024:.0f} MB"
            )
            time.sleep(2.0)  # let the last connects' first publishes and the gateway settle
            out["gw_rss_connected_kb"] = gw_rss_connected = rss_kb(gw.pid)
            with console.status(f"[bold]simulator[/bold]: {n:,} devices steady, {s.steady_s:g} s window"):
                s0, c2, g2, t2 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
                time.sleep(s.steady_s)
                s1, c3, g3, t3 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
            sim_rss_steady = rss_kb(sim.pid)
            window = s1["elapsed_s"] - s0["elapsed_s"]
            out |= {
                "sim_rss_steady_kb": sim_rss_steady,
                "kb_per_device_steady": (sim_rss_steady - st["rss_baseline_kb"]) / n,
                "steady_s": window,
                "steady_acked_per_s": (s1["acked"] - s0["acked"]) / window,
                "steady_sim_cpu_pct": 100.0 * (c3 - c2) / (t3 - t2),
                "steady_gw_cpu_pct": 100.0 * (g3 - g2) / (t3 - t2),
                "gw_rss_steady_kb": rss_kb(gw.pid),
                "gw_kb_per_conn": (gw_rss_connected - gw_rss_before) / n,
            }
        else:
            out |= {"sim_rss_partial_kb": rss_kb(sim.pid), "gw_rss_partial_kb": rss_kb(gw.pid)}
        sim.check_alive()
        with console.status(f"[bold]simulator[/bold]: stopping {n:,} devices"):
            stop_t = time.perf_counter()
            out["final"] = sim.stop()
            out["stop_s"] = time.perf_counter() - stop_t
    finally:
        sim.kill()
    _final_log(f"scale (ramp {rate:g}/s)", out["final"])
    if out["complete"]:
        console.log(
            f"scale: steady {out['steady_acked_per_s']:,.0f} msg/s; CPU simulator {out['steady_sim_cpu_pct']:.0f} %, "
            f"gateway {out['steady_gw_cpu_pct']:.0f} %; {out['kb_per_device']:.1f} KB/device in the simulator "
            f"(spec {out['kb_per_device_spec']:.1f}, SimDevice {out['kb_per_device_sim']:.1f}, connection "
            f"{out['kb_per_device_conn']:.1f}); gateway RSS {out['gw_rss_connected_kb'] / 1024:.0f} MB "
            f"({out['gw_kb_per_conn']:.1f} KB/conn); stopped in {out['stop_s']:.1f} s"
        )
    return out


# ---------------------------------------------------------------- (b) max publish rate against mosquitto


async def raw_qos1(target: LoadTarget, broker_pid: int, s: Settings, payload_size: int) -> dict[str, Any]:
    """bench/mqttload.py's raw client, the same shape as the simulator: QoS 1, <= raw_window un-PUBACKed each."""
    n = s.max_devices
    ids = [f"raw-{i}" for i in range(n)]
    clients, errors, _ = await connect_many(target.host, target.port, target.context(), ids, 50)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} raw clients failed to connect, e.g. {errors[0]}")
    stop = asyncio.Event()
    acked, unacked = [0] * n, [0] * n
    pad = b"x" * max(0, payload_size - HEADER.size)
    tasks = [
        asyncio.create_task(
            _publish_qos1_window(c, i, f"dt/raw/{i}/telemetry", pad, s.raw_window, stop, acked, unacked)
        )
        for i, c in enumerate(clients)
    ]
    try:
        await asyncio.sleep(s.max_warmup_s)
        a0, g0, b0, t0 = sum(acked), time.process_time(), cpu_seconds(broker_pid), time.perf_counter()
        await asyncio.sleep(s.max_s)
        a1, g1, b1, t1 = sum(acked), time.process_time(), cpu_seconds(broker_pid), time.perf_counter()
        stop.set()
        await _stop_tasks(tasks, 15, errors, "still waiting for PUBACKs")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(clients)
    return {
        "acked_per_s": (a1 - a0) / (t1 - t0),
        "gen_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
        "broker_cpu_pct": 100.0 * (b1 - b0) / (t1 - t0),
        "acked": sum(acked),
        "unacked": sum(unacked),
        "errors": errors[:5],
        "error_count": len(errors),
    }


def _simulator_round(broker: Mosquitto, mat: Material, home: Path, s: Settings, text: str, n: int) -> dict[str, Any]:
    sim = Simulator(home, f"max-{n}")
    try:
        sim.start(text, f"mqtts://{HOST}:{broker.port}", mat.ca, DeviceFiles(mat.client_cert, mat.client_key), 0)
        sim.wait_for("connected_s", 60)
        with console.status(f"[bold]simulator[/bold]: {s.max_devices} devices flat out, {s.max_s:g} s window"):
            time.sleep(s.max_warmup_s)
            s0, c0, b0, t0 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(broker.pid), time.perf_counter()
            time.sleep(s.max_s)
            s1, c1, b1, t1 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(broker.pid), time.perf_counter()
        sim.check_alive()
        final = sim.stop()
    finally:
        sim.kill()
    _final_log("max", final)
    return {
        "acked_per_s": (s1["acked"] - s0["acked"]) / (s1["elapsed_s"] - s0["elapsed_s"]),
        "gen_cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
        "broker_cpu_pct": 100.0 * (b1 - b0) / (t1 - t0),
        "sent": final["sent"],
        "acked": final["acked"],
        "puback_ms": final["puback_ms"],
        "error_count": sum(final["errors"].values()),
        "errors": final["errors"],
    }


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate, with every round's rate alongside."""
    ordered = sorted(rounds, key=lambda r: r["acked_per_s"])
    return {**ordered[len(ordered) // 2], "rounds": [r["acked_per_s"] for r in rounds]}


def measure_max(mat: Material, home: Path, s: Settings) -> dict[str, Any]:
    """Simulator and raw client in alternating rounds (sim, raw, sim, raw, ...), each figure the median round: the
    machine's speed drifts over a run (other tenants, frequency), and alternating spreads that over both."""
    binary = ensure_mosquitto()
    if binary is None:
        raise RuntimeError("mosquitto is not installed and apt-get install failed")
    broker = Mosquitto(mat, binary)
    n = s.max_devices
    text = fleet_text("max", n, s.max_interval_s, 0.0)
    size = payload_bytes(expand(parse_fleet(text, "max.yaml"))[0])
    out: dict[str, Any] = {"mosquitto": broker.version, "payload_bytes": size, "rounds": s.max_rounds}
    sims: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    try:
        broker.start()
        console.log(f"{broker.version} on {HOST}:{broker.port} (mTLS, pid {broker.pid}); payload {size} bytes")
        target = LoadTarget(HOST, broker.port, mat.ca, mat.client_cert, mat.client_key)
        for round_ in range(s.max_rounds):
            sims.append(_simulator_round(broker, mat, home, s, text, round_))
            _wait_idle(broker.pid)
            console.log(f"raw client: {n} connections, QoS 1, <= {s.raw_window} un-PUBACKed each, {s.max_s:g} s window")
            raws.append(asyncio.run(raw_qos1(target, broker.pid, s, size)))
            _wait_idle(broker.pid)
            console.log(
                f"max round {round_ + 1}/{s.max_rounds}: simulator {sims[-1]['acked_per_s']:,.0f} msg/s, "
                f"raw {raws[-1]['acked_per_s']:,.0f} msg/s ({sims[-1]['acked_per_s'] / raws[-1]['acked_per_s']:.2f}x)"
            )
    finally:
        with contextlib.suppress(Exception):
            tail = broker.log_tail(10)
            if tail.strip():
                console.log(f"mosquitto log (tail):\n{tail}")
        broker.stop()
    out["simulator"], out["raw"] = _median_round(sims), _median_round(raws)
    for who in ("simulator", "raw"):
        r = out[who]
        r["msgs_per_cpu_s"] = r["acked_per_s"] / (r["gen_cpu_pct"] / 100.0) if r["gen_cpu_pct"] else float("nan")
    out["simulator"]["sent"] = sum(r["sent"] for r in sims)
    out["simulator"]["acked"] = sum(r["acked"] for r in sims)
    out["simulator"]["error_count"] = sum(r["error_count"] for r in sims)
    out["ratio"] = out["simulator"]["acked_per_s"] / out["raw"]["acked_per_s"]
    out["round_ratios"] = [a["acked_per_s"] / b["acked_per_s"] for a, b in zip(sims, raws, strict=True)]
    return out


# ---------------------------------------------------------------- (c) rules on: PUBACK after the Kinesis commit


def _record_key(data: bytes, _arrival: Any) -> tuple[str, str]:
    doc = json.loads(data)
    return str(doc["device"]), str(doc["seq"])


def install_rules(endpoint: str, shards: int) -> None:
    """(c)'s rules: every message into a Kinesis stream (durable, so the PUBACK waits), hot ones republished."""
    create_stream(endpoint, STREAM, shards)
    iot = iot_client(endpoint)
    iot.create_topic_rule(
        ruleName="bench_fleet_kinesis",
        topicRulePayload={
            "sql": "SELECT * FROM 'dt/#'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"kinesis": {"roleArn": ROLE, "streamName": STREAM}}],
        },
    )
    iot.create_topic_rule(
        ruleName="bench_fleet_hot",
        topicRulePayload={
            "sql": "SELECT device, temperature FROM 'dt/#' WHERE temperature > 28",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"republish": {"roleArn": ROLE, "topic": "alerts/${topic(4)}", "qos": 0}}],
        },
    )


def measure_rules(gw: Edgesim, mat: Material, home: Path, s: Settings) -> dict[str, Any]:
    endpoint = f"http://{HOST}:{gw.api_port}"
    n = s.rules_devices
    install_rules(endpoint, s.shards)
    text = fleet_text("rules", n, s.rules_interval_s, 0.1)
    spec = parse_fleet(text, "rules.yaml")
    files, _ = provision(endpoint, spec, expand(spec), home / "fleet-certs")
    _wait_idle(gw.pid)
    before = gw.broker_stats()
    sim = Simulator(home, "rules")
    try:
        sim.start(text, f"mqtts://{HOST}:{gw.port}", mat.ca, files, s.connect_rate)
        sim.wait_for("connected_s", n / s.connect_rate * 3 + 60)
        with console.status(f"[bold]simulator[/bold]: {n:,} devices x 1 msg/s through the rules, {s.rules_s:g} s"):
            s0, c0, g0, t0 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
            time.sleep(s.rules_s)
            s1, c1, g1, t1 = sim.status(), cpu_seconds(sim.pid), cpu_seconds(gw.pid), time.perf_counter()
        sim.check_alive()
        final = sim.stop()
    finally:
        sim.kill()
    _final_log("rules", final)
    after = gw.broker_stats()
    with console.status("[bold]edgesim[/bold]: reading the stream back"):
        read = kinesis_read(endpoint, STREAM, gw.pid, _record_key, threads=4)
    keys = Counter(read.values)
    out = {
        "devices": n,
        "seconds": t1 - t0,
        "acked_per_s": (s1["acked"] - s0["acked"]) / (s1["elapsed_s"] - s0["elapsed_s"]),
        "sent": final["sent"],
        "acked": final["acked"],
        "puback_ms": final["puback_ms"],
        "errors": final["errors"],
        "in_stream": read.records,
        "unique_in_stream": len(keys),
        "duplicates": read.records - len(keys),
        "read_errors": read.call_errors,
        "gw_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
        "sim_cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
        "gw_rss_kb": rss_kb(gw.pid),
        "gateway_stats": {
            k: int(v) - int(before.get(k, 0))
            for k, v in (after or {}).items()
            if before is not None and isinstance(v, int) and k != "connections"
        },
    }
    console.log(
        f"rules: {out['acked_per_s']:,.0f} msg/s; stream holds {out['in_stream']:,} records "
        f"({out['unique_in_stream']:,} unique, {out['duplicates']} duplicates) for {out['acked']:,} acked; "
        f"CPU gateway {out['gw_cpu_pct']:.0f} %, simulator {out['sim_cpu_pct']:.0f} %; "
        f"gateway counters {out['gateway_stats']}"
    )
    return out


# ---------------------------------------------------------------- report


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _check(ok: bool, text: str) -> str:
    return f"[{'green' if ok else 'red'}]{text}[/]"


Row = tuple[str, str, str, str, str, str]  # figure, unit, simulator, reference, ratio, goal


def rows_scale(r: dict[str, Any], s: Settings) -> list[Row]:
    n = r["devices"]
    rows: list[Row] = [("Provision things (API, shared cert)", "s", _num(r["provision_s"], 1), "", "", "")]
    for a in r["attempts"]:
        rate = a["connect_rate"]
        f = a["final"]
        lat = f["puback_ms"]
        errors = sum(f["errors"].values())
        rows.append((f"[bold]--connect-rate {rate:g}[/bold]", "", "", "", "", ""))
        rows.append(("Build SimDevices (before connecting)", "s", _num(a["build_s"], 2), "", "", ""))
        if not a["complete"]:
            rows += [
                ("Connected when the bench gave up", "devices", f"{a['connected']:,} / {n:,}", "", "",
                 _check(False, "all")),
                ("Why", "", a["why"], "", "", ""),
                ("Connect errors (simulator)", "", ", ".join(f"{k} {v:,}" for k, v in f["errors"].items()) or "0",
                 "", "", _check(errors == 0, "0")),
                ("CPU while trying: simulator / gateway", "CPU %",
                 f"{_num(a['connect_sim_cpu_pct'])} / {_num(a['connect_gw_cpu_pct'])}", "", "", ""),
                ("Simulator / gateway RSS when the bench gave up", "MB",
                 f"{_num(a['sim_rss_partial_kb'] / 1024)} / {_num(a['gw_rss_partial_kb'] / 1024)}", "", "", ""),
                ("Sent / acked (the connected devices)", "msgs", f"{f['sent']:,} / {f['acked']:,}", "", "",
                 _check(f["sent"] == f["acked"], "acked == sent")),
                ("Stop (drain + DISCONNECT all)", "s", _num(a["stop_s"], 1), "", "", ""),
            ]  # fmt: skip
            continue
        expected = n / s.scale_interval_s
        rate_ok = abs(a["steady_acked_per_s"] - expected) <= 0.05 * expected
        rows += [
            ("Time to connect all", "s", _num(a["connect_s"], 1), "", "", f"≈ {n / rate:,.0f} (ramp)"),
            ("Connect rate", "conn/s", _num(a["connect_per_s"]), "", "", f"{rate:,.0f}"),
            ("CPU while connecting: simulator / gateway", "CPU %",
             f"{_num(a['connect_sim_cpu_pct'])} / {_num(a['connect_gw_cpu_pct'])}", "", "", ""),
            ("Simulator RSS per device (connected - baseline)", "KB", _num(a["kb_per_device"], 1), "", "", ""),
            ("  of which: fleet spec (expand)", "KB", _num(a["kb_per_device_spec"], 1), "", "", ""),
            ("  of which: SimDevice + MQTT client", "KB", _num(a["kb_per_device_sim"], 1), "", "", ""),
            ("  of which: connection (socket, TLS)", "KB", _num(a["kb_per_device_conn"], 1), "", "", ""),
            ("Simulator RSS per device after steady window", "KB", _num(a["kb_per_device_steady"], 1), "", "", ""),
            ("Simulator RSS baseline → all connected", "MB",
             f"{_num(a['sim_rss_baseline_kb'] / 1024)} → {_num(a['sim_rss_connected_kb'] / 1024)}", "", "", ""),
            ("Publish rate while steady (PUBACKed)", "msg/s", _num(a["steady_acked_per_s"]), "", "",
             _check(rate_ok, f"{expected:,.0f}")),
            ("Simulator CPU while steady", "CPU %", _num(a["steady_sim_cpu_pct"]), "", "", ""),
            ("Sent / acked", "msgs", f"{f['sent']:,} / {f['acked']:,}", "", "",
             _check(f["sent"] == f["acked"], "acked == sent")),
            ("Publish → PUBACK p50 / p99 (whole run)", "ms", f"{lat['p50']:.2f} / {lat['p99']:.2f}", "", "", ""),
            ("Errors (simulator)", "", ", ".join(f"{k} {v:,}" for k, v in f["errors"].items()) or "0", "", "",
             _check(errors == 0, "0")),
            ("Gateway RSS idle → all connected", "MB",
             f"{_num(a['gw_rss_before_kb'] / 1024)} → {_num(a['gw_rss_connected_kb'] / 1024)}", "", "", ""),
            ("Gateway RSS per connection", "KB", _num(a["gw_kb_per_conn"], 1), "", "", ""),
            ("Gateway CPU while steady", "CPU %", _num(a["steady_gw_cpu_pct"]), "", "", ""),
            ("Stop (drain + DISCONNECT all)", "s", _num(a["stop_s"], 1), "", "", ""),
        ]  # fmt: skip
    return rows


def rows_max(r: dict[str, Any]) -> list[Row]:
    sim, raw = r["simulator"], r["raw"]
    ratio = r["ratio"]
    rounds = " / ".join(f"{x:.2f}" for x in r["round_ratios"])
    return [
        (f"QoS 1 publish rate (PUBACKed), median of {r['rounds']} alternating rounds", "msg/s",
         _num(sim["acked_per_s"]), _num(raw["acked_per_s"]), _check(ratio >= 0.5, f"{ratio:.2f}x"), "≥ 0.5x"),
        ("  ratio in each round", "", "", "", rounds, ""),
        ("Load generator CPU", "CPU %", _num(sim["gen_cpu_pct"]), _num(raw["gen_cpu_pct"]), "", ""),
        ("PUBACKed msgs per load-gen CPU second", "msg/s", _num(sim["msgs_per_cpu_s"]), _num(raw["msgs_per_cpu_s"]),
         f"{sim['msgs_per_cpu_s'] / raw['msgs_per_cpu_s']:.2f}x", ""),
        ("mosquitto CPU", "CPU %", _num(sim["broker_cpu_pct"]), _num(raw["broker_cpu_pct"]), "", ""),
        ("Simulator sent / acked (every round)", "msgs", f"{sim['sent']:,} / {sim['acked']:,}", "", "",
         _check(sim["sent"] == sim["acked"], "acked == sent")),
        ("Simulator publish → PUBACK p50 / p99", "ms",
         f"{sim['puback_ms']['p50']:.2f} / {sim['puback_ms']['p99']:.2f}", "", "", ""),
        ("Errors", "", _num(sim["error_count"]), _num(raw["error_count"]), "", _check(sim["error_count"] == 0, "0")),
    ]  # fmt: skip


def rows_rules(r: dict[str, Any], s: Settings) -> list[Row]:
    lat = r["puback_ms"]
    expected = r["devices"] / s.rules_interval_s
    errors = sum(r["errors"].values())
    in_stream_ok = r["unique_in_stream"] == r["acked"] and r["duplicates"] == 0
    return [
        ("Publish rate (PUBACKed)", "msg/s", _num(r["acked_per_s"]), "", "",
         _check(abs(r["acked_per_s"] - expected) <= 0.05 * expected, f"{expected:,.0f}")),
        ("Publish → PUBACK p50 / p99", "ms", f"{lat['p50']:.2f} / {lat['p99']:.2f}", "", "", ""),
        ("Publish → PUBACK max", "ms", f"{lat['max']:.2f}", "", "", ""),
        ("Sent / acked", "msgs", f"{r['sent']:,} / {r['acked']:,}", "", "",
         _check(r["sent"] == r["acked"], "acked == sent")),
        ("Records in stream (unique / duplicates)", "records",
         f"{r['in_stream']:,} ({r['unique_in_stream']:,} / {r['duplicates']:,})", "", "",
         _check(in_stream_ok, "unique == acked, 0 dup")),
        ("Gateway CPU", "CPU %", _num(r["gw_cpu_pct"]), "", "", ""),
        ("Simulator CPU", "CPU %", _num(r["sim_cpu_pct"]), "", "", ""),
        ("Errors (simulator)", "", _num(errors), "", "", _check(errors == 0, "0")),
    ]  # fmt: skip


def report(results: dict[str, Any], s: Settings, quick: bool) -> Table:
    table = Table(title=f"edgesim fleet simulator benchmark ({'--quick' if quick else 'full'}; all on {HOST})")
    for col, justify in (("figure", "left"), ("unit", "left"), ("simulator", "right"), ("reference", "right"),
                         ("ratio", "right"), ("goal", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    sections = {
        "scale": (
            f"(a) {s.scale_devices:,} devices → gateway, one process, mTLS (shared cert), "
            f"QoS 1 every {s.scale_interval_s:g} s",
            "",
        ),
        "max": (
            f"(b) {s.max_devices} devices flat out → mosquitto (mTLS), QoS 1",
            f"raw client (≤ {s.raw_window} in flight)",
        ),
        "rules": (
            f"(c) {s.rules_devices:,} devices x {1 / s.rules_interval_s:g} msg/s for {s.rules_s:g} s → gateway, "
            "rules: Kinesis + republish",
            "",
        ),
    }
    first = True
    for part in PARTS:
        r = results.get(part)
        if r is None:
            continue
        if not first:
            table.add_section()
        first = False
        title, ref = sections[part]
        table.add_row(f"[bold]{title}[/bold]", "", "", ref, "", "")
        if "error" in r:
            table.add_row(f"[red]failed: {r['error'][:200]}[/red]", "", "", "", "", "")
            continue
        rows = rows_scale(r, s) if part == "scale" else rows_max(r) if part == "max" else rows_rules(r, s)
        for row in rows:
            table.add_row(*row)
    return table


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        return simulate_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and short windows: a sanity run")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write every figure (and raw counts) here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (certs, fleet files, logs)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if sorted(set(parts) - set(PARTS)) or not parts:
        parser.error(f"--only takes {','.join(PARTS)}; got {args.only!r}")
    s = QUICK if args.quick else FULL
    _raise_nofile()  # 10,000 connections: the gateway and the simulator inherit the raised limit
    signal.signal(signal.SIGTERM, _on_sigterm)

    home = Path(tempfile.mkdtemp(prefix="edgesim-fleet-bench-"))
    results: dict[str, Any] = {}
    interrupted = False
    gw: Edgesim | None = None
    started = time.perf_counter()
    try:
        console.log(f"preparing certificates and the registry in {home}")
        mat = prepare(home)
        # The gateway for (a) and (c), then mosquitto alone for (b).
        if "scale" in parts or "rules" in parts:
            gw = Edgesim(mat)
            gw.start()
            console.log(f"edgesim: mqtts {HOST}:{gw.port}, api http://{HOST}:{gw.api_port} (pid {gw.pid})")
        for part in (p for p in ("scale", "rules", "max") if p in parts):
            console.rule(part)
            part_start = time.perf_counter()
            try:
                if part == "max":
                    if gw is not None:
                        gw.stop()
                        gw = None
                    results[part] = measure_max(mat, home, s)
                else:
                    assert gw is not None
                    run = measure_scale if part == "scale" else measure_rules
                    results[part] = run(gw, mat, home, s)
                    _wait_idle(gw.pid)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                results[part] = {"error": repr(exc)}
                console.log(f"[red]{part} failed:[/red] {exc!r}")
                if gw is not None:
                    console.log(f"edgesim log (tail):\n{gw.log_tail()}")
            console.log(f"{part}: {time.perf_counter() - part_start:.0f} s")
            if gw is not None and not gw.alive():
                raise RuntimeError(f"edgesim exited (code {gw.proc.returncode if gw.proc else None})")
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: servers and simulators stopped[/yellow]")
    finally:
        stop_and_clean(gw, home, args.keep, console)
    console.log(f"total {time.perf_counter() - started:.0f} s")

    if results:
        Console(width=max(console.width, 170)).print(report(results, s, args.quick))
    write_json(args.json, args.quick, s, results, console)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
