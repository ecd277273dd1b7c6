"""A minimal asyncio MQTT 3.1.1 load generator over mutual TLS.

Raw packet encoding on `asyncio.open_connection(ssl=...)` with TCP_NODELAY: no client library, no threads, so one
process can drive a hundred publishers without becoming the bottleneck first.

The subscriber of the fan-in and latency scenarios runs in a process of its own (`python bench/mqttload.py
subscribe ...`): in the publishers' busy event loop its PUBACKs would wait a whole loop turn, and a broker with a
small in-flight window to that subscriber would be measured against our loop instead of its own. The two processes
share counters through a small memory-mapped file: messages received in total and per publisher.

Every payload starts with a 14-byte header (publisher index, sequence number, send time in monotonic ns), so the
subscriber can count loss, spot duplicates or reordering, and measure publish-to-receive latency.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import contextlib
import gc
import json
import mmap
import os
import socket
import ssl
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.frame import decode_varint, encode_varint, split_frame
from mqttwire.packets import (
    CONNACK,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    V5,
    V311,
    Connect,
    Subscribe,
    SubscribeFilter,
)

# Python 3.11's asyncio zero-fills a 256 KiB read buffer for every TLS connection: a tenth of this generator's CPU
# per connect, which capped the connect phase below what either broker takes. TLS records are at most 16 KiB.
if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > 32 * 1024:
    asyncio.sslproto.SSLProtocol.max_size = 32 * 1024

# ---------------------------------------------------------------- packets (mqttwire's codec)

__all__ = ["CONNACK", "PINGRESP", "PUBACK", "PUBLISH", "SUBACK", "V5", "V311"]

DISCONNECT_BYTES = codec.DISCONNECT_V3_BYTES
HEADER = struct.Struct(">HIQ")  # publisher index, sequence number, send time (time.monotonic_ns)
PUBACK_HEAD = b"\x40\x02"
MAX_REMAINING = 268_435_455


def connect_packet(client_id: str, keep_alive: int = 300, clean_session: bool = True, protocol: int = V311) -> bytes:
    return codec.encode(Connect(client_id, protocol, clean_session, keep_alive), protocol)


def publish_prefix(topic: str, qos: int, body_len: int, properties: bytes = b"") -> bytes:
    """Fixed header and topic of a PUBLISH whose payload (plus packet id for QoS 1) is `body_len` bytes. For MQTT 5,
    `properties` is the encoded property block the caller puts after the packet id (b"\x00": none); its length
    counts here."""
    topic_field = mp.encode_string(topic)
    remaining = len(topic_field) + (2 if qos else 0) + len(properties) + body_len
    return bytes((0x30 | (qos << 1),)) + encode_varint(remaining) + topic_field


def puback_packet(packet_id: int) -> bytes:
    return codec.puback(packet_id)


def subscribe_packet(packet_id: int, filters: Iterable[tuple[str, int]], protocol: int = V311) -> bytes:
    return codec.encode(Subscribe(packet_id, [SubscribeFilter(f, q) for f, q in filters]), protocol)


def split_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete packets at the start of `buf` as (first byte, body), and how many bytes they used."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while (frame := split_frame(buf, pos, MAX_REMAINING)) is not None:
        first, start, pos = frame
        out.append((first, bytes(buf[start:pos])))
    return out, pos


def bench_properties(protocol: int, user_properties: bool, idx: int) -> bytes:
    """The property block each PUBLISH of publisher `idx` carries: none for 3.1.1, an empty block for MQTT 5, or two
    user properties (a device's tags, as a fleet sends them)."""
    if protocol != V5:
        return b""
    if not user_properties:
        return mp.EMPTY_BLOCK
    return mp.encode_properties({mp.USER_PROPERTY: [("device", f"bench-{idx}"), ("unit", "C")]})


# ---------------------------------------------------------------- the client


class MqttError(Exception):
    pass


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@dataclass(frozen=True)
class Target:
    """A broker to load, and the client certificate every connection presents."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    protocol: int = V311  # 4: MQTT 3.1.1, 5: MQTT 5, for every client of a scenario

    def context(self) -> ssl.SSLContext:
        return client_context(self.ca, self.cert, self.key)

    def argv(self) -> list[str]:
        return [self.host, str(self.port), str(self.ca), str(self.cert), str(self.key), str(self.protocol)]


class Client:
    """One MQTT connection. Reading is explicit (`read_frames`) so each scenario owns its receive loop."""

    def __init__(
        self, client_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: int = V311
    ) -> None:
        self.client_id = client_id
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        ctx: ssl.SSLContext,
        client_id: str,
        keep_alive: int = 300,
        within_s: float = 15.0,
        protocol: int = V311,
    ) -> Client:
        async with asyncio.timeout(within_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=1 << 20)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = cls(client_id, reader, writer, protocol)
            try:
                writer.write(connect_packet(client_id, keep_alive, protocol=protocol))
                while True:
                    for first, body in await client.read_frames():
                        if first >> 4 == CONNACK:
                            if len(body) < 2 or body[1] != 0:
                                raise MqttError(f"CONNACK refused {client_id}: {body.hex()}")
                            return client
            except BaseException:
                client.abort()
                raise

    async def read_frames(self, size: int = 1 << 16) -> list[tuple[int, bytes]]:
        """Wait for data and return the complete packets it finishes (maybe none)."""
        data = await self.reader.read(size)
        if not data:
            raise MqttError(f"{self.client_id}: connection closed by the broker")
        self.buf += data
        frames, used = split_frames(self.buf)
        if used:
            del self.buf[:used]
        return frames

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        self.writer.write(subscribe_packet(1, [(topic_filter, qos)], self.protocol))
        async with asyncio.timeout(10):
            while True:
                for first, body in await self.read_frames():
                    if first >> 4 == SUBACK:
                        granted = body[-1]  # one filter: its code is the last byte (after MQTT 5's properties)
                        if granted >= 0x80:
                            raise MqttError(f"SUBSCRIBE {topic_filter} refused")
                        return int(granted)

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if not self.writer.is_closing():
                self.writer.write(DISCONNECT_BYTES)
            self.writer.close()
            async with asyncio.timeout(3):
                await self.writer.wait_closed()
        if not self.writer.transport.is_closing():
            self.abort()


async def connect_many(
    host: str, port: int, ctx: ssl.SSLContext, ids: list[str], concurrency: int, protocol: int = V311
) -> tuple[list[Client], list[str], float]:
    """Connect `ids` with at most `concurrency` handshakes in flight: (clients, errors, seconds)."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(client_id: str) -> Client | None:
        async with gate:
            try:
                return await Client.connect(host, port, ctx, client_id, protocol=protocol)
            except (OSError, MqttError, TimeoutError, ssl.SSLError) as exc:
                errors.append(f"{client_id}: {exc!r}")
                return None

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in ids))
    elapsed = time.perf_counter() - start
    return [c for c in results if c is not None], errors, elapsed


async def close_all(clients: Iterable[Client], concurrency: int = 100) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))


# ---------------------------------------------------------------- the subscriber process

THIS_FILE = str(Path(__file__).resolve())
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# int64 slots shared with the subscriber process; per-publisher delivered counts start at PUB0.
RECEIVED, OUT_OF_ORDER, BAD, READY, STOP, FAILED, LATENCY_FROM, PUB0 = range(8)


class Counters:
    """int64 slots in a memory-mapped file: the subscriber process writes them, the publishers' process reads."""

    def __init__(self, path: Path, publishers: int, *, create: bool) -> None:
        size = 8 * (PUB0 + max(publishers, 1))
        if create:
            path.write_bytes(bytes(size))
        self.path = path
        self._file = open(path, "r+b")  # noqa: SIM115 - lives as long as the mapping
        self._map = mmap.mmap(self._file.fileno(), size)
        self.slots = memoryview(self._map).cast("q")

    def close(self) -> None:
        self.slots.release()
        self._map.close()
        self._file.close()


async def _receive(client: Client, slots: memoryview, publishers: int, latencies: list[int]) -> None:
    """Count every PUBLISH (in total and per publisher), PUBACK QoS 1 at once, note latencies when asked."""
    buf = client.buf
    reader = client.reader
    writer = client.writer
    last_seq = [0] * publishers
    unpack = HEADER.unpack_from
    header_size = HEADER.size
    v5 = client.protocol == V5
    while True:
        data = await reader.read(1 << 18)
        if not data:
            raise MqttError("subscriber connection closed by the broker")
        now = time.monotonic_ns()
        latency_from = slots[LATENCY_FROM]
        buf += data
        pos = 0
        acks: list[bytes] = []
        while (frame := split_frame(buf, pos, MAX_REMAINING)) is not None:
            first, i, end = frame
            pos = end
            if first >> 4 != PUBLISH:
                continue
            start = i + 2 + ((buf[i] << 8) | buf[i + 1])
            if first & 0x06:
                acks.append(PUBACK_HEAD + buf[start : start + 2])
                start += 2
            if v5:
                length, start = decode_varint(buf, start, end)
                start += length
            if end - start >= header_size:
                idx, seq, sent_ns = unpack(buf, start)
                if idx < publishers:
                    slots[PUB0 + idx] += 1
                    if seq <= last_seq[idx]:
                        slots[OUT_OF_ORDER] += 1
                    else:
                        last_seq[idx] = seq
                if latency_from and sent_ns >= latency_from:
                    latencies.append(now - sent_ns)
            else:
                slots[BAD] += 1
            slots[RECEIVED] += 1
        if pos:
            del buf[:pos]
        if acks:
            writer.write(b"".join(acks))


async def _subscriber_process(
    target: Target, client_id: str, topic_filter: str, qos: int, publishers: int, counters_path: Path
) -> dict[str, object]:
    """Body of `mqttload.py subscribe`: subscribe, count until told to stop, report on stdout."""
    counters = Counters(counters_path, publishers, create=False)
    slots = counters.slots
    latencies: list[int] = []
    error: str | None = None
    try:
        client = await Client.connect(target.host, target.port, target.context(), client_id, protocol=target.protocol)
        await client.subscribe(topic_filter, qos)
        slots[READY] = 1
        task = asyncio.create_task(_receive(client, slots, publishers, latencies))
        while not slots[STOP] and not task.done():  # noqa: ASYNC110 - the flag lives in another process
            await asyncio.sleep(0.02)
        task.cancel()
        done = (await asyncio.gather(task, return_exceptions=True))[0]
        if isinstance(done, Exception):
            error = repr(done)
            slots[FAILED] = 1
        await client.close()
    except Exception as exc:
        error = repr(exc)
        slots[FAILED] = 1
        slots[READY] = -1
    report: dict[str, object] = {"received": slots[RECEIVED], "error": error, "latencies_ns": latencies}
    counters.close()
    return report


@dataclass
class SubscriberReport:
    received: int
    out_of_order: int
    bad: int
    latencies_ns: list[int]
    error: str | None


class Subscriber:
    """The parent's handle on the subscriber process: live counters, and a wake-up when a publisher's count moves."""

    def __init__(self, proc: asyncio.subprocess.Process, counters: Counters) -> None:
        self.proc = proc
        self.counters = counters
        self.slots = counters.slots
        self._waiters: dict[int, tuple[int, asyncio.Future[None]]] = {}
        self._has_waiters = asyncio.Event()
        self._poller = asyncio.create_task(self._poll())

    @classmethod
    async def start(cls, target: Target, client_id: str, topic_filter: str, qos: int, publishers: int) -> Subscriber:
        fd, name = tempfile.mkstemp(prefix="mqttload-", suffix=".counters")
        os.close(fd)
        counters = Counters(Path(name), publishers, create=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, THIS_FILE, "subscribe", *target.argv(),
            client_id, topic_filter, str(qos), str(publishers), name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        sub = cls(proc, counters)
        deadline = time.monotonic() + 30
        while sub.slots[READY] == 0 and proc.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if sub.slots[READY] != 1:
            report = await sub.finish()
            raise MqttError(f"subscriber {client_id} did not start: {report.error}")
        return sub

    @property
    def received(self) -> int:
        return int(self.slots[RECEIVED])

    @property
    def failed(self) -> bool:
        return bool(self.slots[FAILED]) or self.proc.returncode is not None

    def delivered(self, idx: int) -> int:
        return int(self.slots[PUB0 + idx])

    def record_latency_from(self, monotonic_ns: int) -> None:
        """Latency samples for messages sent at or after this time.monotonic_ns() (one clock for both processes)."""
        self.slots[LATENCY_FROM] = monotonic_ns

    async def wait_progress(self, idx: int, timeout_s: float) -> bool:
        """Until publisher `idx` has more messages delivered; False if none came in `timeout_s`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[idx] = (self.delivered(idx), fut)
        self._has_waiters.set()
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(idx, None)

    async def _poll(self) -> None:
        slots = self.slots
        while True:
            if not self._waiters:
                self._has_waiters.clear()
                await self._has_waiters.wait()
            await asyncio.sleep(0.0005)
            for idx, (mark, fut) in list(self._waiters.items()):
                if slots[PUB0 + idx] != mark and not fut.done():
                    fut.set_result(None)

    async def finish(self) -> SubscriberReport:
        """Stop the subscriber process and collect its report."""
        self._poller.cancel()
        await asyncio.gather(self._poller, return_exceptions=True)
        self.slots[STOP] = 1
        try:
            stdout, stderr = await asyncio.wait_for(self.proc.communicate(), 15)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            stdout, stderr = b"", b"subscriber process killed"
        slots = self.slots
        received, out_of_order, bad = int(slots[RECEIVED]), int(slots[OUT_OF_ORDER]), int(slots[BAD])
        self.counters.close()
        self.counters.path.unlink(missing_ok=True)
        try:
            body = json.loads(stdout.decode().strip().splitlines()[-1])
            latencies, error = list(body["latencies_ns"]), body["error"]
        except (ValueError, IndexError, KeyError):
            latencies, error = [], f"no report from the subscriber process: {stderr.decode(errors='replace')[-800:]}"
        return SubscriberReport(received, out_of_order, bad, latencies, error)


# ---------------------------------------------------------------- scenarios


@dataclass
class FanInResult:
    qos: int
    publishers: int
    seconds: float
    sent: int  # QoS 0: written to the socket; QoS 1: acknowledged by the broker (PUBACK)
    received: int
    window_received: int
    delivered_per_s: float
    offered_per_s: float
    loss_pct: float
    out_of_order: int
    unacked: int
    end_to_end: bool  # publishers also waited for delivery (QoS 0 always does)
    stalls: int  # end-to-end window: times a publisher saw nothing of its own delivered for a second
    broker_cpu_pct: float | None  # CPU of the broker process over the window (100 = one core)
    gen_cpu_pct: float  # CPU of the publishers' process over the window
    sub_cpu_pct: float  # CPU of the subscriber process over the window
    errors: list[str]


def _payload_pad(size: int) -> bytes:
    return b"x" * max(0, size - HEADER.size)


async def _publish_qos0(
    client: Client,
    idx: int,
    topic: str,
    pad: bytes,
    window: int,
    stop: asyncio.Event,
    sent: list[int],
    sub: Subscriber,
    stalls: list[int],
    props: bytes = b"",
) -> None:
    """Closed loop without acks: at most `window` messages sent but not yet seen by the subscriber.

    QoS 0 has no flow control, so flat-out publishing only measures how much the kernel buffers; bounding what is
    outstanding end to end measures what the broker sustains. If nothing of ours arrives for a second, the
    outstanding messages are written off (the loss figure counts them in the end) and publishing resumes.
    """
    prefix = publish_prefix(topic, 0, HEADER.size + len(pad), props) + props
    pack = HEADER.pack
    writer = client.writer
    seq = 0
    written_off = 0
    while not stop.is_set():
        room = window - (sent[idx] - sub.delivered(idx) - written_off)
        if room <= 0:
            if not await sub.wait_progress(idx, 1.0):
                stalls[idx] += 1
                written_off = sent[idx] - sub.delivered(idx)
            continue
        now = time.monotonic_ns()
        parts = []
        for _ in range(room):
            seq += 1
            parts.append(prefix + pack(idx, seq, now) + pad)
        writer.write(b"".join(parts))
        sent[idx] += room
        await writer.drain()


async def _publish_qos1_window(
    client: Client,
    idx: int,
    topic: str,
    pad: bytes,
    window: int,
    stop: asyncio.Event,
    acked: list[int],
    unacked: list[int],
    sub: Subscriber | None = None,
    stalls: list[int] | None = None,
    props: bytes = b"",
) -> None:
    """Closed loop: at most `window` QoS 1 messages without PUBACK; count the ones the broker acknowledged.

    With `sub`, also at most `window` messages not yet delivered to the subscriber (end to end), so the broker's
    queue towards the subscriber never grows: what it then delivers is its sustained zero-loss QoS 1 rate.
    """
    prefix = publish_prefix(topic, 1, HEADER.size + len(pad), props)
    pack = HEADER.pack
    writer = client.writer
    seq = 0
    written_off = 0
    inflight: set[int] = set()
    try:
        while True:
            room = window - len(inflight)
            if sub is not None:
                room = min(room, window - (seq - sub.delivered(idx) - written_off))
            if not stop.is_set() and room > 0:
                now = time.monotonic_ns()
                parts = []
                for _ in range(room):
                    seq += 1
                    pid = seq % 65535 + 1
                    inflight.add(pid)
                    parts.append(prefix + pid.to_bytes(2, "big") + props + pack(idx, seq, now) + pad)
                writer.write(b"".join(parts))
            elif not inflight and (stop.is_set() or sub is None):
                return
            if inflight:
                for first, body in await client.read_frames():
                    if first >> 4 == PUBACK:
                        pid = (body[0] << 8) | body[1]
                        if pid in inflight:
                            inflight.discard(pid)
                            if len(body) == 2 or body[2] < 0x80:  # an MQTT 5 refusal is not an acknowledgement
                                acked[idx] += 1
            elif sub is not None and not await sub.wait_progress(idx, 1.0):
                # Acknowledged but not delivered for a second: write those off (the loss figure counts them).
                if stalls is not None:
                    stalls[idx] += 1
                written_off = seq - sub.delivered(idx)
    finally:
        unacked[idx] = len(inflight)


async def _drain(sub: Subscriber, target: int, max_wait: float, idle: float = 1.5) -> None:
    """Wait until the subscriber has `target` messages, or made no progress for `idle` seconds."""
    deadline = time.monotonic() + max_wait
    last, last_change = sub.received, time.monotonic()
    while sub.received < target and time.monotonic() < deadline and not sub.failed:
        await asyncio.sleep(0.05)
        if sub.received != last:
            last, last_change = sub.received, time.monotonic()
        elif time.monotonic() - last_change > idle:
            break


async def _stop_tasks(tasks: list[asyncio.Task[None]], timeout_s: float, errors: list[str], what: str) -> None:
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        errors.append(f"{len(pending)} publishers {what} after {timeout_s:g} s")
        await asyncio.gather(*pending, return_exceptions=True)
    errors += [f"publisher: {t.exception()!r}" for t in done if t.exception() is not None]


async def fan_in(
    target: Target,
    *,
    qos: int,
    publishers: int = 100,
    seconds: float = 5.0,
    warmup: float = 1.0,
    window: int = 10,
    payload_size: int = 64,
    topic_filter: str = "bench/+/data",
    tag: str = "",
    broker_cpu: Callable[[], float] | None = None,
    end_to_end: bool = False,
    user_properties: bool = False,
) -> FanInResult:
    """`publishers` clients publish to bench/<i>/data as fast as their window allows; one wildcard subscriber counts.

    QoS 1: at most `window` un-PUBACKed messages per publisher, and with `end_to_end` also at most `window` not yet
    delivered. QoS 0: always at most `window` messages per publisher not yet delivered to the subscriber (this process
    sees the subscriber's counts).
    """
    tag = f"{tag}-v{target.protocol}{'u' if user_properties else ''}-q{qos}{'-e2e' if end_to_end and qos else ''}"
    # This process shares the cores with the broker: after a long run its heap is large, and a full collection in the
    # middle of a window (the defaults run one every few seconds here) would slow the generator, not the broker. The
    # heap is frozen for this fan-in only, so what it leaves behind can still be collected afterwards.
    gc.collect()
    gc.freeze()
    sub = await Subscriber.start(target, f"bench-sub{tag}", topic_filter, qos, publishers)
    pubs: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    errors: list[str] = []
    stop = asyncio.Event()
    sent = [0] * publishers
    unacked = [0] * publishers
    stalls = [0] * publishers
    pad = _payload_pad(payload_size)
    try:
        ids = [f"bench-pub{tag}-{i}" for i in range(publishers)]
        pubs, errors, _ = await connect_many(target.host, target.port, target.context(), ids, 50, target.protocol)
        if errors:
            raise MqttError(f"{len(errors)} publishers failed to connect, e.g. {errors[0]}")
        for i, c in enumerate(pubs):
            topic = f"bench/{i}/data"
            props = bench_properties(target.protocol, user_properties, i)
            if qos == 0:
                job = _publish_qos0(c, i, topic, pad, window, stop, sent, sub, stalls, props)
            else:
                e2e = sub if end_to_end else None
                job = _publish_qos1_window(c, i, topic, pad, window, stop, sent, unacked, e2e, stalls, props)
            tasks.append(asyncio.create_task(job))
        await asyncio.sleep(warmup)
        t0, r0, s0 = time.perf_counter(), sub.received, sum(sent)
        g0, b0, c0 = time.process_time(), broker_cpu() if broker_cpu else 0.0, cpu_seconds(sub.proc.pid)
        await asyncio.sleep(seconds)
        t1, r1, s1 = time.perf_counter(), sub.received, sum(sent)
        g1, b1, c1 = time.process_time(), broker_cpu() if broker_cpu else 0.0, cpu_seconds(sub.proc.pid)
        stop.set()
        await _stop_tasks(tasks, 15, errors, "still waiting for PUBACKs")
        # QoS 0 writes may still sit in the client transports: let them go out before judging loss.
        for c in pubs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.writer.drain(), 10)
        total_sent = sum(sent)
        await _drain(sub, total_sent, max_wait=20)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report = await sub.finish()
        await close_all(pubs)
        gc.unfreeze()
    if report.error:
        errors.append(f"subscriber: {report.error}")
    elapsed = t1 - t0
    lost = max(0, total_sent - report.received)
    return FanInResult(
        qos=qos,
        publishers=publishers,
        seconds=elapsed,
        sent=total_sent,
        received=report.received,
        window_received=r1 - r0,
        delivered_per_s=(r1 - r0) / elapsed,
        offered_per_s=(s1 - s0) / elapsed,
        loss_pct=100.0 * lost / total_sent if total_sent else 0.0,
        out_of_order=report.out_of_order,
        unacked=sum(unacked),
        end_to_end=end_to_end or qos == 0,
        stalls=sum(stalls),
        broker_cpu_pct=100.0 * (b1 - b0) / elapsed if broker_cpu else None,
        gen_cpu_pct=100.0 * (g1 - g0) / elapsed,
        sub_cpu_pct=100.0 * (c1 - c0) / elapsed,
        errors=errors,
    )


@dataclass
class LatencyResult:
    rate: int
    seconds: float
    sent: int
    received: int
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    loss_pct: float
    broker_cpu_pct: float | None  # CPU of the broker process at this fixed rate (100 = one core)
    errors: list[str]


def _percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(pct / 100.0 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


async def _paced_publisher(
    client: Client, idx: int, rate: float, start_ns: int, stop: asyncio.Event, window: int, sent: list[int], pad: bytes
) -> None:
    """QoS 1 at a fixed rate on an absolute schedule (no drift); a reader task takes the PUBACKs."""
    topic = f"bench/{idx}/data"
    prefix = publish_prefix(topic, 1, HEADER.size + len(pad))
    interval_ns = int(1e9 / rate)
    inflight: set[int] = set()
    room = asyncio.Event()
    room.set()
    all_acked = asyncio.Event()

    async def acks() -> None:
        while True:
            for first, body in await client.read_frames():
                if first >> 4 == PUBACK:
                    inflight.discard((body[0] << 8) | body[1])
                    room.set()
                    if not inflight:
                        all_acked.set()

    reader = asyncio.create_task(acks())
    seq = 0
    next_ns = start_ns
    try:
        while not stop.is_set():
            delay = (next_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            while len(inflight) >= window:
                room.clear()
                await room.wait()
            seq += 1
            pid = seq % 65535 + 1
            inflight.add(pid)
            client.writer.write(prefix + pid.to_bytes(2, "big") + HEADER.pack(idx, seq, time.monotonic_ns()) + pad)
            sent[idx] += 1
            next_ns += interval_ns
        if inflight:
            all_acked.clear()
            waiter = asyncio.ensure_future(all_acked.wait())
            await asyncio.wait([reader, waiter], timeout=5, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def latency(
    target: Target,
    *,
    publishers: int = 10,
    rate_per_publisher: float = 100.0,
    seconds: float = 5.0,
    warmup: float = 1.0,
    window: int = 10,
    payload_size: int = 64,
    tag: str = "",
    broker_cpu: Callable[[], float] | None = None,
) -> LatencyResult:
    """Paced QoS 1 publishers, one QoS 1 wildcard subscriber; publish-to-receive time percentiles."""
    sub = await Subscriber.start(target, f"bench-lat-sub{tag}", "bench/+/data", 1, publishers)
    pubs: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    errors: list[str] = []
    stop = asyncio.Event()
    sent = [0] * publishers
    pad = _payload_pad(payload_size)
    try:
        pubs, errors, _ = await connect_many(
            target.host, target.port, target.context(), [f"bench-lat-pub{tag}-{i}" for i in range(publishers)], 50
        )
        if errors:
            raise MqttError(f"{len(errors)} publishers failed to connect, e.g. {errors[0]}")
        begin = time.monotonic_ns() + 50_000_000
        spread = int(1e9 / rate_per_publisher / publishers)  # spread the publishers evenly over one interval
        sub.record_latency_from(begin + int(warmup * 1e9))
        for i, c in enumerate(pubs):
            job = _paced_publisher(c, i, rate_per_publisher, begin + i * spread, stop, window, sent, pad)
            tasks.append(asyncio.create_task(job))
        await asyncio.sleep(0.05 + warmup)
        t0, b0 = time.perf_counter(), broker_cpu() if broker_cpu else 0.0
        await asyncio.sleep(seconds)
        t1, b1 = time.perf_counter(), broker_cpu() if broker_cpu else 0.0
        stop.set()
        await _stop_tasks(tasks, 15, errors, "stuck with a full in-flight window")
        total_sent = sum(sent)
        await _drain(sub, total_sent, max_wait=10)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report = await sub.finish()
        await close_all(pubs)
        gc.unfreeze()
    if report.error:
        errors.append(f"subscriber: {report.error}")
    values = sorted(report.latencies_ns)
    lost = max(0, total_sent - report.received)
    return LatencyResult(
        rate=int(publishers * rate_per_publisher),
        seconds=seconds,
        sent=total_sent,
        received=report.received,
        samples=len(values),
        p50_ms=_percentile(values, 50) / 1e6,
        p99_ms=_percentile(values, 99) / 1e6,
        max_ms=(values[-1] / 1e6) if values else float("nan"),
        loss_pct=100.0 * lost / total_sent if total_sent else 0.0,
        broker_cpu_pct=100.0 * (b1 - b0) / (t1 - t0) if broker_cpu else None,
        errors=errors,
    )


@dataclass
class ConnectResult:
    attempted: int
    connected: int
    seconds: float
    per_s: float
    errors: list[str]
    broker_cpu_s: float = 0.0  # CPU the broker and the load generator spent on the storm, when measured
    gen_cpu_s: float = 0.0


async def connect_storm(
    target: Target, *, count: int, concurrency: int = 50, tag: str = ""
) -> tuple[ConnectResult, list[Client]]:
    """Open `count` mTLS MQTT sessions (CONNECT..CONNACK), `concurrency` at a time; the caller closes them."""
    clients, errors, elapsed = await connect_many(
        target.host, target.port, target.context(), [f"bench-idle{tag}-{i}" for i in range(count)], concurrency
    )
    result = ConnectResult(count, len(clients), elapsed, len(clients) / elapsed if elapsed else 0.0, errors)
    return result, clients


# ---------------------------------------------------------------- the subscriber process's entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mqttload subscriber process (started by the scenarios)")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("subscribe")
    for name in ("host", "port", "ca", "cert", "key", "protocol", "client_id", "topic_filter", "qos", "publishers"):
        sub.add_argument(name)
    for name in ("counters",):
        sub.add_argument(name)
    args = parser.parse_args(argv)
    target = Target(args.host, int(args.port), Path(args.ca), Path(args.cert), Path(args.key), int(args.protocol))
    report = asyncio.run(
        _subscriber_process(
            target, args.client_id, args.topic_filter, int(args.qos), int(args.publishers), Path(args.counters)
        )
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
