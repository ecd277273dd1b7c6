"""Hostile clients against a gateway while a legitimate client measures its latency.

    python bench/hostile.py [--seconds 10] [--nofile 1024] [--slow 1050] [--json]

Starts `edgesim up` (plain MQTT on loopback, no per-connection publish quota, the soft and hard descriptor limit
set to --nofile) and runs phases:
  baseline   the legitimate client alone: boto3 Kinesis PutRecord and an MQTT QoS 1 publish (time to PUBACK)
  slowloris  --slow HTTP clients sending a request head one byte a second (reconnecting whenever closed), as many
             MQTT clients sending one byte a second before CONNECT
  garbage    HTTP requests as fast as threads can send them: JSON nested 10,000 deep, members of the wrong JSON
             type, 17 MB bodies, malformed request lines; MQTT connections sending random and malformed packets
  poison     one device flooding its own shadow with lone-surrogate updates while honest devices update theirs
For each: attempts per second, the legitimate client's p50/p99 and failures, the responses by status (a 5xx is a
defect), the gateway's RSS before, at peak and after, and the tracebacks in its log (goal: 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# ---- the gateway
class Gateway:
    def __init__(self, home: Path, nofile: int) -> None:
        self.home = home
        ports_file = home / "ports.json"
        self.log_path = home / "gateway.log"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.log_path, "wb") as log:
            cmd = [
                sys.executable, "-m", "gateway", "up", "--data-dir", str(home / "data"),
                "--certs-dir", str(home / "certs"), "--mqtts-port", "0", "--wss-port", "-1",
                "--https-port", "-1", "--api-port", "0", "--insecure-port", "0",
                "--ports-file", str(ports_file), "--log-level", "warning", "--publishes-per-second", "0",
            ]  # fmt: skip
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,  # noqa: PLW1509 - the bench starts its threads later
            )
        deadline = time.monotonic() + 60
        while not (ports_file.exists() and ports_file.read_text()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not start:\n" + self.log_path.read_text())
            time.sleep(0.05)
        self.ports: dict[str, int] = json.loads(ports_file.read_text())
        self.rss_peak = 0
        self._sampling = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while not self._sampling.is_set() and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.rss_peak = max(self.rss_peak, int(self.rss_mb()))
            time.sleep(0.1)

    def log_figures(self) -> dict[str, int]:
        text = self.log_path.read_text(errors="replace")
        return {"tracebacks": text.count("Traceback"), "log_bytes": len(text.encode())}

    def stop(self) -> None:
        self._sampling.set()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- a raw MQTT 3.1.1 client (the legitimate one, and the source of well-formed packets to break)
def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str) -> bytes:
    body = _string("MQTT") + b"\x04\x02" + (60).to_bytes(2, "big") + _string(client_id)
    return b"\x10" + _length(len(body)) + body


def publish_packet(topic: str, payload: bytes, pid: int) -> bytes:
    body = _string(topic) + pid.to_bytes(2, "big") + payload
    return b"\x32" + _length(len(body)) + body


class MqttClient:
    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.sendall(connect_packet(client_id))
        if self.sock.recv(4)[:1] != b"\x20":
            raise ConnectionError("no CONNACK")
        self.pid = 0

    def publish(self, topic: str, payload: bytes) -> None:
        self.pid = self.pid % 65535 + 1
        self.sock.sendall(publish_packet(topic, payload, self.pid))
        got = b""
        while len(got) < 4:
            chunk = self.sock.recv(4 - len(got))
            if not chunk:
                raise ConnectionError("closed before PUBACK")
            got += chunk


# ---- the legitimate client
def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Legit:
    """Kinesis PutRecord and an MQTT QoS 1 publish, alternately, as fast as they are answered."""

    def __init__(self, gw: Gateway) -> None:
        import boto3
        from botocore.config import Config

        self.gw = gw
        self.kinesis = boto3.client(
            "kinesis",
            endpoint_url=f"http://{HOST}:{gw.ports['api']}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=30, read_timeout=30),
        )
        with contextlib.suppress(Exception):
            self.kinesis.create_stream(StreamName="legit", ShardCount=1)

    def run(self, stop: threading.Event, out: dict[str, Any]) -> None:
        http: list[float] = []
        mqtt: list[float] = []
        failures: Counter[str] = Counter()
        client: MqttClient | None = None
        while not stop.is_set():
            started = time.perf_counter()
            try:
                self.kinesis.put_record(StreamName="legit", Data=b"x", PartitionKey="k")
                http.append(time.perf_counter() - started)
            except Exception as exc:
                failures[f"http {type(exc).__name__}"] += 1
            started = time.perf_counter()
            try:
                if client is None:
                    client = MqttClient(self.gw.ports["mqtt"], "legit")
                client.publish("legit/t", b"x")
                mqtt.append(time.perf_counter() - started)
            except (OSError, ConnectionError) as exc:
                failures[f"mqtt {type(exc).__name__}"] += 1
                client = None
            time.sleep(0.02)
        out.update(
            http_p50_ms=round(1000 * percentile(http, 50), 1),
            http_p99_ms=round(1000 * percentile(http, 99), 1),
            mqtt_p50_ms=round(1000 * percentile(mqtt, 50), 1),
            mqtt_p99_ms=round(1000 * percentile(mqtt, 99), 1),
            legit_calls=len(http) + len(mqtt),
            legit_failures=dict(failures),
        )


# ---- attackers: each loops until `stop`, counting attempts and what came back
Attack = Callable[[Gateway, threading.Event, Counter[str]], None]


SLOW_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: "  # then one "a" a second, forever


def slow_http(count: int) -> Attack:
    def run(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
        socks: list[socket.socket | None] = [None] * count
        sent = [0] * count
        while not stop.is_set():
            for i, slot in enumerate(socks):
                sock = slot
                if sock is None:
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex((HOST, gw.ports["api"]))
                    socks[i] = sock
                    sent[i] = 0
                    seen["attempts"] += 1
                try:
                    sock.send(SLOW_HEAD[sent[i] : sent[i] + 1] or b"a")
                    sent[i] += 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock.close()
                    socks[i] = None
                    seen["closed by the gateway"] += 1
            stop.wait(1.0)
        for sock in socks:
            if sock is not None:
                sock.close()

    return run


def slow_mqtt(count: int) -> Attack:
    def run(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
        packet = connect_packet("slowloris")
        socks: list[tuple[socket.socket, int] | None] = [None] * count
        while not stop.is_set():
            for i, slot in enumerate(socks):
                entry = slot
                if entry is None:
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex((HOST, gw.ports["mqtt"]))
                    entry = socks[i] = (sock, 0)
                    seen["attempts"] += 1
                sock, sent = entry
                try:
                    sock.send(packet[sent % len(packet) : sent % len(packet) + 1])
                    socks[i] = (sock, sent + 1)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock.close()
                    socks[i] = None
                    seen["closed by the gateway"] += 1
            stop.wait(1.0)
        for entry in socks:
            if entry is not None:
                entry[0].close()

    return run


def _http(gw: Gateway, raw: bytes) -> str:
    with socket.create_connection((HOST, gw.ports["api"]), timeout=30) as sock:
        sock.sendall(raw)
        head = sock.recv(64)
    parts = head.split(b" ")
    return parts[1].decode() if len(parts) > 1 else "closed"


def _post(target: str, body: bytes, path: str = "/") -> bytes:
    headers = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if target:
        headers += f"X-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\n"
    return headers.encode() + b"\r\n" + body


DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
GARBAGE_REQUESTS = [
    _post("Kinesis_20131202.PutRecord", DEEP),
    _post("AmazonSQS.SendMessage", b"[" * 10_000 + b"]" * 10_000),
    _post("Firehose_20150804.PutRecord", DEEP),
    _post("", DEEP, "/things/t1"),
    _post("", DEEP, "/edgesim/dash/rules/test"),
    _post("Kinesis_20131202.PutRecord", b'{"StreamName":["x"],"Data":5,"PartitionKey":{}}'),
    _post("AmazonSQS.SendMessage", b'{"QueueUrl":17,"MessageBody":[1]}'),
    _post("Kinesis_20131202.CreateStream", b'{"StreamName":"s","ShardCount":"many"}'),
    _post("", b'{"state":{"reported":{"x":"\\ud800"}},"clientToken":"c"}', "/things/t1/shadow"),
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
]
BIG = _post("Kinesis_20131202.PutRecord", b"x" * (17 * 1024 * 1024))


def garbage_http(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
    rng = random.Random(os.getpid())
    while not stop.is_set():
        raw = BIG if rng.random() < 0.01 else rng.choice(GARBAGE_REQUESTS)
        try:
            seen[f"status {_http(gw, raw)}"] += 1
        except OSError as exc:
            seen[type(exc).__name__] += 1
        seen["attempts"] += 1


def garbage_mqtt(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
    rng = random.Random(os.getpid() + 1)
    good = connect_packet("fuzz") + publish_packet("fuzz/t", b"payload", 1)
    while not stop.is_set():
        choice = rng.random()
        if choice < 0.3:
            packet = rng.randbytes(rng.randint(1, 200))
        elif choice < 0.6:  # one byte of a valid exchange flipped
            flipped = bytearray(good)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            packet = bytes(flipped)
        else:  # a valid CONNECT, then a truncated or over-long packet
            packet = connect_packet("fuzz") + bytes((0x30 | rng.randrange(16),)) + b"\xff\xff\xff\xff\x7f"
        try:
            with socket.create_connection((HOST, gw.ports["mqtt"]), timeout=5) as sock:
                sock.sendall(packet)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
            seen["answered or closed"] += 1
        except OSError as exc:
            seen[type(exc).__name__] += 1
        seen["attempts"] += 1


def poison_shadow(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
    client = MqttClient(gw.ports["mqtt"], "poisoner")
    n = 0
    while not stop.is_set():
        body = b'{"state":{"reported":{"x":"\\ud800"}},"clientToken":"p%d"}' % n
        topic = _string("$aws/things/poisoner/shadow/update")
        client.sock.sendall(b"\x30" + _length(len(topic) + len(body)) + topic + body)  # QoS 0: as fast as it goes
        n += 1
        seen["attempts"] += 1
        if n % 100 == 0:
            time.sleep(0.005)


def honest_shadows(gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
    """Ten devices, each one update in flight at a time; counts what each got back."""

    def device(i: int) -> None:
        client = MqttClient(gw.ports["mqtt"], f"honest-{i}")
        for reply in ("accepted", "rejected"):
            flt = _string(f"$aws/things/honest-{i}/shadow/update/{reply}")
            client.sock.sendall(b"\x82" + _length(len(flt) + 3) + b"\x00\x01" + flt + b"\x00")  # QoS 0 replies
            client.sock.recv(5)
        buf = b""
        while not stop.is_set():
            client.pid = client.pid % 65535 + 1
            body = json.dumps({"state": {"reported": {"n": client.pid}}, "clientToken": f"h{client.pid}"}).encode()
            client.sock.sendall(publish_packet(f"$aws/things/honest-{i}/shadow/update", body, client.pid))
            seen["attempts"] += 1
            try:
                while b"/update/accepted" not in buf and b"/update/rejected" not in buf:
                    buf += client.sock.recv(65536)
            except OSError as exc:
                seen[f"honest {type(exc).__name__}"] += 1
                return
            seen["honest accepted" if b"/update/accepted" in buf else "honest REJECTED"] += 1
            buf = b""

    threads = [threading.Thread(target=device, args=(i,), daemon=True) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _guarded(attack: Attack, gw: Gateway, stop: threading.Event, seen: Counter[str]) -> None:
    """An attacker the gateway stopped reading or cut off stops; what stopped it is counted."""
    try:
        attack(gw, stop, seen)
    except OSError as exc:
        seen[f"attacker stopped: {type(exc).__name__}"] += 1


def phase(gw: Gateway, name: str, seconds: float, attacks: list[tuple[str, Attack, int]]) -> dict[str, Any]:
    legit = Legit(gw)
    stop = threading.Event()
    counters: dict[str, Counter[str]] = {label: Counter() for label, _, _ in attacks}
    threads = [
        threading.Thread(target=_guarded, args=(attack, gw, stop, counters[label]), daemon=True)
        for label, attack, copies in attacks
        for _ in range(copies)
    ]
    rss_before = round(gw.rss_mb(), 1)
    gw.rss_peak = 0
    for thread in threads:
        thread.start()
    time.sleep(min(2.0, seconds / 4))  # let the attack build up before measuring
    figures: dict[str, Any] = {"phase": name}
    measure_stop = threading.Event()
    legit_thread = threading.Thread(target=legit.run, args=(measure_stop, figures))
    legit_thread.start()
    started = time.monotonic()
    time.sleep(seconds)
    measure_stop.set()
    legit_thread.join()
    stop.set()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - started
    for label, seen in counters.items():
        attempts = seen.pop("attempts", 0)
        figures[label] = {"per_s": round(attempts / elapsed, 1), **dict(seen)}
    time.sleep(3.0)
    figures.update(rss_mb={"before": rss_before, "peak": gw.rss_peak, "after": round(gw.rss_mb(), 1)})
    figures.update(gw.log_figures())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--nofile", type=int, default=1024, help="the gateway's descriptor limit (soft and hard)")
    parser.add_argument("--slow", type=int, default=1050, help="slow HTTP clients (as many slow MQTT ones)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep-log", type=Path, help="copy the gateway's log here (to read any traceback)")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    with tempfile.TemporaryDirectory() as home:
        gw = Gateway(Path(home), args.nofile)
        try:
            results = [
                phase(gw, "baseline", args.seconds, []),
                phase(
                    gw,
                    "slowloris",
                    args.seconds,
                    [("slow http", slow_http(args.slow), 1), ("slow mqtt", slow_mqtt(args.slow), 1)],
                ),
                phase(gw, "garbage", args.seconds, [("http", garbage_http, 4), ("mqtt", garbage_mqtt, 2)]),
                phase(gw, "poison", args.seconds, [("poison", poison_shadow, 1), ("honest", honest_shadows, 1)]),
            ]
        finally:
            gw.stop()
            if args.keep_log is not None:
                shutil.copyfile(gw.log_path, args.keep_log)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for row in results:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
