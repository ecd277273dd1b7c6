"""Persistent sessions (clean_session=0, reference §1.2): subscriptions kept while the client is away, QoS 1 messages
queued for it (QoS 0 not), unacknowledged ones redelivered with DUP, all of it surviving a gateway restart."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

from conftest import Creds, GatewayProcess, allow_all_policy
from mqtt_helpers import Device

from mqttwire import codec
from mqttwire.frame import split_packets
from mqttwire.packets import PUBLISH, V311, Connect, Subscribe, SubscribeFilter


def device(gw: GatewayProcess, creds: Creds, client_id: str | None = None, clean: bool = True) -> Device:
    return Device(gw.ports["mqtts"], client_id or creds.thing, creds.cert, creds.key, creds.ca, clean_session=clean)


def test_qos1_messages_wait_for_a_persistent_client_and_qos0_do_not(gateway: GatewayProcess, unique: str) -> None:
    me = gateway.provision(f"sess-{unique}", allow_all_policy())
    other = gateway.provision(f"pub-{unique}", allow_all_policy())
    first = device(gateway, me, clean=False).connect()
    assert first.session_present is False
    first.subscribe(f"s/{unique}/#", qos=1)
    first.close()  # a clean DISCONNECT ends the connection, not the session

    publisher = device(gateway, other).connect()
    try:
        for i in range(3):
            assert publisher.publish(f"s/{unique}/a", f"q1-{i}", qos=1)
        publisher.publish(f"s/{unique}/a", "q0", qos=0)
        time.sleep(0.3)
        back = device(gateway, me, clean=False).connect()  # no SUBSCRIBE: the session has it
        try:
            assert back.session_present is True
            assert [back.expect(5).payload for _ in range(3)] == [b"q1-0", b"q1-1", b"q1-2"]
            back.expect_none()  # QoS 0 is not queued for an offline client
            assert publisher.publish(f"s/{unique}/b", "live", qos=1)
            assert back.expect(5).payload == b"live"
        finally:
            back.close()
    finally:
        publisher.close()


def test_a_clean_session_ends_the_stored_one(gateway: GatewayProcess, unique: str) -> None:
    me = gateway.provision(f"sess-{unique}", allow_all_policy())
    other = gateway.provision(f"pub-{unique}", allow_all_policy())
    first = device(gateway, me, clean=False).connect()
    first.subscribe(f"c/{unique}", qos=1)
    first.close()
    clean = device(gateway, me, clean=True).connect()
    assert clean.session_present is False
    clean.close()
    publisher = device(gateway, other).connect()
    assert publisher.publish(f"c/{unique}", "for nobody", qos=1)
    publisher.close()
    again = device(gateway, me, clean=False).connect()
    try:
        assert again.session_present is False
        again.expect_none()
    finally:
        again.close()


class RawSession:
    """A persistent-session client over mTLS that never acknowledges anything."""

    def __init__(self, gw: GatewayProcess, creds: Creds) -> None:
        context = ssl.create_default_context(cafile=str(creds.ca))
        context.load_cert_chain(str(creds.cert), str(creds.key))
        raw = socket.create_connection(("127.0.0.1", gw.ports["mqtts"]), 5)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.sock.settimeout(5)
        self.buffer = bytearray()
        self.packets: list[tuple[int, bytes]] = []
        self.sock.sendall(codec.encode(Connect(creds.thing, V311, clean_start=False), V311))
        _, connack = self.next()
        self.session_present = connack[0]

    def next(self) -> tuple[int, bytes]:
        while not self.packets:
            self.buffer += self.sock.recv(4096)
            self.packets += split_packets(self.buffer)
        return self.packets.pop(0)

    def next_publish_with_id(self) -> tuple[int, bytes, int]:
        while (packet := self.next())[0] >> 4 != PUBLISH:
            pass
        first, body = packet
        _topic, mid, payload, _ = codec.parse_publish(first, body, 0, len(body), False)
        return first & 0x0F, payload, mid

    def puback(self, mid: int) -> None:
        self.sock.sendall(bytes((0x40, 2, mid >> 8, mid & 0xFF)))

    def next_publish(self) -> tuple[int, str, bytes]:
        while (packet := self.next())[0] >> 4 != PUBLISH:
            pass
        first, body = packet
        topic, _mid, payload, _ = codec.parse_publish(first, body, 0, len(body), False)
        return first & 0x0F, topic, payload


def test_unacknowledged_messages_are_redelivered_with_dup_even_after_a_restart(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        me = gw.provision(f"raw-{unique}", allow_all_policy())
        other = gw.provision(f"pub-{unique}", allow_all_policy())
        raw = RawSession(gw, me)
        assert raw.session_present == 0
        raw.sock.sendall(codec.encode(Subscribe(1, [SubscribeFilter(f"r/{unique}", 1)]), V311))
        publisher = device(gw, other).connect()
        assert publisher.publish(f"r/{unique}", "not acked", qos=1)
        flags, topic, payload = raw.next_publish()
        assert (flags & 0x08, topic, payload) == (0, f"r/{unique}", b"not acked")
        raw.sock.close()  # gone without a PUBACK
        time.sleep(0.3)
        assert publisher.publish(f"r/{unique}", "while away", qos=1)
        publisher.close()

        gw.stop()
        gw.start()  # the session, its subscription and both messages are in the store
        raw = RawSession(gw, me)
        try:
            assert raw.session_present == 1
            flags, _, payload = raw.next_publish()
            assert (flags & 0x08, payload) == (0x08, b"not acked")  # DUP: it was sent before
            flags, _, payload = raw.next_publish()
            assert (flags & 0x08, payload) == (0, b"while away")
        finally:
            raw.sock.close()
    finally:
        gw.stop()


def test_queued_messages_flow_at_ten_a_second_and_stay_stored_until_acknowledged(tmp_path: Path, unique: str) -> None:
    """AWS sends a returning session's queue at <= 10 msg/s alongside live traffic. Each queued message stays in the
    store until its PUBACK: a drop mid-drain redelivers the unacknowledged ones with DUP, and the gateway dying
    mid-drain loses none of them."""
    gw = GatewayProcess(tmp_path).start()
    try:
        me = gw.provision(f"drain-{unique}", allow_all_policy())
        other = gw.provision(f"pub-{unique}", allow_all_policy())
        first = RawSession(gw, me)
        first.sock.sendall(codec.encode(Subscribe(1, [SubscribeFilter(f"d/{unique}", 1)]), V311))
        first.next()  # SUBACK
        first.sock.close()
        time.sleep(0.3)
        publisher = device(gw, other).connect()
        for i in range(25):
            assert publisher.publish(f"d/{unique}", f"m{i:02d}", qos=1)
        publisher.close()
        names = [f"m{i:02d}".encode() for i in range(25)]

        drained = RawSession(gw, me)
        started = time.monotonic()
        batch = [drained.next_publish_with_id() for _ in range(10)]
        assert time.monotonic() - started < 0.9 and [p for _, p, _ in batch] == names[:10]
        for _, _, mid in batch[:5]:
            drained.puback(mid)
        _, payload, _ = drained.next_publish_with_id()
        assert payload == names[10] and time.monotonic() - started >= 0.9  # the next second's batch
        drained.sock.close()  # m05..m19 went out and were never acknowledged

        time.sleep(0.3)
        again = RawSession(gw, me)
        redelivered = [again.next_publish_with_id() for _ in range(10)]
        assert [p for _, p, _ in redelivered] == names[5:15]
        assert all(f & 0x08 for f, _, _ in redelivered)  # DUP: each of them was sent before
        gw.stop(signal.SIGKILL)  # mid-drain, nothing acknowledged since: only what the store holds survives
        again.sock.close()

        gw.start()
        last = RawSession(gw, me)
        try:
            final = [last.next_publish_with_id() for _ in range(20)]
            assert [p for _, p, _ in final] == names[5:]
            # m05..m19 went out before the first drop; m20..m24 never did.
            assert [bool(f & 0x08) for f, _, _ in final] == [True] * 15 + [False] * 5
        finally:
            last.sock.close()
    finally:
        gw.stop()


def test_a_puback_for_an_offline_sessions_copy_means_it_is_stored(tmp_path: Path, unique: str) -> None:
    """Copies for offline sessions are committed together once per loop turn; the publisher's PUBACK waits for
    that commit, so killing the gateway right after the last PUBACK loses none."""
    gw = GatewayProcess(tmp_path).start()
    try:
        publisher_creds = gw.provision(f"pub-{unique}", allow_all_policy())
        sleepers = [gw.provision(f"sleeper{i}-{unique}", allow_all_policy()) for i in range(3)]
        for creds in sleepers:
            sleeper = device(gw, creds, clean=False).connect()
            sleeper.subscribe(f"o/{unique}", qos=1)
            sleeper.close()
        publisher = device(gw, publisher_creds).connect()
        for i in range(50):
            assert publisher.publish(f"o/{unique}", f"n{i:02d}", qos=1)
        gw.stop(signal.SIGKILL)
        publisher.close()
        gw.start()
        for creds in sleepers:
            back = device(gw, creds, clean=False).connect()
            try:
                assert [back.expect(10).payload for _ in range(50)] == [f"n{i:02d}".encode() for i in range(50)]
            finally:
                back.close()
    finally:
        gw.stop()
