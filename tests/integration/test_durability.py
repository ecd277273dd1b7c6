"""kill -9 under load: nothing the gateway acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client
from test_kinesis import read_all
from test_rules import rule


def test_kill_9_during_put_records_loses_nothing_acknowledged(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        kinesis = client(gw, "kinesis")
        kinesis.create_stream(StreamName="durable", ShardCount=4)
        acknowledged: list[bytes] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(n: int) -> None:
            own = client(gw, "kinesis")
            i = 0
            while not stop.is_set():
                batch = [f"{n}-{i + j}".encode() for j in range(20)]
                try:
                    result = own.put_records(
                        StreamName="durable", Records=[{"Data": data, "PartitionKey": data.decode()} for data in batch]
                    )
                except Exception:
                    return  # the gateway died mid-request: nothing of this batch was acknowledged
                with lock:
                    acknowledged.extend(
                        d for d, r in zip(batch, result["Records"], strict=True) if "SequenceNumber" in r
                    )
                i += 20

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        gw.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) > 100
        gw.start()
        stored = {r["Data"] for r in read_all(client(gw, "kinesis"), "durable")}
        missing = [d for d in acknowledged if d not in stored]
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    finally:
        gw.stop()


def test_kill_9_during_rule_traffic_loses_no_pubacked_message(tmp_path: Path) -> None:
    """A QoS 1 PUBACK waits for the message's rule actions to commit: after kill -9 every acknowledged message is in
    the Kinesis stream and the SQS queue its rule feeds."""
    # AWS's 100 publishes/s per connection would keep the publishers slower than the rule actions: lift it, so the
    # actions run behind and a PUBACK that did not wait for them would be lost by the kill.
    gw = GatewayProcess(tmp_path, extra_args=["--publishes-per-second", "100000"]).start()
    try:
        kinesis, sqs, iot = client(gw, "kinesis"), client(gw, "sqs"), client(gw, "iot")
        # Random partition keys over 32 shards: room for 32,000 records/s, above what the gateway's rule path carries,
        # so no record is throttled out to the error action (a failed action is still acknowledged, as on AWS). One
        # key per publisher (e.g. ${topic()}) would put each publisher on one shard and its 1,000 records/s.
        kinesis.create_stream(StreamName="ruled", ShardCount=32)
        url = sqs.create_queue(QueueName="ruled")["QueueUrl"]
        role = "arn:aws:iam::123456789012:role/r"
        iot.create_topic_rule(
            ruleName="durable_fanout",
            topicRulePayload=rule(
                "SELECT * FROM 'dur/+/data'",
                {"kinesis": {"roleArn": role, "streamName": "ruled"}},
                {"sqs": {"roleArn": role, "queueUrl": url, "useBase64": False}},
            ),
        )
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def publisher(n: int) -> None:
            # Many QoS 1 messages in flight at once, so the rule actions run behind the publishers: a PUBACK sent
            # before its actions commit would be lost by the kill below.
            creds = gw.provision(f"dur-{n}", allow_all_policy())
            dev = Device(gw.ports["mqtts"], f"dur-{n}", creds.cert, creds.key, creds.ca)
            dev.client.max_inflight_messages_set(200)
            sent: dict[int, str] = {}
            acked: list[int] = []  # appended from paho's network thread; a PUBACK may beat `sent[mid] = body`

            def on_publish(client: object, userdata: object, mid: int, *rest: object) -> None:
                acked.append(mid)

            dev.client.on_publish = on_publish
            dev.connect()
            try:
                for i in range(60_000):  # below 65,535, so packet ids do not wrap
                    if stop.is_set():
                        break
                    body = f'{{"d":"{n}-{i}"}}'
                    sent[dev.client.publish(f"dur/{n}/data", body, qos=1).mid] = body
                    if i % 200 == 199:
                        time.sleep(0.05)
            finally:
                dev.client.loop_stop()
                with lock:
                    acknowledged.extend(sent[mid] for mid in acked)

        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        gw.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) > 50
        gw.start()
        in_stream = {r["Data"].decode() for r in read_all(client(gw, "kinesis"), "ruled")}
        sqs = client(gw, "sqs")
        in_queue: set[str] = set()
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages", []
        ):
            in_queue.update(m["Body"] for m in batch)
        lost_stream = [b for b in acknowledged if b not in in_stream]
        lost_queue = [b for b in acknowledged if b not in in_queue]
        assert not lost_stream, f"{len(lost_stream)} PUBACKed messages missing from Kinesis, e.g. {lost_stream[:3]}"
        assert not lost_queue, f"{len(lost_queue)} PUBACKed messages missing from SQS, e.g. {lost_queue[:3]}"
    finally:
        gw.stop()
