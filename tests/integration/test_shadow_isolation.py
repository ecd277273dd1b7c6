"""One device floods its own shadow with updates that hold a lone surrogate (valid JSON syntax, no Unicode text) while
ten honest devices update theirs: every poisoned update is rejected with 400 and its clientToken, and not one
honest update fails."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess
from mqtt_helpers import Device

HONEST = 10
UPDATES = 30
POISON = b'{"state":{"reported":{"x":"\\ud800"}},"clientToken":"poison-%d"}'


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("isolation"), extra_args=["--insecure-port", "0"]).start()
    yield proc
    proc.stop()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _device(gw: GatewayProcess, thing: str) -> Device:
    dev = Device(gw.ports["mqtt"], thing).connect()
    for reply in ("accepted", "rejected"):
        assert dev.subscribe(f"$aws/things/{thing}/shadow/update/{reply}", 1) == [1]
    return dev


def _honest(gw: GatewayProcess, thing: str, outcomes: queue.Queue[tuple[str, str, dict[str, Any]]]) -> None:
    dev = _device(gw, thing)
    try:
        for i in range(UPDATES):  # one request in flight at a time, as a well-behaved device does
            body = json.dumps({"state": {"reported": {"i": i}}, "clientToken": f"{thing}-{i}"})
            assert dev.publish(f"$aws/things/{thing}/shadow/update", body)
            reply = dev.expect(10)
            outcomes.put((thing, reply.topic.rsplit("/", 1)[1], json.loads(reply.payload)))
    finally:
        dev.close()


def test_a_poisoning_device_fails_no_honest_update(gw: GatewayProcess) -> None:
    assert gw.proc is not None
    poisoner = _device(gw, "poisoner")
    rss_before = _rss_kb(gw.proc.pid)
    stop = threading.Event()

    def flood() -> None:
        n = 0
        while not stop.is_set():
            poisoner.client.publish("$aws/things/poisoner/shadow/update", POISON % n, qos=0)
            n += 1
            if n % 50 == 0:
                time.sleep(0.01)

    flooder = threading.Thread(target=flood)
    flooder.start()
    outcomes: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
    honest = [threading.Thread(target=_honest, args=(gw, f"honest-{i}", outcomes)) for i in range(HONEST)]
    for thread in honest:
        thread.start()
    for thread in honest:
        thread.join(60)
    stop.set()
    flooder.join()
    results = [outcomes.get_nowait() for _ in range(outcomes.qsize())]
    assert len(results) == HONEST * UPDATES
    failed = [(thing, kind, body) for thing, kind, body in results if kind != "accepted"]
    assert failed == []
    assert all(body["clientToken"].startswith(thing) for thing, _, body in results)
    rejected = []
    while not poisoner.messages.empty():
        message = poisoner.messages.get_nowait()
        rejected.append((message.topic.rsplit("/", 1)[1], json.loads(message.payload)))
    poisoner.close()
    assert rejected, "the poisoner heard nothing back"
    assert all(kind == "rejected" and body["clientToken"].startswith("poison-") for kind, body in rejected)
    assert {body["code"] for _, body in rejected} <= {400, 429}
    assert 400 in {body["code"] for _, body in rejected}
    assert _rss_kb(gw.proc.pid) < rss_before + 64 * 1024
    assert "Traceback" not in (gw.home / "gateway.log").read_text()
