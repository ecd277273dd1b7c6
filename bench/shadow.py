"""Device Shadow benchmark: MQTT update round trips, boto3 iot-data against moto_server, 100,000 stored shadows.

usage: python bench/shadow.py [--quick] [--json out.json] [--only mqtt,boto3,stored] [--keep]

One edgesim gateway (`python -m gateway up --publishes-per-second 0 ...`, 127.0.0.1, ephemeral ports) serves every
figure; moto_server runs only while it is measured. The load runs in this process: the MQTT devices on one asyncio
loop (bench/mqttload.py's raw client), the boto3 callers in threads. On two cores the gateway and the load generator
each get about one, so the CPU rows say who was the bottleneck (100 % = one core).

(a) mqtt:   100 mTLS devices, each in a closed loop: publish QoS 1 `$aws/things/<thing>/shadow/update` with a
            clientToken, wait for `/update/accepted` carrying it (subscribed QoS 1). Then, on the same gateway and
            connections, plain QoS 1 round trips: publish to `bench/rt/<i>`, which the same device subscribes to, and
            wait to get it back. Same payload bytes both ways.
(b) boto3:  `update_thing_shadow` from 4 threads, one boto3 client each, against edgesim and against moto_server.
(c) stored: 100,000 shadows (5,000 with --quick) written through MQTT updates, then the gateway's VmRSS and
            GetThingShadow p50/p99 over 2,000 random gets from one boto3 client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from broker import HOST, Edgesim, Material, _on_sigterm, _raise_nofile, prepare, rss_kb, settle
from common import stop_and_clean
from mqttload import (
    PUBACK,
    PUBLISH,
    SUBACK,
    Client,
    MqttError,
    Target,
    close_all,
    connect_many,
    cpu_seconds,
    puback_packet,
    publish_prefix,
    subscribe_packet,
)
from refserver import RefServer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("mqtt", "boto3", "stored")
REGION = "us-east-1"

# The peer's published figure for MQTT shadow updates, printed as a constant reference.
PEER_UPDATES_PER_S = 3670.0
PEER_P99_MS = 8.9

console = Console()


@dataclass(frozen=True)
class Settings:
    devices: int  # (a) MQTT devices
    rt_seconds: float  # (a) measured window per variant
    rt_warmup: float
    rt_timeout: float  # (a) a round trip without an answer after this long counts as lost
    boto_threads: int  # (b)
    boto_seconds: float
    boto_warmup: float
    stored: int  # (c) shadows to create
    store_writers: int  # (c) MQTT connections writing them
    store_window: int  # (c) updates per writer not yet seen /accepted
    gets: int  # (c) random GetThingShadow calls


# The store window stays at AWS's limit of 10 shadow requests in flight per connection (more get 429).
FULL = Settings(100, 10.0, 1.0, 10.0, 4, 10.0, 1.0, 100_000, 20, 10, 2000)
QUICK = Settings(100, 3.0, 0.5, 10.0, 4, 3.0, 0.5, 5_000, 20, 10, 2000)


def _percentile_ms(sorted_ns: list[int], pct: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(pct / 100.0 * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


def _split_publish(first: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH body."""
    tlen = (body[0] << 8) | body[1]
    topic = body[2 : 2 + tlen].decode()
    pos = 2 + tlen
    pid = 0
    if first & 0x06:
        pid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    return topic, pid, body[pos:]


def _publish_qos1(topic: str, pid: int, payload: bytes) -> bytes:
    return publish_prefix(topic, 1, len(payload)) + pid.to_bytes(2, "big") + payload


async def _subscribe_many(client: Client, filters: list[tuple[str, int]]) -> None:
    client.writer.write(subscribe_packet(1, filters))
    async with asyncio.timeout(10):
        while True:
            for first, body in await client.read_frames():
                if first >> 4 == SUBACK:
                    refused = [f for (f, _), code in zip(filters, body[2:], strict=False) if code == 0x80]
                    if refused or len(body) - 2 != len(filters):
                        raise MqttError(f"{client.client_id}: SUBSCRIBE refused {refused or body.hex()}")
                    return


async def _connect_devices(target: Target, ids: list[str], concurrency: int = 50) -> list[Client]:
    clients, errors, _ = await connect_many(target.host, target.port, target.context(), ids, concurrency)
    if errors:
        await close_all(clients)
        raise MqttError(f"{len(errors)} of {len(ids)} devices failed to connect, e.g. {errors[0]}")
    return clients


# ---------------------------------------------------------------- (a) MQTT round trips


@dataclass
class RoundTrips:
    kind: str  # "shadow" or "plain"
    devices: int
    seconds: float
    completed: int  # round trips completed inside the window
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    gateway_cpu_pct: float
    gen_cpu_pct: float
    total_completed: int  # including warm-up and the tail
    timeouts: int  # no answer within rt_timeout
    rejected: int  # /update/rejected instead of /accepted
    stray: int  # answers that did not carry the outstanding request's token / payload
    bad_version: int  # /accepted whose version was not the previous one + 1
    missing_pubacks: int  # our QoS 1 requests the gateway never PUBACKed
    errors: list[str] = field(default_factory=list)


@dataclass
class _DeviceTally:
    samples: list[tuple[int, int]] = field(default_factory=list)  # (completion ns, round trip ns)
    sent: int = 0
    pubacks: int = 0
    timeouts: int = 0
    rejected: int = 0
    stray: int = 0
    bad_version: int = 0
    errors: list[str] = field(default_factory=list)


def _request_payload(token: str, seq: int) -> bytes:
    return json.dumps({"state": {"reported": {"seq": seq, "temp": 20 + seq % 7}}, "clientToken": token}).encode()


async def _device_loop(
    client: Client, idx: int, kind: str, stop: asyncio.Event, tally: _DeviceTally, timeout_s: float
) -> None:
    """Closed loop: one request outstanding; wait for its answer (or `timeout_s`), then send the next."""
    thing = f"bench-shadow-{idx}"
    if kind == "shadow":
        request_topic = f"$aws/things/{thing}/shadow/update"
        answer_topic, rejected_topic = request_topic + "/accepted", request_topic + "/rejected"
    else:
        request_topic = answer_topic = f"bench/rt/{idx}"
        rejected_topic = ""
    writer = client.writer
    last_version: int | None = None
    seq = 0
    while not stop.is_set():
        seq += 1
        token = f"{kind[0]}{idx}-{seq}"
        payload = _request_payload(token, seq)
        pid = seq % 65535 + 1
        t0 = time.perf_counter_ns()
        writer.write(_publish_qos1(request_topic, pid, payload))
        tally.sent += 1
        answered = False
        try:
            async with asyncio.timeout(timeout_s):
                while not answered:
                    frames = await client.read_frames()
                    now = time.perf_counter_ns()
                    acks: list[bytes] = []
                    for first, body in frames:
                        ptype = first >> 4
                        if ptype == PUBACK:
                            tally.pubacks += 1
                            continue
                        if ptype != PUBLISH:
                            continue
                        topic, in_pid, data = _split_publish(first, body)
                        if in_pid:
                            acks.append(puback_packet(in_pid))
                        if answered:
                            tally.stray += 1
                        elif kind == "plain":
                            if topic == answer_topic and data == payload:
                                answered = True
                                tally.samples.append((now, now - t0))
                            else:
                                tally.stray += 1
                        else:
                            try:
                                doc = json.loads(data)
                            except ValueError:
                                doc = {}
                            if not isinstance(doc, dict) or doc.get("clientToken") != token:
                                tally.stray += 1
                            elif topic == answer_topic:
                                answered = True
                                tally.samples.append((now, now - t0))
                                version = doc.get("version")
                                if last_version is not None and version != last_version + 1:
                                    tally.bad_version += 1
                                    if len(tally.errors) < 3:
                                        tally.errors.append(f"{thing}: version {version} after {last_version}")
                                last_version = version if isinstance(version, int) else last_version
                            elif topic == rejected_topic:
                                answered = True  # answered, but not a success: not sampled
                                tally.rejected += 1
                                if len(tally.errors) < 3:
                                    tally.errors.append(f"{thing}: rejected {data[:200]!r}")
                            else:
                                tally.stray += 1
                    if acks:
                        writer.write(b"".join(acks))
        except TimeoutError:
            tally.timeouts += 1
            if len(tally.errors) < 3:
                tally.errors.append(f"{thing}: no {kind} answer to {token} within {timeout_s:g} s")


async def _drain_pubacks(clients: list[Client], tallies: list[_DeviceTally], wait_s: float = 1.0) -> None:
    """Collect PUBACKs for the last requests that may still be on their way (answers can overtake them)."""

    async def one(client: Client, tally: _DeviceTally) -> None:
        with contextlib.suppress(TimeoutError, MqttError):
            async with asyncio.timeout(wait_s):
                while tally.pubacks < tally.sent:
                    acks = []
                    for first, body in await client.read_frames():
                        if first >> 4 == PUBACK:
                            tally.pubacks += 1
                        elif first >> 4 == PUBLISH:
                            _, in_pid, _ = _split_publish(first, body)
                            if in_pid:
                                acks.append(puback_packet(in_pid))
                    if acks:
                        client.writer.write(b"".join(acks))

    await asyncio.gather(*(one(c, t) for c, t in zip(clients, tallies, strict=True)))


async def round_trips(clients: list[Client], kind: str, s: Settings, gateway_pid: int) -> RoundTrips:
    stop = asyncio.Event()
    tallies = [_DeviceTally() for _ in clients]
    tasks = [
        asyncio.create_task(_device_loop(c, i, kind, stop, tallies[i], s.rt_timeout)) for i, c in enumerate(clients)
    ]
    try:
        await asyncio.sleep(s.rt_warmup)
        t0, b0, g0 = time.perf_counter_ns(), cpu_seconds(gateway_pid), time.process_time()
        await asyncio.sleep(s.rt_seconds)
        t1, b1, g1 = time.perf_counter_ns(), cpu_seconds(gateway_pid), time.process_time()
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=s.rt_timeout + 5)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [f"device task: {t.exception()!r}" for t in done if not t.cancelled() and t.exception() is not None]
    if pending:
        errors.append(f"{len(pending)} device loops did not stop")
    await _drain_pubacks(clients, tallies)
    window = [rt for t in tallies for (end, rt) in t.samples if t0 <= end <= t1]
    window.sort()
    elapsed = (t1 - t0) / 1e9
    for t in tallies:
        errors += t.errors
    return RoundTrips(
        kind=kind,
        devices=len(clients),
        seconds=elapsed,
        completed=len(window),
        per_s=len(window) / elapsed,
        p50_ms=_percentile_ms(window, 50),
        p99_ms=_percentile_ms(window, 99),
        max_ms=window[-1] / 1e6 if window else float("nan"),
        gateway_cpu_pct=100.0 * (b1 - b0) / elapsed,
        gen_cpu_pct=100.0 * (g1 - g0) / elapsed,
        total_completed=sum(len(t.samples) for t in tallies),
        timeouts=sum(t.timeouts for t in tallies),
        rejected=sum(t.rejected for t in tallies),
        stray=sum(t.stray for t in tallies),
        bad_version=sum(t.bad_version for t in tallies),
        missing_pubacks=sum(max(0, t.sent - t.pubacks) for t in tallies),
        errors=errors[:10],
    )


async def measure_mqtt(gw: Edgesim, mat: Material, s: Settings) -> dict[str, Any]:
    target = Target(HOST, gw.port, mat.ca, mat.client_cert, mat.client_key)
    console.log(f"mqtt: connecting {s.devices} mTLS devices")
    clients = await _connect_devices(target, [f"bench-shadow-dev-{i}" for i in range(s.devices)])
    out: dict[str, Any] = {}
    try:
        for i, c in enumerate(clients):
            base = f"$aws/things/bench-shadow-{i}/shadow/update"
            await _subscribe_many(c, [(base + "/accepted", 1), (base + "/rejected", 1), (f"bench/rt/{i}", 1)])
        for kind in ("plain", "shadow"):
            await settle(gw)
            with console.status(f"mqtt: {kind} QoS 1 round trips, {s.devices} devices, {s.rt_seconds:g} s"):
                res = await round_trips(clients, kind, s, gw.pid)
            gw.check_alive()
            out[kind] = asdict(res)
            unit = "updates/s" if kind == "shadow" else "msg/s"
            console.log(
                f"mqtt {kind}: {res.per_s:,.0f} {unit}, p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, "
                f"max {res.max_ms:.1f} ms ({res.completed:,} in {res.seconds:.1f} s); CPU gateway "
                f"{res.gateway_cpu_pct:.0f} %, load-gen {res.gen_cpu_pct:.0f} %; timeouts {res.timeouts}, "
                f"rejected {res.rejected}, stray {res.stray}, bad version {res.bad_version}, "
                f"missing PUBACKs {res.missing_pubacks}"
            )
            for err in res.errors[:5]:
                console.log(f"[red]mqtt {kind}: {err}[/red]")
    finally:
        await close_all(clients)
    return out


# ---------------------------------------------------------------- (b) boto3 iot-data


def boto_client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4),
    )


@dataclass
class BotoLoad:
    server: str
    threads: int
    seconds: float
    completed: int
    per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    errors: int
    bad_version: int
    error_samples: list[str]


def boto_update_load(server: str, endpoint: str, server_pid: int, things: list[str], s: Settings) -> BotoLoad:
    """`len(things)` threads, one boto3 client and one thing each, update_thing_shadow back to back."""
    clients = [boto_client("iot-data", endpoint) for _ in things]
    lock = threading.Lock()
    samples: list[tuple[float, int]] = []  # (completion time, latency ns)
    errors: list[str] = []
    counts = {"errors": 0, "bad_version": 0}
    start_at = time.perf_counter() + s.boto_warmup + 0.2
    end_at = start_at + s.boto_seconds

    def worker(i: int) -> None:
        client, thing = clients[i], things[i]
        mine: list[tuple[float, int]] = []
        last_version: int | None = None
        n = 0
        while time.perf_counter() < end_at:
            n += 1
            body = json.dumps({"state": {"reported": {"n": n, "thread": i}}})
            t0 = time.perf_counter_ns()
            try:
                resp = client.update_thing_shadow(thingName=thing, payload=body)
                doc = json.loads(resp["payload"].read())
            except Exception as exc:
                with lock:
                    counts["errors"] += 1
                    if len(errors) < 5:
                        errors.append(f"{thing}: {exc!r}")
                continue
            t1 = time.perf_counter_ns()
            mine.append((t1 / 1e9, t1 - t0))
            version = doc.get("version")
            if last_version is not None and version != last_version + 1:
                with lock:
                    counts["bad_version"] += 1
                    if len(errors) < 5:
                        errors.append(f"{thing}: version {version} after {last_version}")
            last_version = version if isinstance(version, int) else last_version
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(things))]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start_at - time.perf_counter()))
    t0, b0, g0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    time.sleep(max(0.0, end_at - time.perf_counter()))
    t1, b1, g1 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    for t in threads:
        t.join(30)
    window = sorted(rt for end, rt in samples if t0 <= end <= t1)
    elapsed = t1 - t0
    for c in clients:
        c.close()
    return BotoLoad(
        server=server,
        threads=len(things),
        seconds=elapsed,
        completed=len(window),
        per_s=len(window) / elapsed,
        p50_ms=_percentile_ms(window, 50),
        p99_ms=_percentile_ms(window, 99),
        server_cpu_pct=100.0 * (b1 - b0) / elapsed,
        client_cpu_pct=100.0 * (g1 - g0) / elapsed,
        errors=counts["errors"],
        bad_version=counts["bad_version"],
        error_samples=errors,
    )


def moto_server_binary() -> str:
    """moto_server from this venv, installing `moto[server]` with pip if it is missing."""
    here = Path(sys.executable).parent / "moto_server"
    if here.exists():
        return str(here)
    console.log("[yellow]moto_server missing: pip install 'moto[server]'[/yellow]")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "moto[server]"], check=True)
    if not here.exists():
        raise RuntimeError("moto_server is still missing after pip install 'moto[server]'")
    return str(here)


class MotoServer(RefServer):
    name = "moto_server"
    start_timeout_s = 60.0

    def argv(self) -> list[str]:
        return [moto_server_binary(), "-H", HOST, "-p", str(self.port)]


def _wait_idle(pid: int, idle_pct: float = 10.0, max_s: float = 20.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        before = cpu_seconds(pid)
        time.sleep(0.25)
        if 100.0 * (cpu_seconds(pid) - before) / 0.25 < idle_pct:
            return


def measure_boto3(gw: Edgesim, home: Path, s: Settings) -> dict[str, Any]:
    from importlib.metadata import version

    things = [f"bench-boto-{i}" for i in range(s.boto_threads)]
    out: dict[str, Any] = {"moto_version": version("moto")}
    # edgesim: the things exist in its registry too (its shadow service does not require them; moto's does).
    endpoint = f"http://{HOST}:{gw.api_port}"
    iot = boto_client("iot", endpoint)
    for thing in things:
        iot.create_thing(thingName=thing)
    iot.close()
    _wait_idle(gw.pid)
    with console.status(f"boto3: update_thing_shadow x {s.boto_threads} threads → edgesim, {s.boto_seconds:g} s"):
        res = boto_update_load("edgesim", endpoint, gw.pid, things, s)
    gw.check_alive()
    out["edgesim"] = asdict(res)
    _log_boto(res)

    moto = MotoServer(home)
    try:
        console.log("boto3: starting moto_server")
        moto.start()
        iot = boto_client("iot", moto.endpoint)
        for thing in things:
            iot.create_thing(thingName=thing)
        iot.close()
        _wait_idle(moto.pid)
        with console.status(f"boto3: update_thing_shadow x {s.boto_threads} threads → moto, {s.boto_seconds:g} s"):
            res = boto_update_load("moto", moto.endpoint, moto.pid, things, s)
        out["moto"] = asdict(res)
        _log_boto(res)
    except Exception as exc:
        out["moto"] = {"error": repr(exc)}
        console.log(f"[red]moto_server failed:[/red] {exc!r}\n{moto.log_tail()}")
    finally:
        moto.stop()
    return out


def _log_boto(res: BotoLoad) -> None:
    console.log(
        f"boto3 → {res.server}: {res.per_s:,.0f} updates/s ({res.completed:,} in {res.seconds:.1f} s), "
        f"p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms; CPU server {res.server_cpu_pct:.0f} %, "
        f"client {res.client_cpu_pct:.0f} %; errors {res.errors}, bad version {res.bad_version}"
    )
    for err in res.error_samples:
        console.log(f"[red]boto3 → {res.server}: {err}[/red]")


# ---------------------------------------------------------------- (c) stored shadows


def _stored_thing(writer: int, k: int) -> str:
    return f"bench-store-{writer}-{k}"


def _stored_state(writer: int, k: int) -> dict[str, Any]:
    return {"temp": 15 + (k * 7 + writer) % 20, "fw": "1.4.2", "on": k % 2 == 0, "k": k}


async def create_shadows(target: Target, s: Settings, progress: Callable[[int], None]) -> dict[str, Any]:
    """`s.stored` shadows through MQTT QoS 1 updates from `s.store_writers` connections.

    One monitor connection subscribes to `$aws/things/+/shadow/update/{accepted,rejected}` and counts the answers
    per writer; each writer keeps at most `s.store_window` updates without an answer (end to end), so the gateway's
    queues stay bounded and every update is accounted for.
    """
    writers = s.store_writers
    quota = [s.stored // writers + (1 if w < s.stored % writers else 0) for w in range(writers)]
    accepted = [0] * writers
    rejected = [0] * writers
    wakeups = [asyncio.Event() for _ in range(writers)]
    errors: list[str] = []
    monitor = (await _connect_devices(target, ["bench-store-monitor"]))[0]
    await _subscribe_many(
        monitor, [("$aws/things/+/shadow/update/accepted", 1), ("$aws/things/+/shadow/update/rejected", 1)]
    )
    prefix_len = len("$aws/things/bench-store-")

    async def watch() -> None:
        while True:
            acks = []
            for first, body in await monitor.read_frames():
                if first >> 4 != PUBLISH:
                    continue
                topic, pid, data = _split_publish(first, body)
                if pid:
                    acks.append(puback_packet(pid))
                if not topic.startswith("$aws/things/bench-store-"):
                    continue
                w = int(topic[prefix_len : topic.index("-", prefix_len)])
                if topic.endswith("/accepted"):
                    accepted[w] += 1
                else:
                    rejected[w] += 1
                    if len(errors) < 5:
                        errors.append(f"{topic}: {data[:200]!r}")
                wakeups[w].set()
            if acks:
                monitor.writer.write(b"".join(acks))

    async def write(w: int, client: Client) -> None:
        async def pubacks() -> None:
            while True:
                await client.read_frames()

        reader = asyncio.create_task(pubacks())
        sent = 0
        try:
            while sent < quota[w]:
                room = min(s.store_window - (sent - accepted[w] - rejected[w]), quota[w] - sent)
                if room <= 0:
                    wakeups[w].clear()
                    try:
                        await asyncio.wait_for(wakeups[w].wait(), 15)
                    except TimeoutError:
                        errors.append(f"writer {w}: no answer for 15 s (sent {sent}, answered {accepted[w]})")
                        return
                    continue
                parts = []
                for _ in range(room):
                    thing = _stored_thing(w, sent)
                    payload = json.dumps({"state": {"reported": _stored_state(w, sent)}}).encode()
                    parts.append(_publish_qos1(f"$aws/things/{thing}/shadow/update", sent % 65535 + 1, payload))
                    sent += 1
                client.writer.write(b"".join(parts))
                await client.writer.drain()
            deadline = time.monotonic() + 15
            while accepted[w] + rejected[w] < quota[w] and time.monotonic() < deadline:
                wakeups[w].clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeups[w].wait(), 1)
            if accepted[w] + rejected[w] < quota[w]:
                errors.append(f"writer {w}: {quota[w] - accepted[w] - rejected[w]} updates never answered")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    clients: list[Client] = []
    watcher = asyncio.create_task(watch())
    try:
        clients = await _connect_devices(target, [f"bench-store-writer-{w}" for w in range(writers)])
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(write(w, c)) for w, c in enumerate(clients)]
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.5)
            progress(sum(accepted))
        elapsed = time.perf_counter() - t0
        errors += [f"writer: {t.exception()!r}" for t in tasks if t.exception() is not None]
        if watcher.done() and watcher.exception() is not None:
            errors.append(f"monitor: {watcher.exception()!r}")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await close_all([*clients, monitor])
    return {
        "requested": s.stored,
        "accepted": sum(accepted),
        "rejected": sum(rejected),
        "seconds": elapsed,
        "per_s": sum(accepted) / elapsed,
        "errors": errors[:10],
    }


def get_latencies(endpoint: str, s: Settings, quota: list[int]) -> dict[str, Any]:
    """`s.gets` GetThingShadow calls on random stored shadows from one boto3 client; each answer is checked."""
    rng = random.Random(7)
    client = boto_client("iot-data", endpoint)
    picks = []
    for _ in range(s.gets + 20):
        w = rng.randrange(len(quota))
        picks.append((w, rng.randrange(quota[w])))
    lat: list[int] = []
    errors: list[str] = []
    counts = {"not_found": 0, "errors": 0, "wrong": 0}
    for n, (w, k) in enumerate(picks):
        thing = _stored_thing(w, k)
        t0 = time.perf_counter_ns()
        try:
            doc = json.loads(client.get_thing_shadow(thingName=thing)["payload"].read())
        except Exception as exc:
            key = "not_found" if "ResourceNotFound" in repr(exc) else "errors"
            counts[key] += 1
            if len(errors) < 5:
                errors.append(f"{thing}: {exc!r}")
            continue
        t1 = time.perf_counter_ns()
        if n >= 20:  # the first 20 warm up the client's connection
            lat.append(t1 - t0)
        if doc.get("state", {}).get("reported") != _stored_state(w, k) or doc.get("version") != 1:
            counts["wrong"] += 1
            if len(errors) < 5:
                errors.append(f"{thing}: unexpected document {json.dumps(doc)[:200]}")
    # Reference: the same client reading one shadow over and over (in the gateway's cache, pages hot).
    hot: list[int] = []
    for _ in range(min(500, s.gets)):
        t0 = time.perf_counter_ns()
        with contextlib.suppress(Exception):
            client.get_thing_shadow(thingName=_stored_thing(0, 0))["payload"].read()
            hot.append(time.perf_counter_ns() - t0)
    client.close()
    lat.sort()
    hot.sort()
    return {
        "gets": len(lat),
        "p50_ms": _percentile_ms(lat, 50),
        "p99_ms": _percentile_ms(lat, 99),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        **counts,
        "error_samples": errors,
        "hot_gets": len(hot),
        "hot_p50_ms": _percentile_ms(hot, 50),
        "hot_p99_ms": _percentile_ms(hot, 99),
    }


def _db_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("edgesim.db*") if p.is_file())


def measure_stored(gw: Edgesim, mat: Material, s: Settings) -> dict[str, Any]:
    target = Target(HOST, gw.port, mat.ca, mat.client_cert, mat.client_key)
    _wait_idle(gw.pid)
    rss_before = rss_kb(gw.pid)
    with console.status(f"stored: writing {s.stored:,} shadows over MQTT") as status:

        def progress(done: int) -> None:
            status.update(f"stored: {done:,} / {s.stored:,} shadows accepted")

        b0 = cpu_seconds(gw.pid)
        created = asyncio.run(create_shadows(target, s, progress))
        created["gateway_cpu_pct"] = 100.0 * (cpu_seconds(gw.pid) - b0) / created["seconds"]
    gw.check_alive()
    console.log(
        f"stored: {created['accepted']:,} / {s.stored:,} accepted, {created['rejected']} rejected in "
        f"{created['seconds']:.1f} s = {created['per_s']:,.0f}/s (gateway CPU {created['gateway_cpu_pct']:.0f} %)"
    )
    for err in created["errors"]:
        console.log(f"[red]stored: {err}[/red]")
    _wait_idle(gw.pid)
    time.sleep(1.0)
    rss_after = rss_kb(gw.pid)
    console.log(f"stored: gateway RSS {rss_before / 1024:.1f} MB → {rss_after / 1024:.1f} MB")
    quota = [s.stored // s.store_writers + (1 if w < s.stored % s.store_writers else 0) for w in range(s.store_writers)]
    with console.status(f"stored: {s.gets:,} random GetThingShadow"):
        gets = get_latencies(f"http://{HOST}:{gw.api_port}", s, quota)
    gw.check_alive()
    console.log(
        f"stored: GetThingShadow p50 {gets['p50_ms']:.2f} ms, p99 {gets['p99_ms']:.2f} ms, max {gets['max_ms']:.1f} "
        f"ms over {gets['gets']:,} (one hot shadow: p50 {gets['hot_p50_ms']:.2f} ms, p99 {gets['hot_p99_ms']:.2f} ms); "
        f"not found {gets['not_found']}, errors {gets['errors']}, wrong {gets['wrong']}"
    )
    for err in gets["error_samples"]:
        console.log(f"[red]stored: {err}[/red]")
    return {
        "create": created,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_after_gets_kb": rss_kb(gw.pid),
        "db_bytes": _db_bytes(mat.data),
        "get": gets,
    }


# ---------------------------------------------------------------- report


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "ms":
        return f"{value:,.2f}"
    if unit == "MB":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


# (label, unit, edgesim path, reference label, reference: path or constant, higher is better, goal (op, x))
Ref = tuple[str, ...] | float | None
ROWS: list[tuple[str, str, tuple[str, ...], str, Ref, bool | None, tuple[str, float] | None]] = [
    ("(a) shadow update round trips, 100 mTLS devices", "updates/s", ("mqtt", "shadow", "per_s"),
     "peer figure (constant)", PEER_UPDATES_PER_S, True, None),
    ("(a) shadow update round trips vs plain", "per s", ("mqtt", "shadow", "per_s"),
     "plain QoS 1 round trips, same gateway", ("mqtt", "plain", "per_s"), True, None),
    ("(a) shadow update round trip p50", "ms", ("mqtt", "shadow", "p50_ms"),
     "plain QoS 1 round trip p50", ("mqtt", "plain", "p50_ms"), False, ("<=", 2.0)),
    ("(a) shadow update round trip p99", "ms", ("mqtt", "shadow", "p99_ms"),
     "plain QoS 1 round trip p99", ("mqtt", "plain", "p99_ms"), False, None),
    ("(a) shadow update round trip p99", "ms", ("mqtt", "shadow", "p99_ms"),
     "peer figure (constant)", PEER_P99_MS, False, None),
    ("(a) gateway CPU", "CPU %", ("mqtt", "shadow", "gateway_cpu_pct"),
     "during plain round trips", ("mqtt", "plain", "gateway_cpu_pct"), None, None),
    ("(a) gateway CPU per round trip", "us", ("mqtt", "shadow", "gateway_us_per_op"),
     "per plain round trip", ("mqtt", "plain", "gateway_us_per_op"), None, None),
    ("(a) load generator CPU", "CPU %", ("mqtt", "shadow", "gen_cpu_pct"),
     "during plain round trips", ("mqtt", "plain", "gen_cpu_pct"), None, None),
    ("(a) lost (timeouts) / rejected", "count", ("mqtt", "shadow", "lost_rejected"),
     "plain: lost (timeouts)", ("mqtt", "plain", "timeouts"), None, None),
    ("(b) boto3 update_thing_shadow, 4 threads", "updates/s", ("boto3", "edgesim", "per_s"),
     "moto_server", ("boto3", "moto", "per_s"), True, (">=", 2.0)),
    ("(b) update_thing_shadow p50 per call", "ms", ("boto3", "edgesim", "p50_ms"),
     "moto_server", ("boto3", "moto", "p50_ms"), False, None),
    ("(b) update_thing_shadow p99 per call", "ms", ("boto3", "edgesim", "p99_ms"),
     "moto_server", ("boto3", "moto", "p99_ms"), False, None),
    ("(b) server CPU during the run", "CPU %", ("boto3", "edgesim", "server_cpu_pct"),
     "moto_server CPU", ("boto3", "moto", "server_cpu_pct"), None, None),
    ("(b) server CPU per update", "us", ("boto3", "edgesim", "server_us_per_op"),
     "moto_server", ("boto3", "moto", "server_us_per_op"), False, None),
    ("(b) client process CPU (4 boto3 threads)", "CPU %", ("boto3", "edgesim", "client_cpu_pct"),
     "client CPU against moto", ("boto3", "moto", "client_cpu_pct"), None, None),
    ("(b) errors", "count", ("boto3", "edgesim", "errors"),
     "moto_server", ("boto3", "moto", "errors"), None, None),
    ("(c) shadows stored (accepted over MQTT)", "count", ("stored", "create", "accepted"),
     "requested", ("stored", "create", "requested"), None, None),
    ("(c) creation rate (MQTT updates, 20 conns)", "shadows/s", ("stored", "create", "per_s"), "", None, None, None),
    ("(c) gateway RSS with the shadows stored", "MB", ("stored", "rss_after_mb"),
     "RSS before creating them", ("stored", "rss_before_mb"), None, None),
    ("(c) SQLite files on disk", "MB", ("stored", "db_mb"), "", None, None, None),
    ("(c) GetThingShadow p50, random, 1 client", "ms", ("stored", "get", "p50_ms"),
     "one hot shadow, same client", ("stored", "get", "hot_p50_ms"), None, None),
    ("(c) GetThingShadow p99, random, 1 client", "ms", ("stored", "get", "p99_ms"),
     "one hot shadow, same client", ("stored", "get", "hot_p99_ms"), None, None),
    ("(c) gets not found / errors / wrong doc", "count", ("stored", "get", "failed"), "", None, None, None),
]  # fmt: skip


def _derive(results: dict[str, Any]) -> dict[str, Any]:
    """Figures the table shows that are sums or unit changes of measured ones."""
    view = json.loads(json.dumps(results, default=str))
    stored = view.get("stored")
    if isinstance(stored, dict) and "rss_after_kb" in stored:
        stored["rss_after_mb"] = stored["rss_after_kb"] / 1024
        stored["rss_before_mb"] = stored["rss_before_kb"] / 1024
        stored["db_mb"] = stored["db_bytes"] / 1e6
        get = stored["get"]
        get["failed"] = get["not_found"] + get["errors"] + get["wrong"]
    for part, key, cpu, out in (("mqtt", "shadow", "gateway_cpu_pct", "gateway_us_per_op"),
                                 ("mqtt", "plain", "gateway_cpu_pct", "gateway_us_per_op"),
                                 ("boto3", "edgesim", "server_cpu_pct", "server_us_per_op"),
                                 ("boto3", "moto", "server_cpu_pct", "server_us_per_op")):  # fmt: skip
        node = view.get(part, {}).get(key)
        if isinstance(node, dict) and node.get("per_s"):
            node[out] = 1e6 * node[cpu] / 100.0 / node["per_s"]
    shadow = view.get("mqtt", {}).get("shadow")
    if isinstance(shadow, dict):
        shadow["lost_rejected"] = f"{shadow['timeouts']} / {shadow['rejected']}"
    return view


def _cell(view: dict[str, Any], path: tuple[str, ...], unit: str) -> tuple[str, float | None]:
    node: Any = view
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return "—", None
        node = node[key]
    if isinstance(node, str):
        return node, None
    value = None if node is None else float(node)
    return _fmt(value, unit), value


def report(results: dict[str, Any], s: Settings, quick: bool) -> Table:
    view = _derive(results)
    table = Table(
        title=f"edgesim Device Shadow benchmark ({'--quick' if quick else 'full'}: {s.devices} MQTT devices x "
        f"{s.rt_seconds:g} s, boto3 {s.boto_threads} threads x {s.boto_seconds:g} s, {s.stored:,} stored shadows; "
        f"all on {HOST})"
    )
    for name, justify in (("figure", "left"), ("unit", "left"), ("edgesim", "right"), ("compared with", "left"),
                          ("reference", "right"), ("edgesim / ref", "right"), ("goal", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    last_section = ""
    for label, unit, path, ref_label, ref, higher, goal in ROWS:
        if path[0] not in results:
            continue
        if last_section and label[:3] != last_section:
            table.add_section()
        last_section = label[:3]
        text, value = _cell(view, path, unit)
        if isinstance(ref, tuple):
            ref_text, ref_value = _cell(view, ref, unit)
        elif isinstance(ref, float):
            ref_text, ref_value = _fmt(ref, unit), ref
        else:
            ref_text, ref_value = "", None
        ratio = "—"
        if value is not None and ref_value and not math.isnan(value) and not math.isnan(ref_value):
            r = value / ref_value
            if goal is not None:
                good = r <= goal[1] if goal[0] == "<=" else r >= goal[1]
                ratio = f"[{'green' if good else 'red'}]{r:.2f}x[/]"
            elif higher is not None:
                ratio = f"[{'green' if (r >= 1) == higher else 'yellow'}]{r:.2f}x[/]"
            else:
                ratio = f"{r:.2f}x"
        goal_text = f"{'≤' if goal[0] == '<=' else '≥'} {goal[1]:g}x" if goal else ""
        table.add_row(label, unit, text, ref_label, ref_text, ratio, goal_text)
    return table


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 stored shadows and 3 s windows: a sanity run")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write every figure (and raw counts) here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (certs, database, logs)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--only takes {','.join(PARTS)}; got {args.only!r}")
    parts = [p for p in PARTS if p in parts]
    s = QUICK if args.quick else FULL
    _raise_nofile()
    signal.signal(signal.SIGTERM, _on_sigterm)

    home = Path(tempfile.mkdtemp(prefix="edgesim-shadow-bench-"))
    results: dict[str, Any] = {}
    interrupted = False
    gw: Edgesim | None = None
    try:
        console.log(f"preparing certificates and the registry in {home}")
        mat = prepare(home)
        gw = Edgesim(mat)
        gw.start()
        console.log(f"edgesim: mqtts {HOST}:{gw.port}, api {HOST}:{gw.api_port} (pid {gw.pid})")
        for part in parts:
            console.rule(part)
            try:
                if part == "mqtt":
                    results[part] = asyncio.run(measure_mqtt(gw, mat, s))
                elif part == "boto3":
                    results[part] = measure_boto3(gw, home, s)
                else:
                    results[part] = measure_stored(gw, mat, s)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                results[part] = {"error": repr(exc)}
                console.log(f"[red]{part} failed:[/red] {exc!r}")
                console.log(f"edgesim log (tail):\n{gw.log_tail()}")
                if not gw.alive():
                    break
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: servers stopped[/yellow]")
    finally:
        stop_and_clean(gw, home, args.keep, console)

    if results:
        Console(width=max(console.width, 160)).print(report(results, s, args.quick))
        for part, res in results.items():
            if isinstance(res, dict) and "error" in res:
                console.print(f"[red]{part}: {res['error']}[/red]")
    if args.json:
        payload = {
            "quick": args.quick,
            "settings": asdict(s),
            "peer": {"updates_per_s": PEER_UPDATES_PER_S, "p99_ms": PEER_P99_MS},
            "results": _derive(results),
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        console.log(f"wrote {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
