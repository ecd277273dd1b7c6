"""A commit that fails is never acknowledged. Failures are provoked in SQLite itself, from a second connection: a
trigger that inserts a row breaking a deferred foreign key, so the gateway's COMMIT fails (or, in the edge spool, a
trigger that rolls the open group back). The gateway must fail exactly the waiters of what was not stored: no
PUBACK (the connection closes so the client sends again), an HTTP 500, or a shadow `/rejected` 500 with the token.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Creds, GatewayProcess, allow_all_policy
from test_api_iot import client
from test_kinesis import read_all
from test_rules import rule

ROLE = "arn:aws:iam::123456789012:role/r"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("commits"), extra_args=["--insecure-port", "0"]).start()
    yield proc
    proc.stop()


@contextmanager
def failing_commits(db: Path, table: str, when: str) -> Iterator[None]:
    """Every transaction that inserts a matching row into `table` fails at its COMMIT."""
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    con.executescript(
        f"""
        CREATE TABLE IF NOT EXISTS poison_parent(id INTEGER PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS poison_child(
            id INTEGER REFERENCES poison_parent(id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER poison_{table} AFTER INSERT ON {table} WHEN {when}
        BEGIN INSERT INTO poison_child VALUES (1); END;
        """
    )
    try:
        yield
    finally:
        con.execute(f"DROP TRIGGER poison_{table}")
        con.close()


# ---- a raw MQTT 3.1.1 client: paho would resend on its own after a reconnect
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


class RawClient:
    def __init__(self, port: int, client_id: str, *, clean: bool = True, creds: Creds | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if creds is not None:
            ctx = ssl.create_default_context(cafile=str(creds.ca))
            ctx.load_cert_chain(str(creds.cert), str(creds.key))
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        body = _string("MQTT") + bytes((4, 0x02 if clean else 0x00)) + (60).to_bytes(2, "big") + _string(client_id)
        self.sock.sendall(b"\x10" + _length(len(body)) + body)
        assert self.sock.recv(4)[:1] == b"\x20"
        self.pid = 0
        self.buf = b""

    def subscribe(self, topic_filter: str) -> None:
        self.pid += 1
        body = self.pid.to_bytes(2, "big") + _string(topic_filter) + b"\x01"
        self.sock.sendall(b"\x82" + _length(len(body)) + body)
        self._until(0x90)

    def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 1; True on PUBACK, False when the gateway closed the connection instead."""
        self.pid += 1
        body = _string(topic) + self.pid.to_bytes(2, "big") + payload
        self.sock.sendall(b"\x32" + _length(len(body)) + body)
        return self._until(0x40) is not None

    def _until(self, kind: int) -> bytes | None:
        while True:
            while len(self.buf) >= 2:
                size, mult, pos = 0, 1, 1
                while self.buf[pos] & 0x80:
                    size += (self.buf[pos] & 0x7F) * mult
                    mult *= 128
                    pos += 1
                size += self.buf[pos] * mult
                if len(self.buf) < pos + 1 + size:
                    break
                first, packet, self.buf = self.buf[0], self.buf[pos + 1 : pos + 1 + size], self.buf[pos + 1 + size :]
                if first & 0xF0 == kind:
                    return packet
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _status(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


def test_kinesis_put_record_that_fails_to_commit_is_a_500_and_not_stored(gw: GatewayProcess) -> None:
    kinesis = client(gw, "kinesis")
    for name in ("doomed-k1", "fine-k1"):
        kinesis.create_stream(StreamName=name, ShardCount=1)
    with failing_commits(gw.data_dir / "edgesim.db", "kinesis_records", "NEW.stream = 'doomed-k1'"):
        with pytest.raises(ClientError) as info:
            kinesis.put_record(StreamName="doomed-k1", Data=b"lost", PartitionKey="k")
        assert _status(info.value) == 500
        kinesis.put_record(StreamName="fine-k1", Data=b"kept", PartitionKey="k")
    assert read_all(kinesis, "doomed-k1") == []
    kinesis.put_record(StreamName="doomed-k1", Data=b"later", PartitionKey="k")  # no transaction was left open
    assert [r["Data"] for r in read_all(kinesis, "doomed-k1")] == [b"later"]


def test_rule_action_whose_sink_commit_fails_gets_no_puback(gw: GatewayProcess) -> None:
    kinesis, sqs, iot = client(gw, "kinesis"), client(gw, "sqs"), client(gw, "iot")
    kinesis.create_stream(StreamName="doomed-k2", ShardCount=1)
    queue = sqs.create_queue(QueueName="doomed-q2")["QueueUrl"]
    iot.create_topic_rule(
        ruleName="to_doomed_stream",
        topicRulePayload=rule(
            "SELECT * FROM 'doomed/kinesis'", {"kinesis": {"roleArn": ROLE, "streamName": "doomed-k2"}}
        ),
    )
    iot.create_topic_rule(
        ruleName="to_doomed_queue",
        topicRulePayload=rule("SELECT * FROM 'doomed/sqs'", {"sqs": {"roleArn": ROLE, "queueUrl": queue}}),
    )
    data = client(gw, "iot-data")
    db = gw.data_dir / "edgesim.db"
    with (
        failing_commits(db, "kinesis_records", "NEW.stream = 'doomed-k2'"),
        failing_commits(db, "sqs_messages", "NEW.queue = 'doomed-q2'"),
    ):
        for topic in ("doomed/kinesis", "doomed/sqs"):
            device = RawClient(gw.ports["mqtt"], f"pub-{topic.replace('/', '-')}")
            assert device.publish(topic, b'{"n":1}') is False, topic
            device.close()
            with pytest.raises(ClientError) as info:
                data.publish(topic=topic, qos=1, payload=b'{"n":2}')
            assert _status(info.value) == 500
    device = RawClient(gw.ports["mqtt"], "pub-after")
    assert device.publish("doomed/kinesis", b'{"n":3}') and device.publish("doomed/sqs", b'{"n":3}')
    device.close()
    assert [json.loads(r["Data"]) for r in read_all(kinesis, "doomed-k2")] == [{"n": 3}]
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"]) for m in got] == [{"n": 3}]


def test_sqs_send_that_fails_to_commit_is_a_500_and_never_received(gw: GatewayProcess) -> None:
    sqs = client(gw, "sqs")
    doomed = sqs.create_queue(QueueName="doomed-q3")["QueueUrl"]
    fine = sqs.create_queue(QueueName="fine-q3")["QueueUrl"]
    with failing_commits(gw.data_dir / "edgesim.db", "sqs_messages", "NEW.queue = 'doomed-q3'"):
        with pytest.raises(ClientError) as info:
            sqs.send_message(QueueUrl=doomed, MessageBody="lost")
        assert _status(info.value) == 500
        sqs.send_message(QueueUrl=fine, MessageBody="kept")
    assert "Messages" not in sqs.receive_message(QueueUrl=doomed, WaitTimeSeconds=0)
    assert sqs.receive_message(QueueUrl=fine)["Messages"][0]["Body"] == "kept"


def test_shadow_update_that_fails_to_commit_is_rejected_with_its_token(gw: GatewayProcess) -> None:
    device = RawClient(gw.ports["mqtt"], "shadow-watcher")
    device.subscribe("$aws/things/+/shadow/update/+")
    with failing_commits(gw.data_dir / "edgesim.db", "shadows", "NEW.thing = 'doomed-lamp'"):
        packets = b""
        for thing in ("doomed-lamp", "fine-lamp"):
            body = json.dumps({"state": {"reported": {"on": True}}, "clientToken": f"tok-{thing}"}).encode()
            device.pid += 1
            packet = _string(f"$aws/things/{thing}/shadow/update") + device.pid.to_bytes(2, "big") + body
            packets += b"\x32" + _length(len(packet)) + packet
        device.sock.sendall(packets)  # one write, one batch: only the doomed one may fail
        replies: dict[str, dict[str, Any]] = {}
        while len(replies) < 2:
            packet = device._until(0x30)
            assert packet is not None
            topic_len = int.from_bytes(packet[:2], "big")
            topic = packet[2 : 2 + topic_len].decode()
            replies[topic] = json.loads(packet[2 + topic_len + 2 :])
        with pytest.raises(ClientError) as info:
            client(gw, "iot-data").update_thing_shadow(
                thingName="doomed-lamp", payload=b'{"state":{"reported":{"on":false}}}'
            )
        assert _status(info.value) == 500
    device.close()
    data = client(gw, "iot-data")
    with pytest.raises(data.exceptions.ResourceNotFoundException):  # nothing of it was kept, not even in a cache
        data.get_thing_shadow(thingName="doomed-lamp")
    rejected = replies["$aws/things/doomed-lamp/shadow/update/rejected"]
    assert (rejected["code"], rejected["clientToken"]) == (500, "tok-doomed-lamp")
    assert replies["$aws/things/fine-lamp/shadow/update/accepted"]["clientToken"] == "tok-fine-lamp"


def test_offline_session_copy_that_fails_to_commit_gets_no_puback(gw: GatewayProcess) -> None:
    creds = gw.provision("doomed-sleeper", allow_all_policy())
    subscriber = RawClient(gw.ports["mqtts"], "doomed-sleeper", clean=False, creds=creds)
    subscriber.subscribe("sleep/x")
    subscriber.close()
    time.sleep(0.3)  # the gateway notices the drop and parks the session
    with failing_commits(gw.data_dir / "edgesim.db", "mqtt_session_messages", "NEW.client_id = 'doomed-sleeper'"):
        publisher = RawClient(gw.ports["mqtt"], "sleep-publisher")
        assert publisher.publish("sleep/x", b"lost") is False
        publisher.close()
    publisher = RawClient(gw.ports["mqtt"], "sleep-publisher")
    assert publisher.publish("sleep/x", b"kept")
    publisher.close()
    back = RawClient(gw.ports["mqtts"], "doomed-sleeper", clean=False, creds=creds)
    packet = back._until(0x30)
    assert packet is not None and packet.endswith(b"kept")
    back.close()


def test_edge_spool_group_that_fails_to_commit_acknowledges_nothing_it_lost(gw: GatewayProcess, tmp_path: Path) -> None:
    from test_edge import EdgeProcess

    edge = EdgeProcess(tmp_path, gw).start()
    try:
        edge.offline()  # everything bridged stays in the spool
        con = sqlite3.connect(edge.home / "edge.db", isolation_level=None, timeout=10)
        # RAISE(ROLLBACK) undoes the whole open group: what other devices appended in the same loop turn is gone too,
        # so the group's COMMIT fails and none of its waiters may be acknowledged.
        con.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON spool WHEN NEW.topic LIKE 'dt/edge/doomed%' "
            "BEGIN SELECT RAISE(ROLLBACK, 'injected'); END"
        )
        acknowledged = []
        for round_ in range(5):
            fine = RawClient(edge.ports["local_mqtt"], f"edge-fine-{round_}")
            doomed = RawClient(edge.ports["local_mqtt"], f"edge-doomed-{round_}")
            payload = f'{{"round":{round_}}}'.encode()
            topic = _string("dt/edge/fine/temperature")
            fine.sock.sendall(b"\x32" + _length(len(topic) + 2 + len(payload)) + topic + b"\x00\x01" + payload)
            assert doomed.publish("dt/edge/doomed/temperature", b'{"t":1}') is False
            if fine._until(0x40) is not None:
                acknowledged.append(payload)
            fine.close()
            doomed.close()
        stored = {bytes(row[0]) for row in con.execute("SELECT payload FROM spool")}
        con.close()
        assert set(acknowledged) <= stored, (acknowledged, stored)  # acknowledged means stored
        assert "Traceback" not in (tmp_path / "edge.log").read_text()
    finally:
        edge.stop()
