"""Hostile HTTP clients against one gateway run with a low descriptor limit: deep JSON, wrong JSON types, oversized
bodies, malformed request lines and slow clients get each service's own 4xx, never a 5xx or a traceback, and
legitimate boto3 calls are served meanwhile."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import Loader
from conftest import GatewayProcess
from test_api_iot import client

HEADER_TIMEOUT_S = 2.0
SLOW_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: "  # then "a" after "a"
DESCRIPTORS = 256  # the gateway's RLIMIT_NOFILE, soft and hard: it cannot lift it

JSON_TARGETS = {
    "kinesis": ("Kinesis_20131202", "application/x-amz-json-1.1"),
    "sqs": ("AmazonSQS", "application/x-amz-json-1.0"),
    "firehose": ("Firehose_20150804", "application/x-amz-json-1.1"),
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(
        tmp_path_factory.mktemp("hostile"),
        env={"EDGESIM_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "EDGESIM_HTTP_BODY_TIMEOUT_S": "2"},
        max_descriptors=DESCRIPTORS,
    ).start()
    yield proc
    proc.stop()
    log = (proc.home / "gateway.log").read_text()
    assert "Traceback" not in log, log[-5000:]


def request(
    gw: GatewayProcess, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.ports["api"], timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def call_target(gw: GatewayProcess, service: str, operation: str, body: bytes) -> tuple[int, dict[str, Any]]:
    prefix, content_type = JSON_TARGETS[service]
    status, _, raw = request(
        gw, "POST", "/", body, {"X-Amz-Target": f"{prefix}.{operation}", "Content-Type": content_type}
    )
    return status, json.loads(raw)


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize(
    ("service", "operation"),
    [("kinesis", "PutRecord"), ("kinesis", "CreateStream"), ("sqs", "SendMessage"), ("firehose", "PutRecord")],
)
def test_deep_json_is_a_serialization_error(gw: GatewayProcess, service: str, operation: str) -> None:
    for body in (deep(10_000), b"[" * 10_000 + b"]" * 10_000):
        status, error = call_target(gw, service, operation, body)
        assert status == 400 and error["__type"].endswith("SerializationException"), error


def test_deep_json_on_rest_and_dashboard_routes(gw: GatewayProcess) -> None:
    for path in ("/things/deep-thing", "/things/deep-thing/shadow", "/rules/r1", "/2015-03-31/functions"):
        status, headers, raw = request(gw, "POST", path, deep(10_000), {"Content-Type": "application/json"})
        assert status == 400 and headers["x-amzn-errortype"] == "InvalidRequestException", (path, status)
        assert b"JSON" in raw or b"json" in raw or b"deep" in raw, raw
    status, _, raw = request(gw, "POST", "/edgesim/dash/rules/test", deep(10_000))
    assert status == 400, raw
    # A message payload is opaque bytes: published, and rules that read it see no fields.
    status, _, raw = request(gw, "POST", "/topics/deep?qos=1", deep(10_000))
    assert status == 200, raw


def _wrong_value(kind: str) -> Any:
    return {"string": [1], "blob": {"x": 1}, "list": "x", "structure": [1], "map": "x", "boolean": "yes"}.get(
        kind, ["not", "a", "number"]
    )


@pytest.mark.parametrize(
    ("service", "operation"),
    [
        ("kinesis", "PutRecord"),
        ("kinesis", "PutRecords"),
        ("kinesis", "CreateStream"),
        ("kinesis", "GetShardIterator"),
        ("sqs", "SendMessage"),
        ("sqs", "ReceiveMessage"),
        ("sqs", "CreateQueue"),
        ("firehose", "PutRecordBatch"),
        ("firehose", "CreateDeliveryStream"),
    ],
)
def test_every_top_level_member_of_the_wrong_type(gw: GatewayProcess, service: str, operation: str) -> None:
    model = Loader().load_service_model(service, "service-2")
    shape = model["shapes"][model["operations"][operation]["input"]["shape"]]
    for member, spec in shape["members"].items():
        kind = model["shapes"][spec["shape"]]["type"]
        status, error = call_target(gw, service, operation, json.dumps({member: _wrong_value(kind)}).encode())
        assert status == 400 and error["__type"].endswith("SerializationException"), (member, status, error)


@pytest.mark.parametrize(
    ("service", "operation", "path"),
    [
        ("iot", "CreateThing", "/things/typed-thing"),
        ("iot", "CreateTopicRule", "/rules/typed_rule"),
        ("iot", "CreateThingGroup", "/thing-groups/typed-group"),
        ("iot", "CreatePolicy", "/policies/typed-policy"),
        ("lambda", "CreateFunction", "/2015-03-31/functions"),
    ],
)
def test_rest_body_members_of_the_wrong_type(gw: GatewayProcess, service: str, operation: str, path: str) -> None:
    model = Loader().load_service_model(service, "service-2")
    shape = model["shapes"][model["operations"][operation]["input"]["shape"]]
    if "payload" in shape:  # the body is one member's structure
        shape = model["shapes"][shape["members"][shape["payload"]]["shape"]]
    members = {m: spec for m, spec in shape["members"].items() if "location" not in spec}
    assert members
    for member, spec in members.items():
        kind = model["shapes"][spec["shape"]]["type"]
        body = json.dumps({member: _wrong_value(kind)}).encode()
        status, headers, raw = request(gw, "POST", path, body, {"Content-Type": "application/json"})
        assert status == 400 and headers["x-amzn-errortype"] == "InvalidRequestException", (member, status, raw)


def test_oversized_bodies_get_413_in_the_service_shape(gw: GatewayProcess) -> None:
    big = b'{"StreamName":"' + b"x" * (17 * 1024 * 1024) + b'"}'
    status, error = call_target(gw, "kinesis", "PutRecord", big)
    assert status == 413 and error["__type"] == "RequestEntityTooLargeException"
    status, headers, _ = request(gw, "POST", "/things/big-thing", big, {"Content-Type": "application/json"})
    assert status == 413 and headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    # Without a Content-Length (chunked), the limit is found while reading.
    chunks = (b"x" * (1024 * 1024) for _ in range(17))
    conn = http.client.HTTPConnection("127.0.0.1", gw.ports["api"], timeout=20)
    conn.request("POST", "/", body=chunks, headers={"X-Amz-Target": "Kinesis_20131202.PutRecord"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["__type"] == "RequestEntityTooLargeException"
    conn.close()


def test_lone_surrogate_in_a_rest_shadow_update_is_a_400(gw: GatewayProcess) -> None:
    body = b'{"state":{"reported":{"x":"\\ud800"}},"clientToken":"t1"}'
    status, headers, raw = request(gw, "POST", "/things/surrogate-thing/shadow", body)
    assert status == 400 and headers["x-amzn-errortype"] == "InvalidRequestException", raw


def test_malformed_request_lines_are_400s_without_tracebacks(gw: GatewayProcess) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gw.ports["api"]), timeout=5) as sock:
            sock.sendall(garbage)
            assert sock.recv(100).split(b" ")[1] == b"400"


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass  # a 400 for a request line that grew too long, then the end
    except TimeoutError:
        return False
    except OSError:
        pass  # reset, or never connected
    return True


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_clients_beyond_the_descriptor_limit_leave_legitimate_calls_served(gw: GatewayProcess) -> None:
    assert gw.proc is not None
    kinesis = client(gw, "kinesis")
    kinesis.list_streams()
    rss_before = _rss_kb(gw.proc.pid)
    slow: list[socket.socket] = []
    for _ in range(DESCRIPTORS + 150):  # more than the gateway has descriptors
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", gw.ports["api"]))
        slow.append(sock)
    latencies = []
    sent = 0
    deadline = time.monotonic() + HEADER_TIMEOUT_S + 1.5
    while time.monotonic() < deadline:
        for sock in slow:  # a valid request head, one byte at a time
            with contextlib.suppress(OSError):
                sock.send(SLOW_HEAD[sent : sent + 1] or b"a")
        sent += 1
        started = time.monotonic()
        kinesis.list_streams()
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    assert max(latencies) < 1.0, latencies
    # Past the header deadline every slow client has been closed (evicted, timed out or refused): reads see the end.
    assert all(_closed_by_peer(sock, 5.0) for sock in slow)
    for sock in slow:
        sock.close()
    assert _rss_kb(gw.proc.pid) < rss_before + 64 * 1024
    kinesis.list_streams()


def test_idle_mqtt_connections_beyond_the_descriptor_limit_leave_devices_connecting(gw: GatewayProcess) -> None:
    from conftest import allow_all_policy
    from mqtt_helpers import Device

    creds = gw.provision("hostile-device", allow_all_policy())
    idle: list[socket.socket] = []
    for _ in range(DESCRIPTORS + 150):  # half-open TLS handshakes, more than the gateway has descriptors
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", gw.ports["mqtts"]))
        idle.append(sock)
    time.sleep(0.5)
    started = time.monotonic()
    device = Device(gw.ports["mqtts"], "hostile-device", creds.cert, creds.key, creds.ca).connect()
    assert device.publish("hostile/t", b"x")
    assert time.monotonic() - started < 2.0
    device.close()
    for sock in idle:
        sock.close()


def test_a_body_that_never_finishes_arriving_gets_408(gw: GatewayProcess) -> None:
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.PutRecord\r\n"
        "Content-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.ports["api"]), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'{"StreamName":')  # and then nothing more
        answer = sock.recv(4096)
        assert answer.split(b" ")[1] == b"408", answer
        assert b"RequestTimeoutException" in answer
        assert 1.5 < time.monotonic() - started < 6


def test_a_request_head_that_never_finishes_is_closed_at_the_deadline(gw: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.ports["api"]), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):  # a byte every 0.25 s does not restart the deadline
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.25)
        assert _closed_by_peer(sock, 5)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3
