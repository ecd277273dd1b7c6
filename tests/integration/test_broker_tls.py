"""The MQTT door's own TLS termination: refused handshakes, stalled handshakes, multi-record packets, teardown."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import wire_compat as codec
from conftest import Creds, GatewayProcess, allow_all_policy
from mqtt_helpers import Device

from gateway.broker.tls import HANDSHAKE_TIMEOUT_S
from gateway.identity import ca as ca_mod
from gateway.identity.keystore import write_device_files, write_private


def device(gw: GatewayProcess, creds: Creds) -> Device:
    return Device(gw.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca)


def health(gw: GatewayProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}/health", timeout=5) as response:
        return dict(json.loads(response.read()))


def wait_for_connections(gw: GatewayProcess, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := health(gw)["connections"]) != expected:
        assert time.monotonic() < deadline, f"{now} connections, expected {expected}"
        time.sleep(0.05)


def tls_socket(gw: GatewayProcess, cert: Path | None, key: Path | None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    raw = socket.create_connection(("127.0.0.1", gw.ports["mqtts"]), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + codec.encode_length(len(body)) + body


def mqtt_connect(gw: GatewayProcess, creds: Creds) -> ssl.SSLSocket:
    s = tls_socket(gw, creds.cert, creds.key)
    s.sendall(connect_packet(creds.thing))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    return s


def assert_refused(gw: GatewayProcess, cert: Path | None, key: Path | None, client_id: str) -> None:
    """In TLS 1.3 the client's handshake completes first: it learns of the refusal (an alert) on its next read."""
    try:
        s = tls_socket(gw, cert, key)
    except ssl.SSLError:
        return
    with s:
        try:
            s.sendall(connect_packet(client_id))
            data = s.recv(4)
        except (ssl.SSLError, ConnectionResetError):
            return
    assert data == b"", f"accepted: {data!r}"


def counters(gw: GatewayProcess) -> tuple[int, int]:
    stats = health(gw)["stats"]
    assert isinstance(stats, dict)
    return stats["connects"], stats["denied"]


def foreign_creds(tmp: Path, gw: GatewayProcess) -> Creds:
    issued = ca_mod.issue_device_cert(
        ca_mod.create_root_ca("Somebody Else's CA", now=datetime.now(UTC)), now=datetime.now(UTC)
    )
    cert = write_device_files(tmp, "foreign", issued.cert_pem.decode(), None, None)
    key = tmp / "foreign.private.key"
    write_private(key, issued.key_pem or b"")
    return Creds("foreign", cert, key, gw.ca_file, "")


def test_no_certificate_and_unknown_ca_are_refused_before_any_session(
    gateway: GatewayProcess, unique: str, tmp_path: Path
) -> None:
    pub = device(gateway, gateway.provision(f"pub-{unique}", allow_all_policy())).connect()
    sub = device(gateway, gateway.provision(f"sub-{unique}", allow_all_policy())).connect()
    sub.subscribe(f"r/{unique}", 1)
    before = counters(gateway)
    foreign = foreign_creds(tmp_path, gateway)
    for _ in range(3):
        assert_refused(gateway, None, None, f"anon-{unique}")
        assert_refused(gateway, foreign.cert, foreign.key, f"foreign-{unique}")
        assert pub.publish(f"r/{unique}", b"alive", 1)
        assert sub.expect().payload == b"alive"
    # Neither CONNECT reached the broker: no Connection was made for them, so nothing was accepted or denied.
    assert counters(gateway) == before
    pub.close()
    sub.close()


@pytest.mark.slow
def test_client_silent_after_tcp_connect_is_dropped_after_the_handshake_timeout(
    gateway: GatewayProcess, unique: str
) -> None:
    dev = device(gateway, gateway.provision(f"dev-{unique}", allow_all_policy())).connect()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.ports["mqtts"]), timeout=HANDSHAKE_TIMEOUT_S + 10) as s:
        assert s.recv(1) == b""
    elapsed = time.monotonic() - started
    assert HANDSHAKE_TIMEOUT_S - 0.5 <= elapsed <= HANDSHAKE_TIMEOUT_S + 5, elapsed
    dev.subscribe(f"s/{unique}", 1)
    assert dev.publish(f"s/{unique}", b"still here", 1)
    assert dev.expect().payload == b"still here"
    dev.close()


def test_publish_larger_than_a_tls_record_round_trips_intact(gateway: GatewayProcess, unique: str) -> None:
    pub = device(gateway, gateway.provision(f"pub-{unique}", allow_all_policy())).connect()
    sub = device(gateway, gateway.provision(f"sub-{unique}", allow_all_policy())).connect()
    sub.subscribe(f"big/{unique}", 1)
    payloads = [os.urandom(120 * 1024) for _ in range(3)]
    for payload in payloads:  # back to back, so records straddle the gateway's reads
        pub.client.publish(f"big/{unique}", payload, qos=1)
    assert [sub.expect(10).payload for _ in payloads] == payloads
    pub.close()
    sub.close()


def test_disconnects_graceful_or_abrupt_leave_no_session(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path).start()  # its own gateway: the session count is this test's alone
    try:
        creds = gw.provision(f"dev-{unique}", allow_all_policy())
        dev = device(gw, creds).connect()
        wait_for_connections(gw, 1)
        dev.close()  # MQTT DISCONNECT
        wait_for_connections(gw, 0)

        s = mqtt_connect(gw, creds)
        wait_for_connections(gw, 1)
        s.unwrap().close()  # close_notify without DISCONNECT: unwrap() also waits for the gateway's close_notify
        wait_for_connections(gw, 0)

        s = mqtt_connect(gw, creds)
        wait_for_connections(gw, 1)
        s.close()  # TCP FIN without close_notify
        wait_for_connections(gw, 0)

        s = mqtt_connect(gw, creds)
        wait_for_connections(gw, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # TCP reset
        wait_for_connections(gw, 0)
    finally:
        gw.stop()
