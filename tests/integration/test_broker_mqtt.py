"""MQTT semantics as AWS IoT has them, and bad input that must cost only the offending client."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Creds, GatewayProcess, allow_all_policy
from mqtt_helpers import Device

from gateway.identity import ca as ca_mod
from gateway.identity.keystore import write_device_files, write_private


def device(gw: GatewayProcess, creds: Creds, client_id: str | None = None, **kw: object) -> Device:
    return Device(gw.ports["mqtts"], client_id or creds.thing, creds.cert, creds.key, creds.ca, **kw)  # type: ignore[arg-type]


def pair(gw: GatewayProcess, unique: str) -> tuple[Device, Device]:
    pub = device(gw, gw.provision(f"pub-{unique}", allow_all_policy())).connect()
    sub = device(gw, gw.provision(f"sub-{unique}", allow_all_policy())).connect()
    return pub, sub


def test_hash_wildcard_does_not_match_parent_level(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"sensor-{unique}/#", 1)
    pub.publish(f"sensor-{unique}", b"parent")
    pub.publish(f"sensor-{unique}/a/b", b"child")
    assert sub.expect().payload == b"child"
    sub.expect_none()
    pub.close()
    sub.close()


def test_delivery_qos_is_min_of_publish_and_subscription(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"q/{unique}/#", 0)
    pub.publish(f"q/{unique}/a", b"x", qos=1)
    assert sub.expect().qos == 0
    pub.close()
    sub.close()


def test_overlapping_subscriptions_deliver_once(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"o/{unique}/#", 0)
    sub.subscribe(f"o/{unique}/+", 1)
    pub.publish(f"o/{unique}/a", b"x", qos=1)
    assert sub.expect().qos == 1
    sub.expect_none()
    pub.close()
    sub.close()


def test_retained_only_for_exact_topic_subscriptions(gateway: GatewayProcess, unique: str) -> None:
    pub, _ = pair(gateway, unique)
    assert pub.publish(f"ret/{unique}/state", b"on", qos=1, retain=True)
    exact = device(gateway, gateway.provision(f"e-{unique}", allow_all_policy())).connect()
    wild = device(gateway, gateway.provision(f"w-{unique}", allow_all_policy())).connect()
    exact.subscribe(f"ret/{unique}/state", 1)
    wild.subscribe(f"ret/{unique}/#", 1)
    message = exact.expect()
    assert (message.payload, message.retain) == (b"on", True)
    wild.expect_none()
    # An empty retained payload deletes it.
    pub.publish(f"ret/{unique}/state", b"", qos=1, retain=True)
    late = device(gateway, gateway.provision(f"l-{unique}", allow_all_policy())).connect()
    late.subscribe(f"ret/{unique}/state", 1)
    late.expect_none()
    for d in (pub, exact, wild, late):
        d.close()


def test_will_is_published_when_connection_drops(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    sub = device(gateway, gateway.provision(f"sub-{unique}", allow_all_policy())).connect()
    sub.subscribe(f"will/{unique}", 1)
    dev = device(gateway, creds)
    dev.client.will_set(f"will/{unique}", b"gone", qos=1)
    dev.connect()
    dev.client.loop_stop()
    dev.client.socket().close()  # type: ignore[union-attr]
    assert sub.expect(10).payload == b"gone"
    # A clean DISCONNECT suppresses the will.
    dev2 = device(gateway, creds)
    dev2.client.will_set(f"will/{unique}", b"gone2", qos=1)
    dev2.connect()
    dev2.close()
    sub.expect_none(1.0)
    sub.close()


def test_will_and_lifecycle_event_when_keep_alive_expires(tmp_path: Path, unique: str) -> None:
    """A client that goes silent (no PINGREQ) is cut after 1.5 x its keep-alive: will published, and the
    disconnected event says MQTT_KEEP_ALIVE_TIMEOUT. AWS raises keep-alive to 30 s; the test lowers that floor."""
    gw = GatewayProcess(tmp_path, ["--min-keep-alive", "1"]).start()
    try:
        watcher = device(gw, gw.provision(f"w-{unique}", allow_all_policy())).connect()
        watcher.subscribe(f"will/{unique}", 1)
        watcher.subscribe(f"$aws/events/presence/disconnected/silent-{unique}", 1)
        silent = device(gw, gw.provision(f"silent-{unique}", allow_all_policy()), keepalive=1)
        silent.client.will_set(f"will/{unique}", b"went silent", qos=1)
        silent.connect()
        started = time.monotonic()
        silent.client.loop_stop()  # the socket stays open, nothing is sent: no PINGREQ
        first = watcher.expect(10)
        second = watcher.expect(5)
        elapsed = time.monotonic() - started
        by_topic = {first.topic: first.payload, second.topic: second.payload}
        assert by_topic[f"will/{unique}"] == b"went silent"
        event = json.loads(by_topic[f"$aws/events/presence/disconnected/silent-{unique}"])
        assert event["disconnectReason"] == "MQTT_KEEP_ALIVE_TIMEOUT" and event["clientInitiatedDisconnect"] is False
        assert 1.4 <= elapsed < 6, elapsed
        watcher.close()
    finally:
        gw.stop()


def test_qos2_subscribe_gets_no_suback(gateway: GatewayProcess, unique: str) -> None:
    _, sub = pair(gateway, unique)
    assert sub.subscribe(f"q2/{unique}", 2, timeout=1.5) is None
    sub.close()


def test_oversized_payload_disconnects_only_that_client(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"big/{unique}", 1)
    pub.client.publish(f"big/{unique}", b"x" * (128 * 1024 + 1), qos=1)
    assert pub.disconnected.wait(5)
    pub.client.loop_stop()
    sub.expect_none()
    other = device(gateway, gateway.provision(f"o-{unique}", allow_all_policy())).connect()
    assert other.publish(f"big/{unique}", b"x" * (128 * 1024), qos=1)
    assert len(sub.expect().payload) == 128 * 1024
    other.close()
    sub.close()


def _tls_socket(gw: GatewayProcess, creds: Creds | None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    if creds is not None:
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
    raw = socket.create_connection(("127.0.0.1", gw.ports["mqtts"]), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def test_garbage_bytes_do_not_affect_other_clients(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"g/{unique}", 1)
    creds = gateway.provision(f"junk-{unique}", allow_all_policy())
    for junk in (b"\x00\xff" * 50, b"\x10\xff\xff\xff\xff\x7f", b"\x30\x05\x00\x10abc", b"GET / HTTP/1.1\r\n\r\n"):
        s = _tls_socket(gateway, creds)
        s.sendall(junk)
        s.settimeout(5)
        assert s.recv(100) == b""  # the gateway closed it
        s.close()
        assert pub.publish(f"g/{unique}", b"alive", 1)
        assert sub.expect().payload == b"alive"
    # Plain bytes on the TLS port: the handshake fails, nobody else notices.
    raw = socket.create_connection(("127.0.0.1", gateway.ports["mqtts"]), timeout=5)
    raw.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    raw.settimeout(5)
    try:
        data = raw.recv(100)
    except (ConnectionResetError, TimeoutError):
        data = b""
    assert not data.startswith(b"\x20")
    raw.close()
    assert pub.publish(f"g/{unique}", b"still", 1)
    assert sub.expect().payload == b"still"
    pub.close()
    sub.close()


def test_tls_without_client_certificate_is_refused(gateway: GatewayProcess) -> None:
    refused = False
    try:
        s = _tls_socket(gateway, None)
    except (ssl.SSLError, OSError):
        refused = True
    else:
        with s:
            try:
                s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                refused = s.recv(4) == b""
            except (ssl.SSLError, OSError):
                refused = True
    assert refused


def _foreign_creds(
    tmp: Path, gw: GatewayProcess, *, now: datetime, valid_days: int | None = None, own_ca: bool = True
) -> Creds:
    if own_ca:
        root = ca_mod.create_root_ca("Somebody Else's CA", now=now)
    else:
        root = ca_mod.load_issued(gw.ca_file.read_bytes(), (gw.certs_dir / "root-ca.key").read_bytes())
    issued = ca_mod.issue_device_cert(root, now=now, valid_days=valid_days)
    cert = write_device_files(tmp, "foreign", issued.cert_pem.decode(), None, None)
    key = tmp / "foreign.private.key"
    write_private(key, issued.key_pem or b"")
    return Creds("foreign", cert, key, gw.ca_file, "")


def test_unknown_ca_is_refused(gateway: GatewayProcess, tmp_path: Path) -> None:
    creds = _foreign_creds(tmp_path, gateway, now=datetime.now(UTC))
    assert not device(gateway, creds, client_id="foreign").try_connect(3)


def test_expired_certificate_is_refused(gateway: GatewayProcess, tmp_path: Path) -> None:
    creds = _foreign_creds(tmp_path, gateway, now=datetime.now(UTC) - timedelta(days=30), valid_days=2, own_ca=False)
    with gateway.registry() as reg:
        reg.register_certificate(creds.cert.read_text(), None, "ACTIVE")  # type: ignore[attr-defined]
    assert not device(gateway, creds, client_id="foreign").try_connect(3)


def test_websocket_door_with_client_certificate(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"ws-{unique}", allow_all_policy())
    ws = Device(gateway.ports["wss"], creds.thing, creds.cert, creds.key, creds.ca, transport="websockets").connect()
    _, sub = pair(gateway, unique)
    sub.subscribe(f"ws/{unique}", 1)
    assert ws.publish(f"ws/{unique}", b"over websocket", 1)
    assert sub.expect().payload == b"over websocket"
    ws.subscribe(f"back/{unique}", 1)
    _.publish(f"back/{unique}", b"to ws", 1)
    assert ws.expect().payload == b"to ws"
    ws.close()
    sub.close()


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="make test installs mosquitto-clients")
def test_mosquitto_clients_with_certificates(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"mq-{unique}", allow_all_policy())
    common = [
        "-h",
        "127.0.0.1",
        "-p",
        str(gateway.ports["mqtts"]),
        "--cafile",
        str(creds.ca),
        "--cert",
        str(creds.cert),
        "--key",
        str(creds.key),
    ]
    sub_creds = gateway.provision(f"mqs-{unique}", allow_all_policy())
    sub_common = [
        "-h",
        "127.0.0.1",
        "-p",
        str(gateway.ports["mqtts"]),
        "--cafile",
        str(sub_creds.ca),
        "--cert",
        str(sub_creds.cert),
        "--key",
        str(sub_creds.key),
    ]
    sub = subprocess.Popen(
        ["mosquitto_sub", *sub_common, "-i", sub_creds.thing, "-t", f"mq/{unique}/#", "-C", "1", "-v", "-q", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        subprocess.run(
            ["mosquitto_pub", *common, "-i", creds.thing, "-t", f"mq/{unique}/t", "-m", "from mosquitto", "-q", "1"],
            check=True,
            timeout=10,
        )
        out, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    assert out.strip() == f"mq/{unique}/t from mosquitto"


def test_publish_quota_throttles_without_losing(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path, extra_args=["--publishes-per-second", "5"]).start()
    try:
        pub, sub = pair(gw, unique)
        sub.subscribe(f"qt/{unique}", 1)
        started = time.monotonic()
        for i in range(15):
            pub.client.publish(f"qt/{unique}", str(i).encode(), qos=1)
        got = [sub.expect(10).payload for _ in range(15)]
        elapsed = time.monotonic() - started
        assert got == [str(i).encode() for i in range(15)]
        assert elapsed >= 1.5, f"15 publishes at 5/s took only {elapsed:.2f}s"
        pub.close()
        sub.close()
    finally:
        gw.stop()


def test_registry_and_retained_survive_restart(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        creds = gw.provision(f"dev-{unique}", allow_all_policy(), attributes={"site": "berlin"})
        dev = device(gw, creds).connect()
        assert dev.publish(f"keep/{unique}", b"kept", 1, retain=True)
        dev.close()
        gw.stop()
        gw.start()
        with gw.registry() as reg:
            assert reg.describe_thing(creds.thing)["attributes"] == {"site": "berlin"}  # type: ignore[attr-defined]
        again = device(gw, creds).connect()
        again.subscribe(f"keep/{unique}", 1)
        assert again.expect().payload == b"kept"
        again.close()
    finally:
        gw.stop()


def test_insecure_port_gives_anonymous_clients_the_dev_policy(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path, extra_args=["--insecure-port", "0"]).start()
    try:
        plain = Device(gw.ports["mqtt"], f"anon-{unique}").connect()
        plain.subscribe(f"anon/{unique}", 1)
        assert plain.publish(f"anon/{unique}", b"hi", 1)
        assert plain.expect().payload == b"hi"
        plain.close()
    finally:
        gw.stop()


def test_topic_deeper_than_aws_allows_closes_connection(gateway: GatewayProcess, unique: str) -> None:
    pub, sub = pair(gateway, unique)
    sub.subscribe(f"d{unique}/#", 1)
    assert pub.publish(f"d{unique}/1/2/3/4/5/6/7", b"ok", 1)  # 7 slashes: allowed
    assert sub.expect().payload == b"ok"
    pub.client.publish(f"d{unique}/1/2/3/4/5/6/7/8", b"too deep", qos=1)  # 8 slashes
    assert pub.disconnected.wait(5)
    pub.client.loop_stop()
    sub.expect_none()
    sub.close()


def _raw_subscriber(gw: GatewayProcess, creds: Creds, topic: str) -> ssl.SSLSocket:
    import wire_compat as codec

    s = _tls_socket(gw, creds)
    cid = creds.thing.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s.sendall(b"\x10" + codec.encode_length(len(body)) + body)
    assert s.recv(4)[:1] == b"\x20"
    sub = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic.encode() + b"\x01"
    s.sendall(b"\x82" + codec.encode_length(len(sub)) + sub)
    return s


def test_slow_qos1_subscriber_slows_publisher_instead_of_losing(tmp_path: Path, unique: str) -> None:
    import wire_compat as codec

    gw = GatewayProcess(tmp_path, extra_args=["--publishes-per-second", "0"]).start()
    try:
        sub = _raw_subscriber(gw, gw.provision(f"slow-{unique}", allow_all_policy()), f"slow/{unique}")
        pub = device(gw, gw.provision(f"fast-{unique}", allow_all_policy())).connect()
        total = 3000
        infos = [pub.client.publish(f"slow/{unique}", str(i).encode(), qos=1) for i in range(total)]
        time.sleep(2.0)
        acked_while_stalled = sum(1 for info in infos if info.is_published())
        assert acked_while_stalled < total, "publisher was never slowed by the stalled subscriber"
        # Now drain: read every PUBLISH and acknowledge it.
        buf = bytearray()
        got: list[bytes] = []
        sub.settimeout(10)
        while len(got) < total:
            buf += sub.recv(65536)
            while (frame := codec.split_frame(buf, 0, 1 << 20)) is not None:
                first, start, end = frame
                if first >> 4 == codec.PUBLISH:
                    _, pid, payload = codec.decode_publish(first, bytes(buf[start:end]))
                    got.append(payload)
                    sub.sendall(codec.encode_puback(pid))
                del buf[:end]
        assert got == [str(i).encode() for i in range(total)]
        sub.close()
        pub.close()
    finally:
        gw.stop()


def test_a_qos0_flood_to_a_stalled_subscriber_is_dropped_and_counted_and_others_are_served(
    tmp_path: Path, unique: str
) -> None:
    """Regression: the per-delivery backlog check was O(queued packets), so a flood froze the whole gateway."""
    import json
    import threading
    import urllib.request

    import wire_compat as codec

    gw = GatewayProcess(tmp_path, extra_args=["--publishes-per-second", "0"]).start()
    sockets: list[ssl.SSLSocket] = []
    try:
        stalled = _raw_subscriber(gw, gw.provision(f"stalled-{unique}", allow_all_policy()), f"flood/{unique}")
        sockets.append(stalled)
        creds = gw.provision(f"flooder-{unique}", allow_all_policy())
        packet = codec.encode_publish(f"flood/{unique}", b"x" * 200)
        chunk = packet * 5000  # ~1 MB per write; 20 flooders x 10 MB, far beyond what the subscriber's queue holds
        flooders: list[ssl.SSLSocket] = []
        for n in range(20):
            sock = _tls_socket(gw, creds)
            sockets.append(sock)
            cid = f"flooder-{unique}-{n}".encode()
            body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
            sock.sendall(b"\x10" + codec.encode_length(len(body)) + body)
            assert sock.recv(4)[:1] == b"\x20"
            flooders.append(sock)

        def flood(sock: ssl.SSLSocket) -> None:
            with contextlib.suppress(OSError):  # a frozen gateway times the writes out: the join below says so
                for _ in range(10):
                    sock.sendall(chunk)

        threads = [threading.Thread(target=flood, args=(sock,), daemon=True) for sock in flooders]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        # Meanwhile the gateway answers its API and serves other clients promptly.
        other = device(gw, gw.provision(f"other-{unique}", allow_all_policy())).connect()
        try:
            other.subscribe(f"calm/{unique}")
            started = time.monotonic()
            assert other.publish(f"calm/{unique}", b"still here", 1)
            assert other.expect(5).payload == b"still here"
            assert time.monotonic() - started < 3.0
        finally:
            other.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}/health", timeout=5) as response:
            stats = json.loads(response.read())["stats"]
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "the flood never got through: the gateway stopped reading"
        assert stats["dropped_qos0"] > 0  # QoS 0 for a subscriber that does not read is dropped and counted
    finally:
        for sock in sockets:
            sock.close()
        gw.stop()
