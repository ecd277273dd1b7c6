"""Sinks benchmark: edgesim's Kinesis and SQS over boto3 against kinesalite and moto_server, and rule → Kinesis.

usage: python bench/sinks.py [--quick] [--only kinesis,sqs,rule] [--json out.json] [--rule-rate N] [--keep]

Servers run one at a time on 127.0.0.1 ephemeral ports (the edgesim gateway stays up, idle, while a reference is
measured); the load runs in this process, boto3 callers in threads with one client each. On two cores server and
load generator get about one each: the CPU rows say who was the bottleneck (100 % = one core).

(a) kinesis: PutRecords, batches of 500 x 200-byte records, 4 threads, 10 s (3 s with --quick), into a 32-shard
    stream (so the per-shard write limits, which edgesim enforces like AWS, do not cap the figure; throttled records
    are counted and retried). Then GetRecords reads every shard back from TRIM_HORIZON (4 threads), and every record
    id is checked against what PutRecords acknowledged: lost, duplicated, read but never acknowledged.
    Reference: kinesalite (npm, in memory). edgesim commits each call to SQLite before answering.
(b) sqs: SendMessageBatch (10 x 200 B) from 4 threads for 10 s, then ReceiveMessage(10) + DeleteMessageBatch from
    4 threads until every message has come back; sent vs received vs deleted, duplicates, left in the queue.
    Reference: moto_server. Queue VisibilityTimeout 300 s, so a slow drain cannot cause redeliveries.
(c) rule: 100 mTLS devices (5 msg/s each by default) publish QoS 1 JSON to `bench/<i>/data` on an absolute schedule
    (≤ 10 un-PUBACKed each);
    a topic rule `SELECT * FROM 'bench/+/data'` with a kinesis action writes them into a 32-shard stream. Afterwards
    GetRecords reads them all back: records/s landing (by ApproximateArrivalTimestamp), and publish→durable latency
    (ApproximateArrivalTimestamp, which edgesim keeps in ms, minus the send time embedded in the payload).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from broker import HOST, Edgesim, Material, _on_sigterm, _raise_nofile, prepare
from common import stop_and_clean, write_json
from mqttload import PUBACK, Client, Target, close_all, connect_many, cpu_seconds, publish_prefix
from rich.console import Console
from rich.table import Table
from shadow import MotoServer, _wait_idle
from sinksload import (
    Kinesalite,
    boto_client,
    create_stream,
    kinesis_put,
    kinesis_read,
    percentile,
    reconcile,
    record_id,
    sqs_drain,
    sqs_send,
)
from sinksweep import run_sweep, sweep_table

PARTS = ("kinesis", "sqs", "rule", "sweep")
console = Console()


@dataclass(frozen=True)
class Settings:
    threads: int
    put_seconds: float
    batch: int
    record_bytes: int
    shards: int
    sqs_seconds: float
    devices: int
    rule_rate: float  # publishes per second per device
    rule_seconds: float


# 5/s per device (500/s offered): below the ~650 records/s the rule → Kinesis path sustained in a trial run.
FULL = Settings(4, 10.0, 500, 200, 32, 10.0, 100, 5.0, 10.0)
QUICK = Settings(4, 3.0, 500, 200, 32, 3.0, 100, 5.0, 3.0)


# ---------------------------------------------------------------- (a) Kinesis


def measure_kinesis(name: str, endpoint: str, pid: int, s: Settings) -> dict[str, Any]:
    stream = "bench-put"
    create_stream(endpoint, stream, s.shards)
    _wait_idle(pid)
    with console.status(
        f"[bold]{name}[/bold]: PutRecords {s.threads} threads x {s.batch} records, {s.put_seconds:g} s"
    ):
        put = kinesis_put(
            endpoint, stream, pid, threads=s.threads, seconds=s.put_seconds, batch=s.batch, record_bytes=s.record_bytes
        )
    console.log(
        f"{name}: PutRecords {put.acknowledged:,} acknowledged in {put.seconds:.2f} s = {put.per_s:,.0f} records/s "
        f"({put.mib_per_s:.2f} MiB/s, {put.calls:,} calls); throttled {put.throttled:,}, record errors "
        f"{put.record_errors}, call errors {put.call_errors}, given up {put.given_up}; CPU server "
        f"{put.server_cpu_pct:.0f} %, load {put.load_cpu_pct:.0f} %"
    )
    for err in put.error_samples:
        console.log(f"[red]{name}: {err}[/red]")
    _wait_idle(pid)
    with console.status(f"[bold]{name}[/bold]: GetRecords reading {put.acknowledged:,} records back"):
        read = kinesis_read(endpoint, stream, pid, record_id, threads=s.threads)
    counts = reconcile(put.acked_ids, read.values)
    console.log(
        f"{name}: GetRecords {read.records:,} in {read.seconds:.2f} s = {read.per_s:,.0f} records/s "
        f"({read.calls:,} calls over {read.shards} shards, throttled {read.throttled}, errors {read.call_errors}); "
        f"{counts}"
    )
    for err in read.error_samples:
        console.log(f"[red]{name}: {err}[/red]")
    if counts["lost"] or counts["duplicates"]:
        console.log(
            f"[red]{name}: {counts['lost']:,} acknowledged records lost, {counts['duplicates']:,} duplicates[/red]"
        )
    put_d = {k: v for k, v in asdict(put).items() if k != "acked_ids"}
    read_d = {k: v for k, v in asdict(read).items() if k != "values"}
    return {"put": put_d, "read": read_d, "check": counts}


# ---------------------------------------------------------------- (b) SQS


def measure_sqs(name: str, endpoint: str, pid: int, s: Settings) -> dict[str, Any]:
    client = boto_client("sqs", endpoint)
    url = client.create_queue(QueueName="bench-sqs", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    _wait_idle(pid)
    with console.status(f"[bold]{name}[/bold]: SendMessageBatch {s.threads} threads x 10, {s.sqs_seconds:g} s"):
        send = sqs_send(endpoint, url, pid, threads=s.threads, seconds=s.sqs_seconds, body_bytes=s.record_bytes)
    console.log(
        f"{name}: SendMessageBatch {send.sent:,} sent in {send.seconds:.2f} s = {send.per_s:,.0f} msgs/s "
        f"({send.calls:,} calls); entry errors {send.entry_errors}, call errors {send.call_errors}, given up "
        f"{send.given_up}; CPU server {send.server_cpu_pct:.0f} %, load {send.load_cpu_pct:.0f} %"
    )
    for err in send.error_samples:
        console.log(f"[red]{name}: {err}[/red]")
    _wait_idle(pid)
    with console.status(f"[bold]{name}[/bold]: draining {send.sent:,} messages, {s.threads} threads"):
        drain = sqs_drain(endpoint, url, pid, threads=s.threads, expected=len(set(send.sent_ids)))
    counts = reconcile(send.sent_ids, drain.received_ids)
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    left = {k: int(attrs.get(k, 0)) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")}
    client.close()
    counts |= {"deleted": drain.deleted, "delete_failed": drain.delete_failed, "left_in_queue": sum(left.values())}
    console.log(
        f"{name}: drain {drain.received:,} received in {drain.seconds:.2f} s = {drain.per_s:,.0f} msgs/s "
        f"({drain.receive_calls:,} receives); CPU server {drain.server_cpu_pct:.0f} %, "
        f"load {drain.load_cpu_pct:.0f} %; "
        f"{counts}; queue afterwards {left}"
    )
    for err in drain.error_samples:
        console.log(f"[red]{name}: {err}[/red]")
    send_d = {k: v for k, v in asdict(send).items() if k != "sent_ids"}
    drain_d = {k: v for k, v in asdict(drain).items() if k != "received_ids"}
    return {"send": send_d, "drain": drain_d, "check": counts, "queue_after": left}


# ---------------------------------------------------------------- (c) rule → Kinesis


async def _paced_device(
    client: Client, idx: int, rate: float, start_ns: int, end_ns: int, tally: list[list[int]], pad: str
) -> None:
    """QoS 1 JSON publishes at `rate`/s on an absolute schedule, ≤ 10 un-PUBACKed.

    tally[idx] = [sent, acked, stalled]."""
    prefix_topic = f"bench/{idx}/data"
    interval = int(1e9 / rate)
    inflight: set[int] = set()
    room = asyncio.Event()
    room.set()
    idle = asyncio.Event()

    async def acks() -> None:
        while True:
            for first, body in await client.read_frames():
                if first >> 4 == PUBACK:
                    pid = (body[0] << 8) | body[1]
                    if pid in inflight:
                        inflight.discard(pid)
                        tally[idx][1] += 1
                    room.set()
                    if not inflight:
                        idle.set()

    reader = asyncio.create_task(acks())
    seq = 0
    next_ns = start_ns + (idx * interval) // 100  # spread the devices over one interval
    try:
        while next_ns < end_ns:
            delay = (next_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= 10:
                room.clear()
                try:
                    async with asyncio.timeout(max(0.0, (end_ns - time.monotonic_ns()) / 1e9)):
                        while len(inflight) >= 10:
                            room.clear()
                            await room.wait()
                except TimeoutError:
                    tally[idx][2] += 1  # window still full at the end: stalled
                    break
            seq += 1
            pid = seq % 65535 + 1
            payload = json.dumps({"d": idx, "s": seq, "t": time.time_ns() // 1000, "p": pad}).encode()
            inflight.add(pid)
            client.writer.write(publish_prefix(prefix_topic, 1, len(payload)) + pid.to_bytes(2, "big") + payload)
            tally[idx][0] += 1
            next_ns += interval
        if inflight:
            idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await idle.wait()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _publish_devices(target: Target, s: Settings, gw_pid: int) -> dict[str, Any]:
    ids = [f"bench-rule-{i}" for i in range(s.devices)]
    clients, errors, _ = await connect_many(target.host, target.port, target.context(), ids, 50)
    if errors:
        await close_all(clients)
        raise RuntimeError(f"{len(errors)} of {len(ids)} devices failed to connect, e.g. {errors[0]}")
    tally = [[0, 0, 0] for _ in clients]
    pad = "x" * 120
    try:
        start_ns = time.monotonic_ns() + 300_000_000
        end_ns = start_ns + int(s.rule_seconds * 1e9)
        tasks = [
            asyncio.create_task(_paced_device(c, i, s.rule_rate, start_ns, end_ns, tally, pad))
            for i, c in enumerate(clients)
        ]
        await asyncio.sleep((start_ns - time.monotonic_ns()) / 1e9)
        b0, g0, t0 = cpu_seconds(gw_pid), time.process_time(), time.perf_counter()
        await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
        b1, g1, t1 = cpu_seconds(gw_pid), time.process_time(), time.perf_counter()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        task_errors = [repr(r) for r in results if isinstance(r, BaseException)]
    finally:
        await close_all(clients)
    return {
        "sent": sum(t[0] for t in tally),
        "acked": sum(t[1] for t in tally),
        "stalled_devices": sum(t[2] for t in tally),
        "seconds": t1 - t0,
        "gateway_cpu_pct": 100.0 * (b1 - b0) / (t1 - t0),
        "load_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
        "errors": task_errors[:5],
        "publish_wall_start": time.time() - (time.perf_counter() - t0),
    }


def _rule_record(data: bytes, arrival: Any) -> tuple[int, float, float]:
    doc = json.loads(data)
    arrival_s = arrival.timestamp()
    return (int(doc["d"]) << 32) | int(doc["s"]), arrival_s, arrival_s * 1000.0 - doc["t"] / 1000.0


def measure_rule(gw: Edgesim, mat: Material, s: Settings) -> dict[str, Any]:
    endpoint = f"http://{HOST}:{gw.api_port}"
    stream = "bench-rule"
    create_stream(endpoint, stream, s.shards)
    iot = boto_client("iot", endpoint)
    iot.create_topic_rule(
        ruleName="bench_sinks_kinesis",
        topicRulePayload={
            "sql": "SELECT * FROM 'bench/+/data'",
            "awsIotSqlVersion": "2016-03-23",
            "ruleDisabled": False,
            "actions": [{"kinesis": {"roleArn": "arn:aws:iam::123456789012:role/bench", "streamName": stream}}],
        },
    )
    iot.close()
    _wait_idle(gw.pid)
    before = gw.broker_stats()
    target = Target(HOST, gw.port, mat.ca, mat.client_cert, mat.client_key)
    with console.status(
        f"[bold]edgesim[/bold]: rule → Kinesis, {s.devices} devices x {s.rule_rate:g}/s QoS 1 for {s.rule_seconds:g} s"
    ):
        pub = asyncio.run(_publish_devices(target, s, gw.pid))
    console.log(
        f"edgesim: published {pub['sent']:,} (PUBACKed {pub['acked']:,}) in {pub['seconds']:.2f} s; CPU gateway "
        f"{pub['gateway_cpu_pct']:.0f} %, load {pub['load_cpu_pct']:.0f} %"
    )
    for err in pub["errors"]:
        console.log(f"[red]edgesim rule publisher: {err}[/red]")

    # The rule actions may still be running: read back until every acknowledged publish is in, or no growth for 5 s.
    read = None
    last_count, last_growth = -1, time.monotonic()
    with console.status("[bold]edgesim[/bold]: reading the rule's stream back"):
        while True:
            read = kinesis_read(endpoint, stream, gw.pid, _rule_record, threads=s.threads)
            unique = len({v[0] for v in read.values})
            if unique >= pub["acked"]:
                break
            if unique > last_count:
                last_count, last_growth = unique, time.monotonic()
            elif time.monotonic() - last_growth > 5:
                break
            time.sleep(0.5)
    after = gw.broker_stats()
    values = read.values
    ids = [v[0] for v in values]
    dup = len(ids) - len(set(ids))
    arrivals = sorted(v[1] for v in values)
    lat = sorted(v[2] for v in values)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    in_window = sum(1 for a in arrivals if pub["publish_wall_start"] <= a <= pub["publish_wall_start"] + pub["seconds"])
    out = {
        "published": pub["sent"],
        "acked": pub["acked"],
        "in_stream": len(values),
        "unique_in_stream": len(set(ids)),
        "duplicates": dup,
        "lost": max(0, pub["acked"] - len(set(ids))),
        "offered_per_s": pub["acked"] / pub["seconds"],
        "landed_per_s": len(values) / span if span and not math.isnan(span) else float("nan"),
        "landed_in_window_per_s": in_window / pub["seconds"],
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
        "gateway_cpu_pct": pub["gateway_cpu_pct"],
        "load_cpu_pct": pub["load_cpu_pct"],
        "read_throttled": read.throttled,
        "publisher_errors": pub["errors"],
        "gateway_stats": {
            k: int(after[k]) - int(before.get(k, 0))
            for k in (after or {})
            if before is not None and isinstance(after[k], int) and k != "connections"
        },
    }
    console.log(
        f"edgesim rule: published {out['published']:,}, PUBACKed {out['acked']:,}, in stream {out['in_stream']:,} "
        f"(unique {out['unique_in_stream']:,}, duplicates {dup}, lost {out['lost']}); landed {out['landed_per_s']:,.0f}"
        f" records/s (offered {out['offered_per_s']:,.0f}/s); publish→durable p50 {out['p50_ms']:.1f} ms, p99 "
        f"{out['p99_ms']:.1f} ms, max {out['max_ms']:.1f} ms; gateway counters {out['gateway_stats']}"
    )
    return out


# ---------------------------------------------------------------- report

# (label, part, path, unit, goal ratio or None, higher is better or None)
Row = tuple[str, str, tuple[str, ...], str, float | None, bool | None]
ROWS: list[Row] = [
    ("PutRecords throughput", "kinesis", ("put", "per_s"), "records/s", 1.0, True),
    ("PutRecords bandwidth", "kinesis", ("put", "mib_per_s"), "MiB/s", None, True),
    ("GetRecords read-back throughput", "kinesis", ("read", "per_s"), "records/s", None, True),
    ("Put acknowledged", "kinesis", ("check", "acknowledged"), "records", None, None),
    ("Read back (unique)", "kinesis", ("check", "unique_read"), "records", None, None),
    ("Lost (acked, not read back)", "kinesis", ("check", "lost"), "records", None, None),
    ("Duplicates read back", "kinesis", ("check", "duplicates"), "records", None, None),
    ("Read back, never acknowledged", "kinesis", ("check", "unacknowledged_read"), "records", None, None),
    ("ProvisionedThroughputExceeded (retried)", "kinesis", ("put", "throttled"), "records", None, None),
    ("PutRecords given up", "kinesis", ("put", "given_up"), "records", None, None),
    ("Server CPU during puts", "kinesis", ("put", "server_cpu_pct"), "CPU %", None, None),
    ("Load-gen CPU during puts", "kinesis", ("put", "load_cpu_pct"), "CPU %", None, None),
    ("SendMessageBatch throughput", "sqs", ("send", "per_s"), "msgs/s", 20.0, True),
    ("Receive+DeleteMessageBatch drain", "sqs", ("drain", "per_s"), "msgs/s", 20.0, True),
    ("Sent (acknowledged)", "sqs", ("check", "acknowledged"), "msgs", None, None),
    ("Received (incl. duplicates)", "sqs", ("check", "read_back"), "msgs", None, None),
    ("Deleted", "sqs", ("check", "deleted"), "msgs", None, None),
    ("Duplicates received", "sqs", ("check", "duplicates"), "msgs", None, None),
    ("Lost (sent, never received)", "sqs", ("check", "lost"), "msgs", None, None),
    ("Left in queue afterwards", "sqs", ("check", "left_in_queue"), "msgs", None, None),
    ("Server CPU during sends", "sqs", ("send", "server_cpu_pct"), "CPU %", None, None),
    ("Load-gen CPU during sends", "sqs", ("send", "load_cpu_pct"), "CPU %", None, None),
    ("Server CPU during drain", "sqs", ("drain", "server_cpu_pct"), "CPU %", None, None),
    ("Load-gen CPU during drain", "sqs", ("drain", "load_cpu_pct"), "CPU %", None, None),
    ("Publishes offered (PUBACKed)", "rule", ("offered_per_s",), "msg/s", None, None),
    ("Records landing in stream", "rule", ("landed_per_s",), "records/s", None, None),
    ("Publish→durable p50", "rule", ("p50_ms",), "ms", None, None),
    ("Publish→durable p99", "rule", ("p99_ms",), "ms", None, None),
    ("Publish→durable max", "rule", ("max_ms",), "ms", None, None),
    ("Published (PUBACKed)", "rule", ("acked",), "msgs", None, None),
    ("Records in stream", "rule", ("in_stream",), "records", None, None),
    ("Lost / duplicates", "rule", ("lost",), "records", None, None),
    ("Gateway CPU during publishing", "rule", ("gateway_cpu_pct",), "CPU %", None, None),
    ("Load-gen CPU during publishing", "rule", ("load_cpu_pct",), "CPU %", None, None),
]
REFERENCE = {"kinesis": "kinesalite", "sqs": "moto_server", "rule": None}


def _get(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    cur: Any = result
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return None if cur is None else float(cur)


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit in ("ms", "MiB/s"):
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def report(results: dict[str, Any], s: Settings, quick: bool) -> Table:
    table = Table(
        title=f"edgesim sinks benchmark ({'--quick' if quick else 'full'}: {s.threads} boto3 threads, "
        f"{s.put_seconds:g} s put / {s.sqs_seconds:g} s send windows, {s.shards}-shard streams; rule: {s.devices} "
        f"devices x {s.rule_rate:g}/s for {s.rule_seconds:g} s; all on {HOST})"
    )
    for col, justify in (("figure", "left"), ("unit", "left"), ("edgesim", "right"), ("reference", "right"),
                         ("edgesim/ref", "right"), ("goal", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    current = None
    for label, part, path, unit, goal, higher in ROWS:
        if part not in results:
            continue
        if part != current:
            if current is not None:
                table.add_section()
            ref = REFERENCE[part]
            table.add_row(f"[bold]{part}[/bold]", "", "edgesim", ref or "", "", "")
            current = part
        ours = _get(results[part].get("edgesim"), path)
        theirs = _get(results[part].get(REFERENCE[part] or ""), path) if REFERENCE[part] else None
        ours_s = _fmt(ours, unit)
        if part == "rule" and label.startswith("Lost"):
            ours_s = f"{_fmt(ours, unit)} / {_fmt(_get(results[part].get('edgesim'), ('duplicates',)), unit)}"
        ratio = "—"
        if higher is not None and ours is not None and theirs and not math.isnan(ours) and not math.isnan(theirs):
            r = ours / theirs
            good = r >= (goal or 1.0) if higher else r <= (goal or 1.0)
            ratio = f"[{'green' if good else 'red'}]{r:.2f}x[/]"
        table.add_row(label, unit, ours_s, _fmt(theirs, unit), ratio, f"≥ {goal:g}x" if goal else "")
    return table


# ---------------------------------------------------------------- main


def run_reference(part: str, home: Path, s: Settings) -> dict[str, Any]:
    server: Kinesalite | MotoServer = Kinesalite(home) if part == "kinesis" else MotoServer(home)
    try:
        server.start()
        console.log(f"{REFERENCE[part]} on {server.endpoint} (pid {server.pid})")
        if part == "kinesis":
            out = measure_kinesis("kinesalite", server.endpoint, server.pid, s)
            out["version"] = server.version  # type: ignore[union-attr]
        else:
            from importlib.metadata import version

            out = measure_sqs("moto_server", server.endpoint, server.pid, s)
            out["version"] = f"moto {version('moto')}"
        return out
    except Exception:
        console.log(f"{REFERENCE[part]} log (tail):\n{server.log_tail()}")
        raise
    finally:
        server.stop()


def _sweep(gw: Edgesim, mat: Material, args: argparse.Namespace) -> list[Any]:
    console.rule("sweep")
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    seconds = args.step_seconds or (2.0 if args.quick else 5.0)
    return asyncio.run(
        run_sweep(gw, mat, rates, window=args.window, seconds=seconds, shards=64, paths=paths,
                  overload_window=args.overload_window, log=console.log)
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s windows: a sanity run")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write every figure (and raw counts) here")
    parser.add_argument("--rule-rate", type=float, help="(c) publishes per second per device (default 5)")
    parser.add_argument(
        "--rates",
        default="2500,5000,10000,15000,20000,25000,30000,40000",
        help="(sweep) offered msg/s per step, all devices together",
    )
    parser.add_argument("--paths", default="broker,kinesis,sqs", help="(sweep) which paths to drive")
    parser.add_argument("--window", type=int, default=100, help="(sweep) un-PUBACKed publishes per device at most")
    parser.add_argument("--step-seconds", type=float, help="(sweep) seconds per step (default 5, --quick 2)")
    parser.add_argument(
        "--overload-window",
        type=int,
        default=2000,
        help="(sweep) after the sweep, each rule path at the top rate with this window (0: skip)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (certs, database, logs)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if sorted(set(parts) - set(PARTS)) or not parts:
        parser.error(f"--only takes {','.join(PARTS)}; got {args.only!r}")
    parts = [p for p in PARTS if p in parts]
    if args.only == ",".join(PARTS):
        parts = ["kinesis", "sqs", "rule"]  # the sweep runs only when asked for: it takes minutes
    s = QUICK if args.quick else FULL
    if args.rule_rate:
        s = replace(s, rule_rate=args.rule_rate)
    _raise_nofile()
    signal.signal(signal.SIGTERM, _on_sigterm)

    home = Path(tempfile.mkdtemp(prefix="edgesim-sinks-bench-"))
    results: dict[str, Any] = {}
    interrupted = False
    gw: Edgesim | None = None
    try:
        console.log(f"preparing certificates and the registry in {home}")
        mat = prepare(home)
        gw = Edgesim(mat)
        gw.start()
        endpoint = f"http://{HOST}:{gw.api_port}"
        console.log(f"edgesim: mqtts {HOST}:{gw.port}, api {endpoint} (pid {gw.pid})")
        if "sweep" in parts:
            results["sweep"] = _sweep(gw, mat, args)
            parts.remove("sweep")
        for part in parts:
            console.rule(part)
            results[part] = {}
            for who in ("edgesim", REFERENCE[part]):
                if who is None:
                    continue
                try:
                    if who != "edgesim":
                        results[part][who] = run_reference(part, home, s)
                    elif part == "kinesis":
                        results[part][who] = measure_kinesis("edgesim", endpoint, gw.pid, s)
                    elif part == "sqs":
                        results[part][who] = measure_sqs("edgesim", endpoint, gw.pid, s)
                    else:
                        results[part][who] = measure_rule(gw, mat, s)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    results[part][who] = {"error": repr(exc)}
                    console.log(f"[red]{part} / {who} failed:[/red] {exc!r}")
                    if who == "edgesim":
                        console.log(f"edgesim log (tail):\n{gw.log_tail()}")
                if not gw.alive():
                    raise RuntimeError(f"edgesim exited (code {gw.proc.returncode if gw.proc else None})")
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: servers stopped[/yellow]")
    finally:
        stop_and_clean(gw, home, args.keep, console)

    sweep = results.pop("sweep", None)
    if sweep:
        wide = Console(width=max(console.width, 170))
        wide.print(sweep_table(sweep, f"offered-load sweep: 100 mTLS devices, QoS 1, {args.window} un-PUBACKed each"))
        results["sweep"] = [asdict(step) for step in sweep]
    if any(k != "sweep" for k in results):
        Console(width=max(console.width, 140)).print(report(results, s, args.quick))
        for part, by in results.items():
            for who, res in by.items():
                if isinstance(res, dict) and "error" in res:
                    console.print(f"[red]{part} / {who}: {res['error']}[/red]")
    write_json(args.json, args.quick, s, results, console)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
