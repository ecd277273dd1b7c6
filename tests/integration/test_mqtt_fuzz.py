"""Hostile MQTT bytes against a live gateway: over 10,000 mutated packets of both versions (bit flips, truncations,
length overflows, bad and duplicate properties, packets before CONNECT) while a legitimate client keeps exchanging
QoS 1 messages. Nothing the fuzzer sends may cost the legitimate client a message, log a traceback, or grow memory
without bound."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.frame import encode_varint
from mqttwire.packets import (
    V5,
    V311,
    Ack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Publish,
    Subscribe,
    SubscribeFilter,
    Unsubscribe,
    Will,
)

PACKETS_PER_CONNECTION = 24
TARGET_PACKETS = 10_500


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _valid(rng: random.Random, version: int, n: int) -> Packet:
    v5 = version == V5
    props = {mp.USER_PROPERTY: [("k", "v")], mp.CONTENT_TYPE: "t"} if v5 and rng.random() < 0.5 else None
    choice = rng.randrange(7)
    if choice == 0:
        return Publish(f"fuzz/{n % 7}", bytes(rng.randrange(256) for _ in range(rng.randrange(20))), 1, False,
                       False, 1 + n % 60000, props)  # fmt: skip
    if choice == 1:
        return Publish(f"fuzz/{n % 5}", b"q0", 0, rng.random() < 0.2, False, 0, props)
    if choice == 2:
        return Subscribe(1 + n % 100, [SubscribeFilter(f"fuzz/{n % 3}/#", rng.randrange(2))])
    if choice == 3:
        return Unsubscribe(1 + n % 100, ["fuzz/#"])
    if choice == 4:
        return Ack(4, 1 + n % 100)
    if choice == 5:
        return PingReq()
    return Disconnect(0, {mp.SESSION_EXPIRY_INTERVAL: 5} if v5 else None)


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    kind = rng.randrange(7)
    if kind == 6 and data:  # the fixed header's flags: QoS 3, DUP on QoS 0, reserved bits
        data[0] ^= rng.choice((0x02, 0x04, 0x06, 0x08, 0x01))
        return bytes(data)
    if kind == 0 and data:  # bit flips
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation: the body claims more than follows
        return bytes(data[: rng.randrange(1, max(2, len(data)))])
    elif kind == 2:  # a length overflow: remaining length past what the gateway accepts, or five bytes long
        return bytes((data[0],)) + (b"\xff\xff\xff\xff\x7f" if rng.random() < 0.5 else encode_varint(10_000_000))
    elif kind == 3 and len(data) > 4:  # the topic length field runs past the body
        data[2], data[3] = 0xFF, 0xF0
    elif kind == 4:  # a duplicate or misplaced property (MQTT 5 PUBLISH)
        body = b"\x00\x03a/b" + b"\x08" + b"\x03\x00\x01x" + b"\x21\x00\x05" + b"pay"
        return b"\x30" + encode_varint(len(body)) + body
    else:  # random garbage
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(data)


async def _fuzz_connection(port: int, rng: random.Random, start: int) -> int:
    version = V5 if rng.random() < 0.5 else V311
    batch: list[bytes] = []
    if rng.random() < 0.15:
        batch.append(_mutate(rng, codec.encode(_valid(rng, version, start), version)))  # before CONNECT
    else:
        will = Will("fuzz/will", b"w", 0) if rng.random() < 0.2 else None
        batch.append(codec.encode(Connect(f"fuzz-{start}", version, True, 60, will), version))
    for n in range(PACKETS_PER_CONNECTION):
        raw = codec.encode(_valid(rng, version, start + n), version)
        batch.append(_mutate(rng, raw) if rng.random() < 0.7 else raw)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        writer.write(b"".join(batch))
        await writer.drain()
        try:
            async with asyncio.timeout(0.5):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return len(batch)


async def _fuzz(port: int, seed: int) -> int:
    rng = random.Random(seed)
    sent = 0
    while sent < TARGET_PACKETS:
        results = await asyncio.gather(*(_fuzz_connection(port, rng, sent + i * 100) for i in range(40)))
        sent += sum(results)
    return sent


def test_fuzzed_packets_cost_nobody_anything(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra_args=["--insecure-port", "0", "--publishes-per-second", "0"]).start()
    try:
        creds = gw.provision("honest", allow_all_policy())
        honest = Device(gw.ports["mqtts"], "honest", creds.cert, creds.key, creds.ca).connect()
        honest.subscribe("honest/echo", 1)
        assert gw.proc is not None
        rss_before = _rss_kb(gw.proc.pid)
        stop = threading.Event()
        sent: list[int] = []

        def exchange() -> None:
            n = 0
            while not stop.is_set():
                if honest.publish("honest/echo", str(n).encode(), 1, timeout=10):
                    sent.append(n)
                n += 1
                time.sleep(0.005)

        worker = threading.Thread(target=exchange)
        worker.start()
        tried = asyncio.run(_fuzz(gw.ports["mqtt"], 1234))
        stop.set()
        worker.join()
        received = []
        deadline = time.monotonic() + 10
        while len(received) < len(sent) and time.monotonic() < deadline:
            received.append(int(honest.expect(timeout=5).payload))
        honest.close()
        rss_after = _rss_kb(gw.proc.pid)
        assert tried >= 10_000
        assert sent and received == sent  # every acknowledged message arrived, in order, nothing else
        assert rss_after - rss_before < 80_000, f"RSS grew {rss_before} -> {rss_after} kB"
    finally:
        gw.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
