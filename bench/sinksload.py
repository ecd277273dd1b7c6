"""Load generators for bench/sinks.py: boto3 Kinesis PutRecords / GetRecords and SQS send / drain, in threads.

Every record and message carries a unique id (thread, sequence number), so each phase can count exactly what the
server acknowledged against what comes back: loss, duplicates and records nobody acknowledged.

Also the kinesalite reference server (npm package, installed once under bench/.cache, which git ignores).
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqttload import cpu_seconds
from refserver import RefServer

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
REGION = "us-east-1"

RECORD_ID = struct.Struct(">BIQ")  # thread, sequence number, send time (time.time_ns)
THROTTLED = "ProvisionedThroughputExceededException"


def boto_client(service: str, endpoint: str) -> Any:
    """One client per thread, its own session; no botocore retries: the bench retries and counts itself."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4, read_timeout=120),
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(pct / 100.0 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


class CpuWindow:
    """CPU of the server process and of this (load) process over a window; 100 % = one core."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t0 = time.perf_counter()
        self.s0 = cpu_seconds(server_pid)
        self.g0 = time.process_time()

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        return {
            "server_cpu_pct": 100.0 * (cpu_seconds(self.pid) - self.s0) / elapsed,
            "load_cpu_pct": 100.0 * (time.process_time() - self.g0) / elapsed,
        }


# ---------------------------------------------------------------- Kinesis


@dataclass
class KinesisPut:
    threads: int
    batch: int
    record_bytes: int
    seconds: float  # first call to last acknowledgement
    calls: int
    acknowledged: int
    per_s: float
    mib_per_s: float
    throttled: int  # records rejected with ProvisionedThroughputExceededException (then retried)
    record_errors: dict[str, int]  # every per-record ErrorCode, throttling included
    call_errors: dict[str, int]  # whole calls that failed (the batch was retried)
    given_up: int  # records never acknowledged (retries exhausted after the window)
    server_cpu_pct: float
    load_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)
    acked_ids: list[int] = field(default_factory=list, repr=False)


def create_stream(endpoint: str, name: str, shards: int, timeout_s: float = 30.0) -> None:
    client = boto_client("kinesis", endpoint)
    client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    raise RuntimeError(f"stream {name} not ACTIVE after {timeout_s:g} s")


def kinesis_put(
    endpoint: str, stream: str, server_pid: int, *, threads: int, seconds: float, batch: int, record_bytes: int
) -> KinesisPut:
    """`threads` threads, one client each, PutRecords of `batch` records back to back for `seconds`.

    Records a call rejects (throttled or otherwise) go first into the thread's next call; after the window each
    thread retries what is left until it is acknowledged (at most 30 s), so every record generated is counted."""
    clients = [boto_client("kinesis", endpoint) for _ in range(threads)]
    lock = threading.Lock()
    acked: list[int] = []
    record_errors: Counter[str] = Counter()
    call_errors: Counter[str] = Counter()
    samples: list[str] = []
    totals = {"calls": 0, "given_up": 0, "last_ack": 0.0}
    pad = bytes(record_bytes - RECORD_ID.size)
    start_at = time.perf_counter() + 0.2
    end_at = start_at + seconds

    def worker(t: int) -> None:
        client = clients[t]
        mine: list[int] = []
        rec_err: Counter[str] = Counter()
        call_err: Counter[str] = Counter()
        pending: list[tuple[int, dict[str, Any]]] = []
        seq = calls = 0
        last_ack = 0.0
        backoff = 0.01
        time.sleep(max(0.0, start_at - time.perf_counter()))
        give_up_at = end_at + 30.0
        while True:
            now = time.perf_counter()
            if now >= end_at and not pending:
                break
            if now >= give_up_at:
                break
            batch_recs = pending
            if now < end_at:
                while len(batch_recs) < batch:
                    seq += 1
                    rid = (t << 32) | seq
                    data = RECORD_ID.pack(t, seq, time.time_ns()) + pad
                    batch_recs.append((rid, {"Data": data, "PartitionKey": f"{t}-{seq}"}))
            calls += 1
            try:
                resp = client.put_records(StreamName=stream, Records=[r for _, r in batch_recs])
            except Exception as exc:
                code = _error_code(exc)
                call_err[code] += 1
                if len(samples) < 5:
                    samples.append(f"PutRecords: {exc!r}"[:300])
                pending = batch_recs
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
                continue
            failed: list[tuple[int, dict[str, Any]]] = []
            for (rid, rec), result in zip(batch_recs, resp["Records"], strict=True):
                if "SequenceNumber" in result:
                    mine.append(rid)
                else:
                    rec_err[str(result.get("ErrorCode"))] += 1
                    failed.append((rid, rec))
            last_ack = time.perf_counter()
            pending = failed
            if failed:
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.01
        with lock:
            acked.extend(mine)
            record_errors.update(rec_err)
            call_errors.update(call_err)
            totals["calls"] += calls
            totals["given_up"] += len(pending)
            totals["last_ack"] = max(totals["last_ack"], last_ack)

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start_at - time.perf_counter()))
    cpu = CpuWindow(server_pid)
    time.sleep(max(0.0, end_at - time.perf_counter()))
    load = cpu.stop()
    for w in workers:
        w.join(60)
    for c in clients:
        c.close()
    elapsed = max(totals["last_ack"], end_at) - start_at
    n = len(acked)
    return KinesisPut(
        threads=threads,
        batch=batch,
        record_bytes=record_bytes,
        seconds=elapsed,
        calls=totals["calls"],
        acknowledged=n,
        per_s=n / elapsed,
        mib_per_s=n * record_bytes / elapsed / (1 << 20),
        throttled=record_errors.get(THROTTLED, 0),
        record_errors=dict(record_errors),
        call_errors=dict(call_errors),
        given_up=totals["given_up"],
        error_samples=samples,
        acked_ids=acked,
        **load,
    )


@dataclass
class KinesisRead:
    shards: int
    seconds: float
    calls: int
    records: int
    per_s: float
    throttled: int  # GetRecords calls refused with ProvisionedThroughputExceededException (then retried)
    undecodable: int  # records whose data the caller's decode() rejected (not in values)
    call_errors: dict[str, int]
    server_cpu_pct: float
    load_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list, repr=False)


def kinesis_read(
    endpoint: str, stream: str, server_pid: int, decode: Callable[[bytes, Any], Any], *, threads: int = 4
) -> KinesisRead:
    """Read every shard from TRIM_HORIZON to its tip (GetRecords, Limit 10,000), shards split over `threads`.

    `decode(data, approximate_arrival_timestamp)` turns each record into what the caller keeps."""
    lister = boto_client("kinesis", endpoint)
    shard_ids: list[str] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        page = lister.list_shards(**kwargs)
        shard_ids += [s["ShardId"] for s in page["Shards"]]
        if not page.get("NextToken"):
            break
        kwargs = {"NextToken": page["NextToken"]}
    lister.close()
    clients = [boto_client("kinesis", endpoint) for _ in range(threads)]
    lock = threading.Lock()
    values: list[Any] = []
    call_errors: Counter[str] = Counter()
    samples: list[str] = []
    totals = {"calls": 0, "throttled": 0, "undecodable": 0}

    def worker(t: int) -> None:
        client = clients[t]
        mine: list[Any] = []
        errs: Counter[str] = Counter()
        calls = throttled = undecodable = 0
        for shard_id in shard_ids[t::threads]:
            iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
            failures = 0
            while iterator:
                calls += 1
                try:
                    out = client.get_records(ShardIterator=iterator, Limit=10000)
                except Exception as exc:
                    code = _error_code(exc)
                    if code == THROTTLED:
                        throttled += 1
                    else:
                        errs[code] += 1
                        failures += 1
                        if len(samples) < 5:
                            samples.append(f"GetRecords {shard_id}: {exc!r}"[:300])
                        if failures > 20:
                            break
                    time.sleep(0.2)
                    continue
                records = out["Records"]
                for r in records:
                    try:
                        mine.append(decode(r["Data"], r["ApproximateArrivalTimestamp"]))
                    except Exception as exc:
                        undecodable += 1
                        if len(samples) < 5:
                            samples.append(f"undecodable record in {shard_id}: {exc!r}"[:300])
                iterator = out.get("NextShardIterator")
                if not records and not out.get("MillisBehindLatest"):
                    break
        with lock:
            values.extend(mine)
            call_errors.update(errs)
            totals["calls"] += calls
            totals["throttled"] += throttled
            totals["undecodable"] += undecodable

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    cpu = CpuWindow(server_pid)
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    load = cpu.stop()
    elapsed = time.perf_counter() - cpu.t0
    for c in clients:
        c.close()
    return KinesisRead(
        shards=len(shard_ids),
        seconds=elapsed,
        calls=totals["calls"],
        records=len(values),
        per_s=len(values) / elapsed,
        throttled=totals["throttled"],
        undecodable=totals["undecodable"],
        call_errors=dict(call_errors),
        error_samples=samples,
        values=values,
        **load,
    )


def record_id(data: bytes, _arrival: Any) -> int:
    t, seq, _ = RECORD_ID.unpack_from(data)
    return (t << 32) | seq


def reconcile(acked: list[int], read: list[int]) -> dict[str, int]:
    """Acknowledged vs read back: lost (acked, never read), duplicates, and records read that nobody acked."""
    acked_set = set(acked)
    counts = Counter(read)
    unique = set(counts)
    return {
        "acknowledged": len(acked),
        "read_back": len(read),
        "unique_read": len(unique),
        "lost": len(acked_set - unique),
        "duplicates": len(read) - len(unique),
        "unacknowledged_read": len(unique - acked_set),
    }


# ---------------------------------------------------------------- SQS


@dataclass
class SqsSend:
    threads: int
    seconds: float
    calls: int
    sent: int  # entries the server reported Successful
    per_s: float
    entry_errors: dict[str, int]
    call_errors: dict[str, int]
    given_up: int
    server_cpu_pct: float
    load_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)
    sent_ids: list[int] = field(default_factory=list, repr=False)


def sqs_send(
    endpoint: str, queue_url: str, server_pid: int, *, threads: int, seconds: float, body_bytes: int
) -> SqsSend:
    """`threads` threads, one client each, SendMessageBatch of 10 back to back; failed entries retried."""
    clients = [boto_client("sqs", endpoint) for _ in range(threads)]
    lock = threading.Lock()
    sent: list[int] = []
    entry_errors: Counter[str] = Counter()
    call_errors: Counter[str] = Counter()
    samples: list[str] = []
    totals = {"calls": 0, "given_up": 0, "last_ack": 0.0}
    start_at = time.perf_counter() + 0.2
    end_at = start_at + seconds

    def body(t: int, seq: int) -> str:
        head = f"{t:02d}-{seq:010d}-"
        return head + "m" * (body_bytes - len(head))

    def worker(t: int) -> None:
        client = clients[t]
        mine: list[int] = []
        e_err: Counter[str] = Counter()
        c_err: Counter[str] = Counter()
        pending: list[tuple[int, str]] = []
        seq = calls = 0
        last_ack = 0.0
        time.sleep(max(0.0, start_at - time.perf_counter()))
        while True:
            now = time.perf_counter()
            if (now >= end_at and not pending) or now >= end_at + 30.0:
                break
            batch = pending
            if now < end_at:
                while len(batch) < 10:
                    seq += 1
                    batch.append(((t << 32) | seq, body(t, seq)))
            entries = [{"Id": str(i), "MessageBody": b} for i, (_, b) in enumerate(batch)]
            calls += 1
            try:
                resp = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except Exception as exc:
                c_err[_error_code(exc)] += 1
                if len(samples) < 5:
                    samples.append(f"SendMessageBatch: {exc!r}"[:300])
                pending = batch
                time.sleep(0.05)
                continue
            ok = {int(e["Id"]) for e in resp.get("Successful", [])}
            for e in resp.get("Failed", []):
                e_err[str(e.get("Code"))] += 1
            mine += [batch[i][0] for i in ok]
            pending = [item for i, item in enumerate(batch) if i not in ok]
            last_ack = time.perf_counter()
        with lock:
            sent.extend(mine)
            entry_errors.update(e_err)
            call_errors.update(c_err)
            totals["calls"] += calls
            totals["given_up"] += len(pending)
            totals["last_ack"] = max(totals["last_ack"], last_ack)

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start_at - time.perf_counter()))
    cpu = CpuWindow(server_pid)
    time.sleep(max(0.0, end_at - time.perf_counter()))
    load = cpu.stop()
    for w in workers:
        w.join(60)
    for c in clients:
        c.close()
    elapsed = max(totals["last_ack"], end_at) - start_at
    return SqsSend(
        threads=threads,
        seconds=elapsed,
        calls=totals["calls"],
        sent=len(sent),
        per_s=len(sent) / elapsed,
        entry_errors=dict(entry_errors),
        call_errors=dict(call_errors),
        given_up=totals["given_up"],
        error_samples=samples,
        sent_ids=sent,
        **load,
    )


@dataclass
class SqsDrain:
    threads: int
    seconds: float  # first receive to the last non-empty receive (and its delete)
    receive_calls: int
    received: int  # messages delivered, duplicates included
    per_s: float
    deleted: int  # DeleteMessageBatch entries reported Successful
    delete_failed: int
    call_errors: dict[str, int]
    bad_body: int  # bodies that did not parse as a bench id
    server_cpu_pct: float
    load_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)
    received_ids: list[int] = field(default_factory=list, repr=False)


def sqs_drain(endpoint: str, queue_url: str, server_pid: int, *, threads: int, expected: int) -> SqsDrain:
    """ReceiveMessage(10) + DeleteMessageBatch from `threads` threads until `expected` distinct messages have come
    back, or every thread has seen the queue empty twice in a row (1 s long polls)."""
    clients = [boto_client("sqs", endpoint) for _ in range(threads)]
    lock = threading.Lock()
    received: list[int] = []
    seen: set[int] = set()
    call_errors: Counter[str] = Counter()
    samples: list[str] = []
    totals = {"calls": 0, "deleted": 0, "delete_failed": 0, "bad": 0, "last": 0.0}
    done = threading.Event()

    def worker(t: int) -> None:
        client = clients[t]
        empties = 0
        while not done.is_set() and empties < 2:
            try:
                resp = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            except Exception as exc:
                with lock:
                    call_errors[_error_code(exc)] += 1
                    if len(samples) < 5:
                        samples.append(f"ReceiveMessage: {exc!r}"[:300])
                time.sleep(0.05)
                continue
            msgs = resp.get("Messages", [])
            with lock:
                totals["calls"] += 1
            if not msgs:
                empties += 1
                continue
            empties = 0
            ids: list[int] = []
            bad = 0
            for m in msgs:
                try:
                    t_s, seq_s, _ = m["Body"].split("-", 2)
                    ids.append((int(t_s) << 32) | int(seq_s))
                except ValueError:
                    bad += 1
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
            try:
                out = client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                ok, failed = len(out.get("Successful", [])), len(out.get("Failed", []))
            except Exception as exc:
                ok, failed = 0, len(entries)
                with lock:
                    call_errors[_error_code(exc)] += 1
                    if len(samples) < 5:
                        samples.append(f"DeleteMessageBatch: {exc!r}"[:300])
            now = time.perf_counter()
            with lock:
                received.extend(ids)
                seen.update(ids)
                totals["deleted"] += ok
                totals["delete_failed"] += failed
                totals["bad"] += bad
                totals["last"] = max(totals["last"], now)
                if len(seen) >= expected:
                    done.set()

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    cpu = CpuWindow(server_pid)
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)
    load = cpu.stop()
    elapsed = (totals["last"] or time.perf_counter()) - cpu.t0
    for c in clients:
        c.close()
    return SqsDrain(
        threads=threads,
        seconds=elapsed,
        receive_calls=totals["calls"],
        received=len(received),
        per_s=len(received) / elapsed,
        deleted=totals["deleted"],
        delete_failed=totals["delete_failed"],
        call_errors=dict(call_errors),
        bad_body=totals["bad"],
        error_samples=samples,
        received_ids=received,
        **load,
    )


# ---------------------------------------------------------------- kinesalite


def ensure_kinesalite() -> Path:
    """kinesalite's cli.js, `npm install`ed once into bench/.cache/kinesalite (git-ignored)."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    home = CACHE / "kinesalite"
    cli = home / "node_modules" / "kinesalite" / "cli.js"
    if cli.exists():
        return cli
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: cannot install kinesalite")
    home.mkdir(exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "kinesalite"], cwd=home, check=True)
    if not cli.exists():
        raise RuntimeError(f"npm install kinesalite did not produce {cli}")
    return cli


def kinesalite_version(cli: Path) -> str:
    import json

    return "kinesalite " + json.loads((cli.parent / "package.json").read_text())["version"]


class Kinesalite(RefServer):
    """In-memory kinesalite (no --path) on an ephemeral port; streams ACTIVE immediately, shard limit raised."""

    name = "kinesalite"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.cli = ensure_kinesalite()
        self.version = kinesalite_version(self.cli)

    def argv(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH")
        return [node, str(self.cli), "--port", str(self.port), "--shardLimit", "1000",
                "--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0"]  # fmt: skip
