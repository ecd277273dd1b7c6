"""Offered-load sweep for bench/sinks.py: the broker alone, rule → Kinesis and rule → SQS, side by side.

The same 100 mTLS devices (one connection each, MQTT 3.1.1, QoS 1) publish at each offered rate in turn to
`bench/<i>/plain` (a plain QoS 1 subscriber in its own process counts them: the broker alone),
`bench/<i>/kin` (a rule `SELECT * FROM 'bench/+/kin'` with a kinesis action) and `bench/<i>/sqs` (the same into
an SQS queue). Each step gets a fresh stream or queue (the rule is replaced to point at it), so every record is
counted back per step: lost (PUBACKed, never found), duplicates, found but never PUBACKed.

The generator is kept cheap, because it shares the two cores with the gateway: PUBLISH packets come from a byte
template per device (the topic prefix encoded once, the payload a fixed-width `%` format), every device writes
what its absolute schedule owes in one write per 5 ms tick, and PUBACKs are matched by packet id without decoding.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import HOST, Edgesim, Material, rss_kb
from mqttload import HEADER, PUBACK, Client, Subscriber, Target, close_all, connect_many, cpu_seconds, publish_prefix
from sinksload import boto_client, create_stream, kinesis_read, percentile

from mqttwire.frame import split_frame

PATHS = ("broker", "kinesis", "sqs")
MARK = os.environ.get("SINKS_SWEEP_MARK")  # a file written when each step's window begins
TICK_S = 0.005
PAYLOAD_BYTES = 160
ROLE = "arn:aws:iam::123456789012:role/bench"


@dataclass
class StepResult:
    path: str
    rate: int  # offered msg/s asked for
    window: int  # un-PUBACKed publishes a device keeps at most
    seconds: float
    sent: int
    acked: int
    acked_per_s: float  # PUBACKs received inside the window, per second
    landed: int  # unique records found (subscriber / stream / queue)
    landed_per_s: float  # unique found / window for the broker; by arrival time spread for the sinks
    lost: int  # PUBACKed, never found
    duplicates: int
    unacked_found: int  # found, but the device never got the PUBACK (still in flight when the window closed)
    slowed: int  # publishes a device held back because its window was full
    puback_p50_ms: float
    puback_p99_ms: float
    puback_max_ms: float
    gateway_cpu_pct: float
    gateway_us_per_msg: float  # gateway CPU per PUBACKed message: steadier than msg/s when others share the cores
    load_cpu_pct: float
    rss_start_mb: float
    rss_peak_mb: float
    errors: list[str] = field(default_factory=list)


class _Device:
    """One publisher: pre-encoded packets on an absolute schedule, ≤ `window` un-PUBACKed."""

    def __init__(self, client: Client, idx: int, path: str) -> None:
        self.client = client
        self.idx = idx
        self.path = path
        topic = f"bench/{idx}/{'plain' if path == 'broker' else path[:3]}"
        if path == "broker":
            self.pad = bytes(PAYLOAD_BYTES - HEADER.size)
        else:
            # Fixed width, so one prefix serves every packet: d and s as strings, t (wall µs, 16 digits) a number.
            self.fmt = b'{"d":"%04d","s":"%09d","t":%d,"p":"' + b"x" * 100 + b'"}'
            size = len(self.fmt % (0, 0, time.time_ns() // 1000))
        self.prefix = publish_prefix(topic, 1, (PAYLOAD_BYTES if path == "broker" else size))
        self.sent_ns = [0] * 65536
        self.inflight: set[int] = set()
        self.acked_ids: list[int] = []  # sequence numbers PUBACKed
        self.latencies: list[int] = []
        self.sent = self.slowed = 0
        self.acked_in_window = 0
        self.window_end_ns = 0
        self.room = asyncio.Event()
        self.pid_seq: dict[int, int] = {}

    def packet(self, seq: int, pid: int) -> bytes:
        if self.path == "broker":
            body = HEADER.pack(self.idx, seq, time.monotonic_ns()) + self.pad
        else:
            body = self.fmt % (self.idx, seq, time.time_ns() // 1000)
        return self.prefix + pid.to_bytes(2, "big") + body

    async def read_acks(self) -> None:
        client, sent_ns, inflight = self.client, self.sent_ns, self.inflight
        reader, buf = client.reader, client.buf
        pid_seq: dict[int, int] = self.pid_seq
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            now = time.monotonic_ns()
            buf += data
            pos = 0
            while (frame := split_frame(buf, pos, 1 << 20)) is not None:
                first, start, end = frame
                pos = end
                if first >> 4 == PUBACK and end - start >= 2:
                    pid = (buf[start] << 8) | buf[start + 1]
                    if pid in inflight:
                        inflight.discard(pid)
                        self.latencies.append(now - sent_ns[pid])
                        self.acked_ids.append(pid_seq.pop(pid))
                        if now <= self.window_end_ns:
                            self.acked_in_window += 1
            del buf[:pos]
            self.room.set()

    async def run(self, rate: float, window: int, start_ns: int, end_ns: int) -> None:
        interval = 1e9 / rate
        self.window_end_ns = end_ns
        reader = asyncio.create_task(self.read_acks())
        seq = 0
        offset = (self.idx % 100) * interval / 100  # spread the devices over one interval
        write = self.client.writer.write
        try:
            while True:
                now = time.monotonic_ns()
                if now >= end_ns:
                    break
                due = int((now - start_ns - offset) / interval) + 1 - seq
                room = window - len(self.inflight)
                n = min(due, room)
                if due > room:
                    self.slowed += due - max(room, 0)
                if n > 0:
                    parts = []
                    for _ in range(n):
                        seq += 1
                        pid = seq % 65535 + 1
                        self.inflight.add(pid)
                        self.pid_seq[pid] = seq
                        self.sent_ns[pid] = time.monotonic_ns()
                        parts.append(self.packet(seq, pid))
                    write(b"".join(parts))
                    self.sent += n
                    if due > room:
                        seq += due - room  # those publishes were never made: the schedule moves on
                if room <= 0:
                    self.room.clear()
                    try:
                        async with asyncio.timeout(max(0.0, (end_ns - time.monotonic_ns()) / 1e9)):
                            await self.room.wait()
                    except TimeoutError:
                        break
                    continue
                await asyncio.sleep(TICK_S)
            # Drain: the PUBACKs of what is in flight (up to 15 s).
            deadline = time.monotonic() + 15
            while self.inflight and time.monotonic() < deadline:
                self.room.clear()
                try:
                    async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                        await self.room.wait()
                except TimeoutError:
                    break
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def found_ids(self) -> set[int]:
        return {(self.idx << 32) | s for s in self.acked_ids}


async def _rss_sampler(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kb(pid))
        try:
            async with asyncio.timeout(0.2):
                await stop.wait()
        except TimeoutError:
            pass


async def publish_step(
    clients: list[Client], path: str, rate: int, window: int, seconds: float, gw_pid: int
) -> tuple[list[_Device], dict[str, float]]:
    devices = [_Device(c, i, path) for i, c in enumerate(clients)]
    per_device = rate / len(devices)
    start_ns = time.monotonic_ns() + 200_000_000
    end_ns = start_ns + int(seconds * 1e9)
    rss0 = rss_kb(gw_pid)
    peak = [rss0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_rss_sampler(gw_pid, peak, stop))
    tasks = [asyncio.create_task(d.run(per_device, window, start_ns, end_ns)) for d in devices]
    await asyncio.sleep((start_ns - time.monotonic_ns()) / 1e9)
    b0, g0, t0 = cpu_seconds(gw_pid), time.process_time(), time.perf_counter()
    if MARK:  # for a profiler started from outside: the window has begun
        Path(MARK).write_text(f"{path} {rate}\n")  # noqa: ASYNC240 - a few bytes, once per step
    await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
    b1, g1, t1 = cpu_seconds(gw_pid), time.process_time(), time.perf_counter()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stop.set()
    await sampler
    figures = {
        "seconds": t1 - t0,
        "gateway_cpu_pct": 100.0 * (b1 - b0) / (t1 - t0),
        "gateway_cpu_s": b1 - b0,
        "load_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
        "rss_start_mb": rss0 / 1024,
        "rss_peak_mb": peak[0] / 1024,
    }
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    if errors:
        figures["errors"] = errors  # type: ignore[assignment]
    return devices, figures


def _rule(path: str, target: str) -> dict[str, Any]:
    action: dict[str, Any]
    if path == "kinesis":
        action = {"kinesis": {"roleArn": ROLE, "streamName": target}}
    else:
        action = {"sqs": {"roleArn": ROLE, "queueUrl": target}}
    return {
        "sql": f"SELECT * FROM 'bench/+/{path[:3]}'",
        "awsIotSqlVersion": "2016-03-23",
        "ruleDisabled": False,
        "actions": [action],
    }


def _json_id(body: bytes | str) -> int:
    doc = json.loads(body)
    return (int(doc["d"]) << 32) | int(doc["s"])


def _sqs_read(endpoint: str, url: str, expected: int, threads: int = 4) -> tuple[list[tuple[int, float]], list[str]]:
    """ReceiveMessage(10) with SentTimestamp until `expected` unique bodies or two empty polls per thread; no
    deletes (the visibility timeout outlasts the read, and the queue is dropped after the step)."""
    lock = threading.Lock()
    found: list[tuple[int, float]] = []
    seen: set[int] = set()
    errors: list[str] = []
    done = threading.Event()

    def worker() -> None:
        client = boto_client("sqs", endpoint)
        empties = 0
        while not done.is_set() and empties < 2:
            try:
                resp = client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["SentTimestamp"]
                )
            except Exception as exc:
                with lock:
                    errors.append(repr(exc)[:200])
                time.sleep(0.1)
                continue
            msgs = resp.get("Messages", [])
            empties = 0 if msgs else empties + 1
            got = [(_json_id(m["Body"]), int(m["Attributes"]["SentTimestamp"]) / 1000.0) for m in msgs]
            with lock:
                found.extend(got)
                seen.update(i for i, _ in got)
                if len(seen) >= expected:
                    done.set()
        client.close()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)
    return found, errors[:5]


def _count(devices: list[_Device], found: list[tuple[int, float]], seconds: float) -> dict[str, Any]:
    acked: set[int] = set()
    for d in devices:
        acked |= d.found_ids()
    ids = [i for i, _ in found]
    unique = set(ids)
    arrivals = sorted(a for _, a in found)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return {
        "landed": len(unique),
        "landed_per_s": len(unique) / max(span, seconds),
        "lost": len(acked - unique),
        "duplicates": len(ids) - len(unique),
        "unacked_found": len(unique - acked),
    }


def _step_result(path: str, rate: int, window: int, devices: list[_Device], figs: dict[str, Any],
                 counts: dict[str, Any], errors: list[str]) -> StepResult:  # fmt: skip
    lat = sorted(x for d in devices for x in d.latencies)
    acked = sum(len(d.acked_ids) for d in devices)
    return StepResult(
        path=path,
        rate=rate,
        window=window,
        seconds=figs["seconds"],
        sent=sum(d.sent for d in devices),
        acked=acked,
        acked_per_s=sum(d.acked_in_window for d in devices) / figs["seconds"],
        slowed=sum(d.slowed for d in devices),
        puback_p50_ms=percentile(lat, 50) / 1e6,
        puback_p99_ms=percentile(lat, 99) / 1e6,
        puback_max_ms=(lat[-1] / 1e6) if lat else float("nan"),
        gateway_cpu_pct=figs["gateway_cpu_pct"],
        gateway_us_per_msg=1e6 * figs["gateway_cpu_s"] / max(1, sum(d.acked_in_window for d in devices)),
        load_cpu_pct=figs["load_cpu_pct"],
        rss_start_mb=figs["rss_start_mb"],
        rss_peak_mb=figs["rss_peak_mb"],
        errors=[*figs.get("errors", []), *errors],
        **counts,
    )


class Sweep:
    """Owns the device connections for the whole sweep; one `step()` per (path, rate)."""

    def __init__(self, gw: Edgesim, mat: Material, devices: int, seconds: float, shards: int) -> None:
        self.gw = gw
        self.target = Target(HOST, gw.port, mat.ca, mat.client_cert, mat.client_key)
        self.endpoint = f"http://{HOST}:{gw.api_port}"
        self.n = devices
        self.seconds = seconds
        self.shards = shards
        self.clients: list[Client] = []
        self.steps = 0
        self.iot = boto_client("iot", self.endpoint)
        self.sqs = boto_client("sqs", self.endpoint)
        self.kinesis = boto_client("kinesis", self.endpoint)

    async def open(self) -> None:
        ids = [f"bench-sweep-{i}" for i in range(self.n)]
        clients, errors, _ = await connect_many(self.target.host, self.target.port, self.target.context(), ids, 50)
        if errors:
            await close_all(clients)
            raise RuntimeError(f"{len(errors)} of {len(ids)} devices failed to connect, e.g. {errors[0]}")
        self.clients = clients
        for path in ("kinesis", "sqs"):
            self.iot.create_topic_rule(ruleName=f"bench_sweep_{path}", topicRulePayload=_rule(path, "unset"))

    async def close(self) -> None:
        await close_all(self.clients)
        for path in ("kinesis", "sqs"):
            self.iot.delete_topic_rule(ruleName=f"bench_sweep_{path}")
        for c in (self.iot, self.sqs, self.kinesis):
            c.close()

    async def step(self, path: str, rate: int, window: int) -> StepResult:
        self.steps += 1
        name = f"sweep-{path}-{self.steps}"
        loop = asyncio.get_running_loop()
        sub: Subscriber | None = None
        if path == "broker":
            sub = await Subscriber.start(self.target, f"bench-sweep-sub-{self.steps}", "bench/+/plain", 1, self.n)
        elif path == "kinesis":
            await loop.run_in_executor(None, create_stream, self.endpoint, name, self.shards)
            self.iot.replace_topic_rule(ruleName="bench_sweep_kinesis", topicRulePayload=_rule(path, name))
        else:
            url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
            self.iot.replace_topic_rule(ruleName="bench_sweep_sqs", topicRulePayload=_rule(path, url))
        devices, figs = await publish_step(self.clients, path, rate, window, self.seconds, self.gw.pid)
        acked = sum(len(d.acked_ids) for d in devices)
        errors: list[str] = []
        if sub is not None:
            # The subscriber counts per device; every delivery in order, so a repeat shows as out of order.
            deadline = time.monotonic() + 10
            while sub.received < acked and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            per_device = [sub.delivered(i) for i in range(len(devices))]
            report = await sub.finish()
            if report.error:
                errors.append(report.error)
            per = [min(len(d.acked_ids), got) for d, got in zip(devices, per_device, strict=True)]
            delivered = report.received - report.out_of_order
            counts = {
                "landed": delivered,
                "landed_per_s": delivered / figs["seconds"],
                "lost": acked - sum(per),
                "duplicates": report.out_of_order,
                "unacked_found": max(0, delivered - acked),
            }
        elif path == "kinesis":
            read = await loop.run_in_executor(
                None, lambda: kinesis_read(self.endpoint, name, self.gw.pid, lambda d, a: (_json_id(d), a.timestamp()))
            )
            errors += read.error_samples
            counts = _count(devices, read.values, figs["seconds"])
            await loop.run_in_executor(None, lambda: self.kinesis.delete_stream(StreamName=name))
        else:
            found, errs = await loop.run_in_executor(None, _sqs_read, self.endpoint, url, acked)
            errors += errs
            counts = _count(devices, found, figs["seconds"])
            await loop.run_in_executor(None, lambda: self.sqs.delete_queue(QueueUrl=url))
        return _step_result(path, rate, window, devices, figs, counts, errors)


def write_steps(path: Path, steps: list[StepResult]) -> None:
    from dataclasses import asdict

    path.write_text(json.dumps([asdict(s) for s in steps], indent=2))


def sustained(steps: list[StepResult], path: str) -> float:
    """The highest PUBACKed rate a path kept up with (≥ 90 % of the offered rate, nothing lost)."""
    ok = [s.acked_per_s for s in steps if s.path == path and s.acked_per_s >= 0.9 * s.rate and not s.lost]
    return max(ok, default=0.0)


async def run_sweep(
    gw: Edgesim, mat: Material, rates: list[int], *, window: int, seconds: float, shards: int,
    paths: tuple[str, ...] = PATHS, overload_window: int = 0, log: Any = print,
) -> list[StepResult]:  # fmt: skip
    """Every path at each rate, lowest first; a path that fell short (< 90 % of the rate) twice in a row is not driven
    higher.
    With `overload_window`, each rule path runs once more at the top rate with that window (devices that do not
    wait for their PUBACKs): the gateway's RSS must stay bounded, the publishers slowed."""
    sweep = Sweep(gw, mat, 100, seconds, shards)
    await sweep.open()
    steps: list[StepResult] = []
    saturated: set[str] = set()
    short: set[str] = set()
    try:
        for rate in rates:
            for path in paths:
                if path in saturated:
                    continue
                step = await sweep.step(path, rate, window)
                steps.append(step)
                log(_line(step))
                # Two steps in a row below 90 % of the offered rate: saturated (one alone may be another process).
                if step.acked_per_s < 0.9 * rate:
                    if path in short:
                        saturated.add(path)
                    short.add(path)
                else:
                    short.discard(path)
        if overload_window:
            for path in paths:
                if path == "broker":
                    continue
                step = await sweep.step(path, max(rates), overload_window)
                steps.append(step)
                log(_line(step))
    finally:
        await sweep.close()
    return steps


def _line(s: StepResult) -> str:
    return (
        f"{s.path:8} {s.rate:>6,}/s window {s.window}: PUBACKed {s.acked_per_s:,.0f}/s, landed {s.landed_per_s:,.0f}/s"
        f", p50 {s.puback_p50_ms:.1f} ms, p99 {s.puback_p99_ms:.1f} ms, max {s.puback_max_ms:.0f} ms; lost {s.lost}, "
        f"dup {s.duplicates}, unacked-found {s.unacked_found}, slowed {s.slowed:,}; "
        f"CPU gw {s.gateway_cpu_pct:.0f} % ({s.gateway_us_per_msg:.0f} µs/msg) "
        f"load {s.load_cpu_pct:.0f} %; RSS {s.rss_start_mb:.0f}→{s.rss_peak_mb:.0f} MB"
        + (f"; errors {s.errors[:2]}" if s.errors else "")
    )


def sweep_table(steps: list[StepResult], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    cols = ("path", "offered/s", "window", "PUBACKed/s", "landed/s", "p50 ms", "p99 ms", "max ms", "lost/dup",
            "unacked found", "slowed", "gw CPU %", "gw µs/msg", "load CPU %", "gw RSS MB", "vs broker")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "path" else "right")
    broker = {s.rate: s.acked_per_s for s in steps if s.path == "broker"}
    for s in sorted(steps, key=lambda s: (s.window, s.rate, PATHS.index(s.path))):
        ratio = f"{s.acked_per_s / broker[s.rate]:.2f}" if s.path != "broker" and broker.get(s.rate) else ""
        table.add_row(
            s.path, f"{s.rate:,}", str(s.window), f"{s.acked_per_s:,.0f}", f"{s.landed_per_s:,.0f}",
            f"{s.puback_p50_ms:.1f}", f"{s.puback_p99_ms:.1f}", f"{s.puback_max_ms:.0f}",
            f"{'[red]' if s.lost or s.duplicates else ''}{s.lost}/{s.duplicates}", f"{s.unacked_found}",
            f"{s.slowed:,}", f"{s.gateway_cpu_pct:.0f}", f"{s.gateway_us_per_msg:.0f}", f"{s.load_cpu_pct:.0f}",
            f"{s.rss_start_mb:.0f}→{s.rss_peak_mb:.0f}", ratio,
        )  # fmt: skip
    table.add_section()
    top = sustained(steps, "broker")
    for path in PATHS:
        best = sustained(steps, path)
        share = f"{best / top:.2f}" if top and path != "broker" else ""
        table.add_row(f"[bold]{path} sustained[/bold]", "", "", f"{best:,.0f}", *[""] * 11, share)
    return table
