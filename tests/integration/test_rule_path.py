"""The rule path under load: a device that does not wait for its PUBACKs is slowed (its connection is not read while
too many acknowledgements wait for durable actions), nothing it was acknowledged for is lost, PUBACKs keep PUBLISH
order; records land in publish order, and failures reach the errorAction with a UUID-shaped trace id per message.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from conftest import GatewayProcess
from test_api_iot import client
from test_commit_failures import RawClient, _length, _string
from test_kinesis import read_all
from test_rules import rule

ROLE = "arn:aws:iam::123456789012:role/r"
HELD_ACKS = 8
UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(
        tmp_path_factory.mktemp("rulepath"),
        extra_args=["--insecure-port", "0"],
        env={"EDGESIM_MQTT_HELD_ACKS": str(HELD_ACKS)},
    ).start()
    yield proc
    proc.stop()


def _stats(gw: GatewayProcess) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}/health", timeout=5) as response:
        return dict(json.loads(response.read())["stats"])


def _puback_ids(device: RawClient, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        packet = device._until(0x40)
        assert packet is not None, f"connection closed after {len(ids)} PUBACKs"
        ids.append(int.from_bytes(packet[:2], "big"))
    return ids


def test_flooding_publisher_is_slowed_and_every_acknowledged_record_lands_in_order(gw: GatewayProcess) -> None:
    kinesis, iot = client(gw, "kinesis"), client(gw, "iot")
    kinesis.create_stream(StreamName="flood", ShardCount=1)
    iot.create_topic_rule(
        ruleName="flood_to_stream",
        topicRulePayload=rule("SELECT * FROM 'flood/+'", {"kinesis": {"roleArn": ROLE, "streamName": "flood"}}),
    )
    before = _stats(gw)["paused_for_acks"]
    device = RawClient(gw.ports["mqtt"], "flooder")
    count = 300
    packets = bytearray()
    for n in range(1, count + 1):
        body = _string("flood/dev") + n.to_bytes(2, "big") + json.dumps({"n": n}).encode()
        packets += b"\x32" + _length(len(body)) + body
    device.sock.sendall(packets)  # all at once, without waiting for a single PUBACK
    assert _puback_ids(device, count) == list(range(1, count + 1))
    device.close()
    assert _stats(gw)["paused_for_acks"] > before  # the connection was held back, not queued without bound
    assert [json.loads(r["Data"])["n"] for r in read_all(kinesis, "flood")] == list(range(1, count + 1))


def test_rules_fire_in_order_and_failures_reach_the_error_action_with_distinct_trace_ids(gw: GatewayProcess) -> None:
    kinesis, sqs, iot = client(gw, "kinesis"), client(gw, "sqs"), client(gw, "iot")
    kinesis.create_stream(StreamName="ordered", ShardCount=1)
    errors = sqs.create_queue(QueueName="rule-path-errors")["QueueUrl"]
    iot.create_topic_rule(
        ruleName="ordered_and_missing",
        topicRulePayload=rule(
            "SELECT n FROM 'ordered/+'",
            {"kinesis": {"roleArn": ROLE, "streamName": "ordered"}},
            {"kinesis": {"roleArn": ROLE, "streamName": "no-such-stream"}},
            error={"sqs": {"roleArn": ROLE, "queueUrl": errors}},
        ),
    )
    device = RawClient(gw.ports["mqtt"], "orderly")
    for n in range(1, 21):
        assert device.publish("ordered/dev", json.dumps({"n": n, "extra": "dropped"}).encode())
    device.close()
    assert [json.loads(r["Data"]) for r in read_all(kinesis, "ordered")] == [{"n": n} for n in range(1, 21)]
    documents = []
    while len(documents) < 20:
        got = sqs.receive_message(QueueUrl=errors, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
        assert got, f"only {len(documents)} errorAction documents arrived"
        documents += [json.loads(m["Body"]) for m in got]
    assert all(d["failures"][0]["failedResource"] == "no-such-stream" for d in documents)
    trace_ids = [d["cloudwatchTraceId"] for d in documents]
    assert len(set(trace_ids)) == 20
    assert all(UUID_SHAPE.match(t) and uuid.UUID(t).version == 4 for t in trace_ids)
