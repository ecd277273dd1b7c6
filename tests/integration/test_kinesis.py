"""Kinesis Data Streams through boto3 `kinesis`, and the kinesis rule action end to end."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client


def read_all(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records += page["Records"]
            iterator = page.get("NextShardIterator")
            if not page["Records"]:
                break
    return records


def test_stream_lifecycle_put_and_get(gateway: GatewayProcess, unique: str) -> None:
    kinesis = client(gateway, "kinesis")
    name = f"s-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=4)
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName=name, ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["StreamStatus"], summary["OpenShardCount"]) == ("ACTIVE", 4)
    # Reference vectors K1/K2: device-1 → shard 3, device-2 → shard 0.
    assert (
        kinesis.put_record(StreamName=name, Data=b"one", PartitionKey="device-1")["ShardId"] == "shardId-000000000003"
    )
    assert (
        kinesis.put_record(StreamName=name, Data=b"two", PartitionKey="device-2")["ShardId"] == "shardId-000000000000"
    )
    batch = kinesis.put_records(
        StreamName=name, Records=[{"Data": f"r{i}".encode(), "PartitionKey": f"k{i}"} for i in range(50)]
    )
    assert batch["FailedRecordCount"] == 0 and len(batch["Records"]) == 50
    records = read_all(kinesis, name)
    assert sorted(r["Data"] for r in records) == sorted([b"one", b"two", *[f"r{i}".encode() for i in range(50)]])
    shard3 = kinesis.get_shard_iterator(
        StreamName=name, ShardId="shardId-000000000003", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    first = kinesis.get_records(ShardIterator=shard3)["Records"]
    sequences = [r["SequenceNumber"] for r in first]
    assert sequences == sorted(sequences, key=int) and first[0]["Data"] == b"one"
    kinesis.delete_stream(StreamName=name)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream(StreamName=name)


def test_iterator_types_and_latest(gateway: GatewayProcess, unique: str) -> None:
    kinesis = client(gateway, "kinesis")
    name = f"it-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    put = kinesis.put_record(StreamName=name, Data=b"a", PartitionKey="k")
    kinesis.put_record(StreamName=name, Data=b"b", PartitionKey="k")
    shard = "shardId-000000000000"
    latest = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    assert kinesis.get_records(ShardIterator=latest)["Records"] == []
    kinesis.put_record(StreamName=name, Data=b"c", PartitionKey="k")
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=latest)["Records"]] == [b"c"]
    after = kinesis.get_shard_iterator(
        StreamName=name,
        ShardId=shard,
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber=put["SequenceNumber"],
    )["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=after)["Records"]] == [b"b", b"c"]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.get_records(ShardIterator="not-an-iterator")


def test_split_shard_closes_parent_and_readers_move_on(gateway: GatewayProcess, unique: str) -> None:
    kinesis = client(gateway, "kinesis")
    name = f"sp-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.put_record(StreamName=name, Data=b"before", PartitionKey="x")
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=name)["Shards"]}
    assert len(shards) == 3
    assert "EndingSequenceNumber" in shards["shardId-000000000000"]["SequenceNumberRange"]
    assert shards["shardId-000000000001"]["ParentShardId"] == "shardId-000000000000"
    iterator = kinesis.get_shard_iterator(
        StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    page = kinesis.get_records(ShardIterator=iterator)
    assert [r["Data"] for r in page["Records"]] == [b"before"]
    # Read to its end, a closed shard gives no next iterator and names its children instead.
    assert "NextShardIterator" not in page
    assert sorted(c["ShardId"] for c in page["ChildShards"]) == ["shardId-000000000001", "shardId-000000000002"]
    kinesis.put_record(StreamName=name, Data=b"after", PartitionKey="x")
    assert sorted(r["Data"] for r in read_all(kinesis, name)) == [b"after", b"before"]


def test_throughput_limit_and_bad_input(gateway: GatewayProcess, unique: str) -> None:
    kinesis = client(gateway, "kinesis")
    name = f"tp-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.put_record(StreamName=name, Data=b"x" * (1024 * 1024), PartitionKey="k")
    result = kinesis.put_records(
        StreamName=name, Records=[{"Data": b"x" * 1000, "PartitionKey": "same"} for _ in range(500)]
    )
    result2 = kinesis.put_records(
        StreamName=name, Records=[{"Data": b"x" * 1000, "PartitionKey": "same"} for _ in range(500)]
    )
    failed = result["FailedRecordCount"] + result2["FailedRecordCount"]
    codes = {r.get("ErrorCode") for r in result["Records"] + result2["Records"]}
    # 1,000 KB into one shard within a second goes over 1 MiB/s or not, but never past 1,000 records/s.
    assert failed == 0 or codes == {None, "ProvisionedThroughputExceededException"}
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.put_record(StreamName=f"missing-{unique}", Data=b"x", PartitionKey="k")


def test_rule_routes_telemetry_into_a_stream(gateway: GatewayProcess, unique: str) -> None:
    kinesis = client(gateway, "kinesis")
    iot = client(gateway, "iot")
    stream = f"tele-{unique}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    iot.create_topic_rule(
        ruleName=f"tok_{unique}",
        topicRulePayload={
            "sql": f"SELECT *, topic(2) AS device FROM 'k/+/{unique}'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [
                {
                    "kinesis": {
                        "roleArn": "arn:aws:iam::123456789012:role/r",
                        "streamName": stream,
                        "partitionKey": "${topic(2)}",
                    }
                }
            ],
        },
    )
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    dev = Device(gateway.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca).connect()
    for i in range(20):
        assert dev.publish(f"k/d{i % 3}/{unique}", json.dumps({"n": i}))
    deadline = time.monotonic() + 5
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(records) < 20:
        records = read_all(kinesis, stream)
        time.sleep(0.1)
    assert sorted(json.loads(r["Data"])["n"] for r in records) == list(range(20))
    assert {r["PartitionKey"] for r in records} == {"d0", "d1", "d2"}
    dev.close()


def test_records_survive_restart(tmp_path: Any, unique: str) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        kinesis = client(gw, "kinesis")
        kinesis.create_stream(StreamName="keep", ShardCount=2)
        for i in range(10):
            kinesis.put_record(StreamName="keep", Data=f"{i}".encode(), PartitionKey=f"p{i}")
        gw.stop()
        gw.start()
        kinesis = client(gw, "kinesis")
        assert sorted(int(r["Data"]) for r in read_all(kinesis, "keep")) == list(range(10))
        put = kinesis.put_record(StreamName="keep", Data=b"new", PartitionKey="p0")
        iterator = kinesis.get_shard_iterator(
            StreamName="keep", ShardId=put["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        in_shard = kinesis.get_records(ShardIterator=iterator)["Records"]
        # Sequence numbers keep increasing within the shard after a restart.
        assert in_shard[-1]["Data"] == b"new" and len(in_shard) >= 2
        assert [int(r["SequenceNumber"]) for r in in_shard] == sorted(int(r["SequenceNumber"]) for r in in_shard)
    finally:
        gw.stop()
