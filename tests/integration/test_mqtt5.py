"""MQTT 5 as AWS IoT Core speaks it, driven by paho-mqtt 2.x with protocol=MQTTv5 over mTLS and the plain port."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Creds, GatewayProcess, allow_all_policy
from mqtt5_helpers import V5Client, props
from mqtt_helpers import Device
from paho.mqtt.packettypes import PacketTypes

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.frame import split_frame
from mqttwire.packets import V5, Ack, Connack, Connect, Packet, Publish, Suback, Subscribe, SubscribeFilter


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        tmp_path_factory.mktemp("gw5"), extra_args=["--insecure-port", "0", "--min-keep-alive", "1"]
    ).start()
    yield gateway
    gateway.stop()


def client(gw: GatewayProcess, creds: Creds, client_id: str | None = None, keepalive: int = 60) -> V5Client:
    return V5Client(gw.ports["mqtts"], client_id or creds.thing, creds.cert, creds.key, creds.ca, keepalive=keepalive)


def narrow_policy(prefix: str) -> dict[str, object]:
    arn = "arn:aws:iot:us-east-1:123456789012"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": f"{arn}:topic/{prefix}/*"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{arn}:topicfilter/{prefix}/*"},
        ],
    }


def test_connack_carries_aws_properties_and_clamps(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"c5-{unique}", allow_all_policy())
    dev = client(gw, creds, keepalive=2000).connect(SessionExpiryInterval=90_000)
    flags, rc, p = dev.connack  # type: ignore[misc]
    assert rc.value == 0 and not flags.session_present
    assert p.MaximumQoS == 1 and p.RetainAvailable == 1 and p.TopicAliasMaximum == 8
    assert p.SubscriptionIdentifierAvailable == 0 and p.SharedSubscriptionAvailable == 1
    assert p.WildcardSubscriptionAvailable == 1
    assert p.ServerKeepAlive == 1200  # AWS's maximum keep-alive
    assert p.SessionExpiryInterval == 3600  # clamped to the gateway's maximum
    dev.close()


def test_assigned_client_identifier_on_the_plain_port(gw: GatewayProcess) -> None:
    dev = V5Client(gw.ports["mqtt"], "").connect()
    assert dev.connack[2].AssignedClientIdentifier.startswith("edgesim-")  # type: ignore[index]
    dev.close()


def test_properties_travel_to_v5_and_are_stripped_for_v3(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"p5-{unique}", allow_all_policy())
    pub = client(gw, creds).connect()
    sub5 = client(gw, gw.provision(f"s5-{unique}", allow_all_policy())).connect()
    sub3_creds = gw.provision(f"s3-{unique}", allow_all_policy())
    sub3 = Device(gw.ports["mqtts"], sub3_creds.thing, sub3_creds.cert, sub3_creds.key, sub3_creds.ca).connect()
    topic = f"v5/{unique}/t"
    assert sub5.subscribe(topic) == [1]
    sub3.subscribe(topic, 1)
    rc = pub.publish(topic, b'{"t": 21}', UserProperty=[("unit", "C"), ("unit", "K")], ContentType="application/json",
                     ResponseTopic=f"v5/{unique}/reply", CorrelationData=b"\x01\x02", PayloadFormatIndicator=1,
                     MessageExpiryInterval=60)  # fmt: skip
    assert rc.value == 0
    got = sub5.expect()
    assert got.payload == b'{"t": 21}'
    assert got.properties.UserProperty == [("unit", "C"), ("unit", "K")]
    assert got.properties.ContentType == "application/json"
    assert got.properties.ResponseTopic == f"v5/{unique}/reply"
    assert got.properties.CorrelationData == b"\x01\x02"
    assert got.properties.PayloadFormatIndicator == 1
    assert 58 <= got.properties.MessageExpiryInterval <= 60
    assert sub3.expect().payload == b'{"t": 21}'  # a v3 subscriber gets the message without the v5 fields
    # and a v3 publisher reaches the v5 subscriber
    sub3.publish(topic, b"from-v3", 1)
    assert sub5.expect().payload == b"from-v3"
    for c in (pub, sub5):
        c.close()
    sub3.close()


def test_denials_are_reason_codes_not_disconnects(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"n5-{unique}", narrow_policy(f"ok{unique}"))
    dev = client(gw, creds).connect()
    assert dev.subscribe(f"ok{unique}/a") == [1]
    assert dev.subscribe(f"no{unique}/a") == [0x87]
    assert dev.publish(f"no{unique}/a", b"x").value == 0x87  # Not authorized, connection kept
    assert dev.publish(f"ok{unique}/a", b"fine").value == 0
    assert dev.expect().payload == b"fine"
    assert dev.subscribe(f"ok{unique}/1/2/3/4/5/6/7/+") == [0x8F]  # Topic Filter invalid (too deep)
    assert dev.publish(f"ok{unique}/1/2/3/4/5/6/7/8", b"deep").value == 0x90  # Topic Name invalid
    assert dev.subscribe(f"ok{unique}/q2", qos=2) == [1]  # QoS 2 is granted as the server's Maximum QoS
    assert not dev.disconnected.is_set()
    dev.close()


def test_qos2_publish_is_disconnect_qos_not_supported(gw: GatewayProcess, unique: str) -> None:
    dev = client(gw, gw.provision(f"q5-{unique}", allow_all_policy())).connect()
    dev.client.publish(f"q/{unique}", b"x", qos=2)
    assert dev.disconnected.wait(5)
    assert dev.disconnect_reason.value == 0x9B
    dev.client.loop_stop()


def test_subscription_identifiers_are_refused(gw: GatewayProcess, unique: str) -> None:
    dev = client(gw, gw.provision(f"si-{unique}", allow_all_policy())).connect()
    codes = dev.subscribe(f"si/{unique}", properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    assert codes == [0xA1]
    dev.close()


def test_topic_alias_set_then_used(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"ta-{unique}", allow_all_policy())
    dev = client(gw, creds).connect()
    dev.subscribe(f"alias/{unique}")
    assert dev.publish(f"alias/{unique}", b"one", TopicAlias=3).value == 0
    assert dev.publish("", b"two", TopicAlias=3).value == 0
    assert [dev.expect().payload, dev.expect().payload] == [b"one", b"two"]
    dev.client.publish("", b"three", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=9))  # > maximum 8
    assert dev.disconnected.wait(5)
    assert dev.disconnect_reason.value == 0x94
    dev.client.loop_stop()


def test_session_expiry_resume_and_no_local(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"se-{unique}", allow_all_policy())
    other = client(gw, gw.provision(f"so-{unique}", allow_all_policy())).connect()
    dev = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=300)
    assert not dev.connack[0].session_present  # type: ignore[index]
    dev.subscribe(f"sess/{unique}", noLocal=True)
    assert dev.publish(f"sess/{unique}", b"mine").value == 0
    dev.expect_none(0.5)  # No Local: its own message does not come back
    dev.close()
    other.publish(f"sess/{unique}", b"queued")
    again = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=300)
    assert again.connack[0].session_present  # type: ignore[index]
    assert again.expect().payload == b"queued"
    again.close(SessionExpiryInterval=0)  # DISCONNECT ends the session now
    fresh = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=300)
    assert not fresh.connack[0].session_present  # type: ignore[index]
    fresh.close()
    other.close()


def test_queued_message_expires(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"me-{unique}", allow_all_policy())
    other = client(gw, gw.provision(f"mo-{unique}", allow_all_policy())).connect()
    dev = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=300)
    dev.subscribe(f"exp/{unique}")
    dev.close()
    other.publish(f"exp/{unique}", b"short", MessageExpiryInterval=1)
    other.publish(f"exp/{unique}", b"long", MessageExpiryInterval=100)
    time.sleep(2.2)
    again = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=300)
    got = again.expect()
    assert got.payload == b"long"
    assert got.properties.MessageExpiryInterval <= 98
    again.expect_none(0.5)
    again.close()
    other.close()


def test_will_delay_and_reconnect_cancels_it(gw: GatewayProcess, unique: str) -> None:
    watcher = client(gw, gw.provision(f"ww-{unique}", allow_all_policy())).connect()
    watcher.subscribe(f"will/{unique}/#")
    creds = gw.provision(f"wd-{unique}", allow_all_policy())
    dev = client(gw, creds)
    dev.client.will_set(f"will/{unique}/gone", b"bye", 1, properties=props(PacketTypes.WILLMESSAGE,
                                                                          WillDelayInterval=2))  # fmt: skip
    dev.connect(clean_start=False, SessionExpiryInterval=60)
    dev.drop()
    watcher.expect_none(1.0)  # not before its delay
    got = watcher.expect(5)
    assert got.topic == f"will/{unique}/gone" and got.payload == b"bye"
    # A client that comes back within the delay sends no will.
    dev2 = client(gw, creds)
    dev2.client.will_set(f"will/{unique}/gone2", b"bye2", 1, properties=props(PacketTypes.WILLMESSAGE,
                                                                             WillDelayInterval=3))  # fmt: skip
    dev2.connect(clean_start=False, SessionExpiryInterval=60)
    dev2.drop()
    time.sleep(0.5)
    back = client(gw, creds).connect(clean_start=False, SessionExpiryInterval=60)
    watcher.expect_none(4)
    back.close()
    watcher.close()


def test_disconnect_with_will_message_publishes_it(gw: GatewayProcess, unique: str) -> None:
    watcher = client(gw, gw.provision(f"dw-{unique}", allow_all_policy())).connect()
    watcher.subscribe(f"dww/{unique}")
    dev = client(gw, gw.provision(f"dx-{unique}", allow_all_policy()))
    dev.client.will_set(f"dww/{unique}", b"as-asked", 1)
    dev.connect()
    dev.close(reason=0x04)
    assert watcher.expect().payload == b"as-asked"
    watcher.close()


def test_takeover_tells_the_old_connection_why(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"to-{unique}", allow_all_policy())
    first = client(gw, creds).connect()
    second = client(gw, creds).connect()
    assert first.disconnected.wait(5)
    assert first.disconnect_reason.value == 0x8E  # Session taken over
    first.client.loop_stop()
    second.close()


def test_enhanced_authentication_is_refused(gw: GatewayProcess, unique: str) -> None:
    dev = client(gw, gw.provision(f"au-{unique}", allow_all_policy()))
    assert not dev.try_connect(AuthenticationMethod="SCRAM-SHA-1")
    assert dev.connack is not None and dev.connack[1].value == 0x8C
    dev.client.loop_stop()


def test_retained_message_keeps_its_properties(gw: GatewayProcess, unique: str) -> None:
    creds = gw.provision(f"rp-{unique}", allow_all_policy())
    dev = client(gw, creds).connect()
    dev.publish(f"ret/{unique}", b"kept", retain=True, ContentType="text/plain", UserProperty=[("a", "b")])
    dev.close()
    late = client(gw, creds).connect()
    late.subscribe(f"ret/{unique}")
    got = late.expect()
    assert got.retain and got.payload == b"kept"
    assert got.properties.ContentType == "text/plain" and got.properties.UserProperty == [("a", "b")]
    late.close()


def test_persistent_session_on_the_plain_port(gw: GatewayProcess, unique: str) -> None:
    """Anonymous clients keep sessions too (the Eclipse paho interoperability tests' offline queueing)."""
    sub = Device(gw.ports["mqtt"], f"anon-sub-{unique}", clean_session=False).connect()
    sub.subscribe(f"anon/{unique}", 1)
    sub.close()
    pub = Device(gw.ports["mqtt"], f"anon-pub-{unique}").connect()
    assert pub.publish(f"anon/{unique}", b"while away", 1)
    back = Device(gw.ports["mqtt"], f"anon-sub-{unique}", clean_session=False).connect()
    assert back.session_present
    assert back.expect().payload == b"while away"
    back.close()
    pub.close()


def test_anonymous_client_cannot_take_over_a_device(gw: GatewayProcess, unique: str, tmp_path: Path) -> None:
    creds = gw.provision(f"own-{unique}", allow_all_policy())
    owner = client(gw, creds).connect()
    thief = V5Client(gw.ports["mqtt"], creds.thing)
    assert not thief.try_connect()
    assert thief.connack is not None and thief.connack[1].value == 0x87
    thief.client.loop_stop()
    assert not owner.disconnected.is_set()
    owner.close()


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="make test installs mosquitto-clients")
def test_mosquitto_clients_speak_v5_with_properties(gw: GatewayProcess, unique: str) -> None:
    def tls(creds: Creds) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(gw.ports["mqtts"]), "--cafile", str(creds.ca), "--cert", str(creds.cert),
                "--key", str(creds.key), "-V", "mqttv5", "-i", creds.thing]  # fmt: skip

    pub_creds = gw.provision(f"mp5-{unique}", allow_all_policy())
    sub_creds = gw.provision(f"ms5-{unique}", allow_all_policy())
    sub = subprocess.Popen(
        ["mosquitto_sub", *tls(sub_creds), "-t", f"mq5/{unique}/#", "-C", "1", "-q", "1", "-F", "%t|%p|%C|%P"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        subprocess.run(
            ["mosquitto_pub", *tls(pub_creds), "-t", f"mq5/{unique}/t", "-m", "hello v5", "-q", "1",
             "-D", "publish", "content-type", "text/plain", "-D", "publish", "user-property", "site", "lab"],
            check=True, timeout=10,
        )  # fmt: skip
        out, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    assert out.strip() == f"mq5/{unique}/t|hello v5|text/plain|site:lab"


class RawV5:
    """A raw MQTT 5 connection on the plain port, to see exactly what the broker sends."""

    def __init__(self, port: int, client_id: str, **connect_props: object) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = bytearray()
        props = {getattr(mp, name): value for name, value in connect_props.items()} or None
        self.sock.sendall(codec.encode(Connect(client_id, V5, True, 60, properties=props), V5))
        connack = self.read()
        assert isinstance(connack, Connack) and connack.reason_code == 0

    def read(self, timeout: float = 5.0) -> Packet:
        self.sock.settimeout(timeout)
        while True:
            frame = split_frame(self.buf, 0, 1 << 20)
            if frame is not None:
                first, start, end = frame
                packet = codec.decode(first, bytes(self.buf[start:end]), V5)
                del self.buf[:end]
                return packet
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def send(self, packet: Packet) -> None:
        self.sock.sendall(codec.encode(packet, V5))


def test_receive_maximum_limits_unacknowledged_deliveries(gw: GatewayProcess, unique: str) -> None:
    slow = RawV5(gw.ports["mqtt"], f"rm-{unique}", RECEIVE_MAXIMUM=2, REQUEST_PROBLEM_INFORMATION=0)
    slow.send(Subscribe(1, [SubscribeFilter(f"rm/{unique}", 1)]))
    suback = slow.read()
    assert isinstance(suback, Suback) and suback.reason_codes == [1] and not suback.properties
    pub = Device(gw.ports["mqtt"], f"rmp-{unique}").connect()
    for i in range(5):
        assert pub.publish(f"rm/{unique}", str(i).encode(), 1)
    first, second = slow.read(), slow.read()
    assert isinstance(first, Publish) and isinstance(second, Publish)
    with pytest.raises(TimeoutError):
        slow.read(timeout=0.7)  # a third only after an acknowledgement
    slow.send(Ack(4, first.packet_id))
    third = slow.read()
    assert isinstance(third, Publish) and third.payload == b"2"
    pub.close()
    slow.sock.close()


@pytest.mark.parametrize("door", ["mqtt", "mqtts"])
def test_a_client_dribbling_bytes_before_connect_is_cut_off_from_accept(tmp_path: Path, door: str) -> None:
    """Slowloris: the CONNECT deadline runs from accept (TLS handshake included), not from the last byte."""
    gw = GatewayProcess(tmp_path, extra_args=["--insecure-port", "0", "--connect-timeout", "1.5"]).start()
    try:
        raw = socket.create_connection(("127.0.0.1", gw.ports[door]), timeout=5)
        if door == "mqtts":
            creds = gw.provision("dribbler", allow_all_policy())
            ctx = ssl.create_default_context(cafile=str(creds.ca))
            ctx.load_cert_chain(str(creds.cert), str(creds.key))
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        connect = codec.encode(Connect("dribbler", V5, True, 60), V5)
        started = time.monotonic()
        closed_after = None
        for byte in connect[:-1]:  # never the last byte
            try:
                raw.sendall(bytes((byte,)))
                raw.settimeout(0.25)
                if raw.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and closed_after < 4.0, closed_after
        raw.close()
    finally:
        gw.stop()


def test_lifecycle_events_carry_a_session_uuid_and_a_rising_version(gw: GatewayProcess, unique: str) -> None:
    watcher = client(gw, gw.provision(f"lw-{unique}", allow_all_policy())).connect()
    creds = gw.provision(f"lc-{unique}", allow_all_policy())
    watcher.subscribe(f"$aws/events/presence/+/{creds.thing}")
    events = []
    for _ in range(2):
        dev = client(gw, creds).connect()
        dev.close()
        events += [json.loads(watcher.expect().payload), json.loads(watcher.expect().payload)]
    assert [e["eventType"] for e in events] == ["connected", "disconnected"] * 2
    for event in events:
        assert str(uuid.UUID(event["sessionIdentifier"])) == event["sessionIdentifier"]
    assert events[0]["sessionIdentifier"] == events[1]["sessionIdentifier"] != events[2]["sessionIdentifier"]
    versions = [e["versionNumber"] for e in events]
    assert versions[0] == versions[1] < versions[2] == versions[3]
    watcher.close()
