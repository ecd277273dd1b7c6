"""A minimal asyncio MQTT 3.1.1 load generator over mutual TLS.

Raw packet encoding on `asyncio.open_connection(ssl=...)` with TCP_NODELAY: no client library, no threads, so one
process can drive a hundred publishers and a subscriber without becoming the bottleneck first.

Every payload starts with a 14-byte header (publisher index, sequence number, send time in monotonic ns), so the
subscriber can count loss, spot duplicates or reordering, and measure publish-to-receive latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------- packets

CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBACK = 9
PINGRESP = 13

DISCONNECT_BYTES = b"\xe0\x00"
HEADER = struct.Struct(">HIQ")  # publisher index, sequence number, send time (time.monotonic_ns)
PUBACK_HEAD = b"\x40\x02"


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def connect_packet(client_id: str, keep_alive: int = 300, clean_session: bool = True) -> bytes:
    body = _utf8("MQTT") + bytes((4, 0x02 if clean_session else 0x00)) + struct.pack(">H", keep_alive)
    body += _utf8(client_id)
    return b"\x10" + encode_length(len(body)) + body


def publish_prefix(topic: str, qos: int, body_len: int) -> bytes:
    """Fixed header and topic of a PUBLISH whose payload (plus packet id for QoS 1) is `body_len` bytes."""
    topic_field = _utf8(topic)
    remaining = len(topic_field) + (2 if qos else 0) + body_len
    return bytes((0x30 | (qos << 1),)) + encode_length(remaining) + topic_field


def puback_packet(packet_id: int) -> bytes:
    return PUBACK_HEAD + packet_id.to_bytes(2, "big")


def subscribe_packet(packet_id: int, filters: Iterable[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_utf8(f) + bytes((q,)) for f, q in filters)
    return b"\x82" + encode_length(len(body)) + body


def split_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete packets at the start of `buf` as (first byte, body), and how many bytes they used."""
    out: list[tuple[int, bytes]] = []
    pos, size = 0, len(buf)
    while pos + 2 <= size:
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= size:
                return out, pos
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult <<= 7
            i += 1
            if not byte & 0x80:
                break
        if i + length > size:
            break
        out.append((buf[pos], bytes(buf[i : i + length])))
        pos = i + length
    return out, pos


# ---------------------------------------------------------------- the client


class MqttError(Exception):
    pass


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Client:
    """One MQTT connection. Reading is explicit (`read_frames`) so each scenario owns its receive loop."""

    def __init__(self, client_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client_id = client_id
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    @classmethod
    async def connect(
        cls, host: str, port: int, ctx: ssl.SSLContext, client_id: str, keep_alive: int = 300, within_s: float = 15.0
    ) -> Client:
        async with asyncio.timeout(within_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=1 << 20)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = cls(client_id, reader, writer)
            try:
                writer.write(connect_packet(client_id, keep_alive))
                while True:
                    for first, body in await client.read_frames():
                        if first >> 4 == CONNACK:
                            if len(body) != 2 or body[1] != 0:
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
        self.writer.write(subscribe_packet(1, [(topic_filter, qos)]))
        async with asyncio.timeout(10):
            while True:
                for first, body in await self.read_frames():
                    if first >> 4 == SUBACK:
                        granted = body[2]
                        if granted == 0x80:
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
    host: str, port: int, ctx: ssl.SSLContext, ids: list[str], concurrency: int
) -> tuple[list[Client], list[str], float]:
    """Connect `ids` with at most `concurrency` handshakes in flight: (clients, errors, seconds)."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(client_id: str) -> Client | None:
        async with gate:
            try:
                return await Client.connect(host, port, ctx, client_id)
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


# ---------------------------------------------------------------- the subscriber side


@dataclass
class Receiver:
    """Counts what one subscriber gets; acknowledges QoS 1 at once; optionally records latencies."""

    client: Client
    publishers: int
    received: int = 0
    out_of_order: int = 0
    bad: int = 0
    latency_from_ns: int | None = None  # record latencies of messages sent at or after this time
    latencies_ns: list[int] = field(default_factory=list)
    error: str | None = None
    last_seq: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last_seq = [0] * self.publishers

    async def run(self) -> None:
        client = self.client
        buf = client.buf
        reader = client.reader
        writer = client.writer
        last_seq = self.last_seq
        unpack = HEADER.unpack_from
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    raise MqttError("subscriber connection closed by the broker")
                now = time.monotonic_ns()
                buf += data
                pos, size = 0, len(buf)
                acks: list[bytes] = []
                while pos + 2 <= size:
                    length, mult, i = 0, 1, pos + 1
                    complete = True
                    while True:
                        if i >= size:
                            complete = False
                            break
                        byte = buf[i]
                        length += (byte & 0x7F) * mult
                        mult <<= 7
                        i += 1
                        if not byte & 0x80:
                            break
                    if not complete or i + length > size:
                        break
                    first = buf[pos]
                    end = i + length
                    if first >> 4 == PUBLISH:
                        qos = (first >> 1) & 0x03
                        start = i + 2 + ((buf[i] << 8) | buf[i + 1])
                        if qos:
                            acks.append(PUBACK_HEAD + buf[start : start + 2])
                            start += 2
                        self.received += 1
                        if end - start >= HEADER.size:
                            idx, seq, sent_ns = unpack(buf, start)
                            if idx < len(last_seq):
                                if seq <= last_seq[idx]:
                                    self.out_of_order += 1
                                else:
                                    last_seq[idx] = seq
                            if self.latency_from_ns is not None and sent_ns >= self.latency_from_ns:
                                self.latencies_ns.append(now - sent_ns)
                        else:
                            self.bad += 1
                    pos = end
                if pos:
                    del buf[:pos]
                if acks:
                    writer.write(b"".join(acks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = repr(exc)


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
    errors: list[str]


def _payload_pad(size: int) -> bytes:
    return b"x" * max(0, size - HEADER.size)


async def _publish_qos0(
    client: Client, idx: int, topic: str, pad: bytes, batch: int, stop: asyncio.Event, sent: list[int]
) -> None:
    prefix = publish_prefix(topic, 0, HEADER.size + len(pad))
    pack = HEADER.pack
    writer = client.writer
    seq = 0
    while not stop.is_set():
        now = time.monotonic_ns()
        parts = []
        for _ in range(batch):
            seq += 1
            parts.append(prefix + pack(idx, seq, now) + pad)
        writer.write(b"".join(parts))
        sent[idx] += batch
        await writer.drain()
        await asyncio.sleep(0)


async def _publish_qos1_window(
    client: Client,
    idx: int,
    topic: str,
    pad: bytes,
    window: int,
    stop: asyncio.Event,
    acked: list[int],
    unacked: list[int],
) -> None:
    """Closed loop: keep `window` QoS 1 messages in flight; count the ones the broker acknowledged."""
    prefix = publish_prefix(topic, 1, HEADER.size + len(pad))
    pack = HEADER.pack
    writer = client.writer
    seq = 0
    inflight: set[int] = set()
    try:
        while True:
            if not stop.is_set() and len(inflight) < window:
                now = time.monotonic_ns()
                parts = []
                while len(inflight) < window:
                    seq += 1
                    pid = seq % 65535 + 1
                    inflight.add(pid)
                    parts.append(prefix + pid.to_bytes(2, "big") + pack(idx, seq, now) + pad)
                writer.write(b"".join(parts))
            elif not inflight:
                return
            for first, body in await client.read_frames():
                if first >> 4 == PUBACK:
                    pid = (body[0] << 8) | body[1]
                    if pid in inflight:
                        inflight.discard(pid)
                        acked[idx] += 1
    finally:
        unacked[idx] = len(inflight)


async def _drain(receiver: Receiver, target: int, max_wait: float, idle: float = 1.5) -> None:
    """Wait until the subscriber has `target` messages, or made no progress for `idle` seconds."""
    deadline = time.monotonic() + max_wait
    last, last_change = receiver.received, time.monotonic()
    while receiver.received < target and time.monotonic() < deadline and receiver.error is None:
        await asyncio.sleep(0.05)
        if receiver.received != last:
            last, last_change = receiver.received, time.monotonic()
        elif time.monotonic() - last_change > idle:
            break


async def fan_in(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    qos: int,
    publishers: int = 100,
    seconds: float = 5.0,
    warmup: float = 1.0,
    window: int = 10,
    batch: int = 10,
    payload_size: int = 64,
    topic_filter: str = "bench/+/data",
    tag: str = "",
) -> FanInResult:
    """`publishers` clients publish flat out to bench/<i>/data; one subscriber on a wildcard counts deliveries."""
    sub = await Client.connect(host, port, ctx, f"bench-sub{tag}-q{qos}")
    await sub.subscribe(topic_filter, qos)
    pubs, errors, _ = await connect_many(
        host, port, ctx, [f"bench-pub{tag}-q{qos}-{i}" for i in range(publishers)], concurrency=50
    )
    if errors:
        await close_all([sub, *pubs])
        raise MqttError(f"{len(errors)} publishers failed to connect, e.g. {errors[0]}")
    receiver = Receiver(sub, publishers)
    recv_task = asyncio.create_task(receiver.run())
    stop = asyncio.Event()
    sent = [0] * publishers
    unacked = [0] * publishers
    pad = _payload_pad(payload_size)
    if qos == 0:
        tasks = [
            asyncio.create_task(_publish_qos0(c, i, f"bench/{i}/data", pad, batch, stop, sent))
            for i, c in enumerate(pubs)
        ]
    else:
        tasks = [
            asyncio.create_task(_publish_qos1_window(c, i, f"bench/{i}/data", pad, window, stop, sent, unacked))
            for i, c in enumerate(pubs)
        ]
    try:
        await asyncio.sleep(warmup)
        t0, r0, s0 = time.perf_counter(), receiver.received, sum(sent)
        await asyncio.sleep(seconds)
        t1, r1, s1 = time.perf_counter(), receiver.received, sum(sent)
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                errors.append(f"publisher: {task.exception()!r}")
        if pending:
            errors.append(f"{len(pending)} publishers still waiting for PUBACKs after 15 s")
            await asyncio.gather(*pending, return_exceptions=True)
        # QoS 0 writes may still sit in the client transports: let them go out before judging loss.
        for c in pubs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.writer.drain(), 10)
        total_sent = sum(sent)
        await _drain(receiver, total_sent, max_wait=20)
    finally:
        recv_task.cancel()
        await asyncio.gather(recv_task, return_exceptions=True)
        await close_all([sub, *pubs])
    if receiver.error:
        errors.append(f"subscriber: {receiver.error}")
    elapsed = t1 - t0
    lost = max(0, total_sent - receiver.received)
    return FanInResult(
        qos=qos,
        publishers=publishers,
        seconds=elapsed,
        sent=total_sent,
        received=receiver.received,
        window_received=r1 - r0,
        delivered_per_s=(r1 - r0) / elapsed,
        offered_per_s=(s1 - s0) / elapsed,
        loss_pct=100.0 * lost / total_sent if total_sent else 0.0,
        out_of_order=receiver.out_of_order,
        unacked=sum(unacked),
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
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    publishers: int = 10,
    rate_per_publisher: float = 100.0,
    seconds: float = 5.0,
    warmup: float = 1.0,
    window: int = 10,
    payload_size: int = 64,
    tag: str = "",
) -> LatencyResult:
    """Paced QoS 1 publishers, one QoS 1 wildcard subscriber; publish-to-receive time percentiles."""
    sub = await Client.connect(host, port, ctx, f"bench-lat-sub{tag}")
    await sub.subscribe("bench/+/data", 1)
    pubs, errors, _ = await connect_many(
        host, port, ctx, [f"bench-lat-pub{tag}-{i}" for i in range(publishers)], concurrency=publishers
    )
    if errors:
        await close_all([sub, *pubs])
        raise MqttError(f"{len(errors)} publishers failed to connect, e.g. {errors[0]}")
    receiver = Receiver(sub, publishers)
    recv_task = asyncio.create_task(receiver.run())
    stop = asyncio.Event()
    sent = [0] * publishers
    pad = _payload_pad(payload_size)
    begin = time.monotonic_ns() + 50_000_000
    spread = int(1e9 / rate_per_publisher / publishers)  # spread the publishers evenly over one interval
    receiver.latency_from_ns = begin + int(warmup * 1e9)
    tasks = [
        asyncio.create_task(_paced_publisher(c, i, rate_per_publisher, begin + i * spread, stop, window, sent, pad))
        for i, c in enumerate(pubs)
    ]
    try:
        await asyncio.sleep(0.05 + warmup + seconds)
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        if pending:
            errors.append(f"{len(pending)} publishers stuck (in-flight window full) after 15 s")
            await asyncio.gather(*pending, return_exceptions=True)
        errors += [f"publisher: {t.exception()!r}" for t in done if t.exception() is not None]
        total_sent = sum(sent)
        await _drain(receiver, total_sent, max_wait=10)
    finally:
        recv_task.cancel()
        await asyncio.gather(recv_task, return_exceptions=True)
        await close_all([sub, *pubs])
    if receiver.error:
        errors.append(f"subscriber: {receiver.error}")
    values = sorted(receiver.latencies_ns)
    lost = max(0, total_sent - receiver.received)
    return LatencyResult(
        rate=int(publishers * rate_per_publisher),
        seconds=seconds,
        sent=total_sent,
        received=receiver.received,
        samples=len(values),
        p50_ms=_percentile(values, 50) / 1e6,
        p99_ms=_percentile(values, 99) / 1e6,
        max_ms=(values[-1] / 1e6) if values else float("nan"),
        loss_pct=100.0 * lost / total_sent if total_sent else 0.0,
        errors=errors,
    )


@dataclass
class ConnectResult:
    attempted: int
    connected: int
    seconds: float
    per_s: float
    errors: list[str]


async def connect_storm(
    host: str, port: int, ctx: ssl.SSLContext, *, count: int, concurrency: int = 50, tag: str = ""
) -> tuple[ConnectResult, list[Client]]:
    """Open `count` mTLS MQTT sessions (CONNECT..CONNACK), `concurrency` at a time; the caller closes them."""
    clients, errors, elapsed = await connect_many(
        host, port, ctx, [f"bench-idle{tag}-{i}" for i in range(count)], concurrency
    )
    result = ConnectResult(count, len(clients), elapsed, len(clients) / elapsed if elapsed else 0.0, errors)
    return result, clients
