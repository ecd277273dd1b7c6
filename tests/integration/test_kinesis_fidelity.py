"""Kinesis beyond records: tags, stream encryption, enhanced fan-out (SubscribeToShard over boto3's event stream),
KPL aggregated records de-aggregated by `edgesim streams read` and the Lambda event source, `edgesim streams tail`."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, GatewayProcess
from test_api_iot import client
from test_event_sources import RECORDER, lines
from test_lambda import create, wait_for

# ---- a KPL aggregated record, built here from the format's definition (independent of edgesim's reader)


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def kpl_record(users: list[tuple[str, bytes]]) -> bytes:
    keys = sorted({k for k, _ in users})
    body = b"".join(_field(1, k.encode()) for k in keys)
    for key, data in users:
        record = _varint(1 << 3 | 0) + _varint(keys.index(key)) + _field(3, data)
        body += _field(3, record)
    return b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()


@pytest.fixture(scope="module")
def kinesis(gateway: GatewayProcess) -> Any:
    return client(gateway, "kinesis")


def edgesim(gw: GatewayProcess, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--endpoint", f"http://127.0.0.1:{gw.ports['api']}"],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_tags_and_encryption(kinesis: Any, unique: str) -> None:
    name = f"tagged-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.add_tags_to_stream(StreamName=name, Tags={"env": "dev", "team": "iot", "app": "seed"})
    first = kinesis.list_tags_for_stream(StreamName=name, Limit=2)
    assert first["Tags"] == [{"Key": "app", "Value": "seed"}, {"Key": "env", "Value": "dev"}] and first["HasMoreTags"]
    rest = kinesis.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey="env")
    assert rest["Tags"] == [{"Key": "team", "Value": "iot"}] and not rest["HasMoreTags"]
    kinesis.remove_tags_from_stream(StreamName=name, TagKeys=["team"])
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    assert kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "app", "Value": "seed"},
        {"Key": "env", "Value": "dev"},
    ]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as too_many:
        for batch in range(5):
            kinesis.add_tags_to_stream(StreamName=name, Tags={f"k{batch}-{i}": "v" for i in range(10)})
    assert "cannot have more than 50 tags" in too_many.value.response["Error"]["Message"]

    kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EncryptionType"] == "KMS" and summary["KeyId"] == "alias/aws/kinesis"
    assert kinesis.put_record(StreamName=name, Data=b"secret", PartitionKey="p")["EncryptionType"] == "KMS"
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert kinesis.get_records(ShardIterator=it)["Records"][0]["EncryptionType"] == "KMS"
    kinesis.stop_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert kinesis.describe_stream(StreamName=name)["StreamDescription"]["EncryptionType"] == "NONE"


def _events(kinesis: Any, consumer: str, shard: str, position: dict[str, Any], want: int) -> tuple[list[Any], str]:
    """Subscribe and collect records until `want` have arrived; the last event's continuation number."""
    response = kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition=position)
    records: list[Any] = []
    continuation = ""
    try:
        for event in response["EventStream"]:
            body = event["SubscribeToShardEvent"]
            records += body["Records"]
            continuation = body["ContinuationSequenceNumber"]
            if len(records) >= want:
                break
    finally:
        response["EventStream"].close()
    return records, continuation


def test_enhanced_fan_out(kinesis: Any, unique: str) -> None:
    name = f"efo-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="dashboard")["Consumer"]
    assert consumer["ConsumerARN"].startswith(f"{arn}/consumer/dashboard:")
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="dashboard")
    described = kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="dashboard")["ConsumerDescription"]
    assert described["ConsumerStatus"] == "ACTIVE" and described["StreamARN"] == arn
    by_arn = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
    assert by_arn["ConsumerName"] == "dashboard"
    assert [c["ConsumerName"] for c in kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]] == ["dashboard"]
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["ConsumerCount"] == 1

    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    sent = [kinesis.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey="p") for i in range(3)]
    records, continuation = _events(kinesis, consumer["ConsumerARN"], shard, {"Type": "TRIM_HORIZON"}, 3)
    assert [r["Data"] for r in records] == [b"r0", b"r1", b"r2"]
    assert continuation == sent[-1]["SequenceNumber"]
    # A new subscription carries on from the continuation number: only what came after. (Another consumer: the
    # same one may subscribe to the same shard again only 5 s after its last successful call, as in AWS.)
    other = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="archiver")["Consumer"]["ConsumerARN"]
    kinesis.put_record(StreamName=name, Data=b"r3", PartitionKey="p")
    after = {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation}
    more, _ = _events(kinesis, other, shard, after, 1)
    assert [r["Data"] for r in more] == [b"r3"]
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.subscribe_to_shard(ConsumerARN=other, ShardId=shard, StartingPosition={"Type": "LATEST"})
    kinesis.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="dashboard")


def test_kpl_records_are_deaggregated(gateway: GatewayProcess, kinesis: Any, tmp_path: Path, unique: str) -> None:
    name = f"kpl-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    aggregate = kpl_record([("dev-1", b'{"t":1}'), ("dev-2", b'{"t":2}'), ("dev-1", b'{"t":3}')])
    kinesis.put_record(StreamName=name, Data=aggregate, PartitionKey="dev-1")
    kinesis.put_record(StreamName=name, Data=b"plain", PartitionKey="dev-9")
    broken = aggregate[:-1] + bytes([aggregate[-1] ^ 1])  # bad checksum: an ordinary record, left whole
    kinesis.put_record(StreamName=name, Data=broken, PartitionKey="dev-8")
    out = edgesim(gateway, "streams", "read", name, "--json").stdout.splitlines()
    shown = [json.loads(line) for line in out]
    assert [(s["partitionKey"], s["data"]) for s in shown[:4]] == [
        ("dev-1", '{"t":1}'),
        ("dev-2", '{"t":2}'),
        ("dev-1", '{"t":3}'),
        ("dev-9", "plain"),
    ]
    assert [s.get("subSequenceNumber") for s in shown[:4]] == [0, 1, 2, None]
    assert len(shown) == 5 and shown[4]["partitionKey"] == "dev-8" and "base64" in shown[4]["data"]

    lam = client(gateway, "lambda")
    sink = tmp_path / "kpl.jsonl"
    create(lam, f"kpl-{unique}", RECORDER, Environment={"Variables": {"OUT_FILE": str(sink)}})
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    lam.create_event_source_mapping(FunctionName=f"kpl-{unique}", EventSourceArn=arn, StartingPosition="TRIM_HORIZON")
    assert wait_for(lambda: len(lines(sink)) >= 5)
    got = lines(sink)
    assert [(r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"])) for r in got[:4]] == [
        ("dev-1", b'{"t":1}'),
        ("dev-2", b'{"t":2}'),
        ("dev-1", b'{"t":3}'),
        ("dev-9", b"plain"),
    ]
    assert [r["kinesis"].get("subSequenceNumber") for r in got[:3]] == [0, 1, 2]
    assert len({r["kinesis"]["sequenceNumber"] for r in got[:3]}) == 1


def _all_data(kinesis: Any, name: str) -> list[tuple[str, bytes]]:
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [(r["PartitionKey"], r["Data"]) for r in kinesis.get_records(ShardIterator=it)["Records"]]


def test_streams_tail_ships_lines_with_checkpoint_and_rotation(
    gateway: GatewayProcess, kinesis: Any, tmp_path: Path, unique: str
) -> None:
    name = f"tail-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\npartial")
    tail = [
        "streams",
        "tail",
        str(log),
        "--stream",
        name,
        "--from",
        "start",
        "--once",
        "--json",
        "--partition-key",
        "deterministic",
        "--data-dir",
        str(tmp_path / "state"),
    ]
    assert json.loads(edgesim(gateway, *tail).stdout)["shipped"] == 2
    assert _all_data(kinesis, name) == [
        (hashlib.md5(b"one\n").hexdigest(), b"one\n"),
        (hashlib.md5(b"two\n").hexdigest(), b"two\n"),
    ]
    # The writer finishes its line and adds one; a rerun resumes at the checkpoint: no resends.
    with log.open("a") as handle:
        handle.write(" line\nthree\n")
    assert json.loads(edgesim(gateway, *tail).stdout)["shipped"] == 2
    # Rotation by rename: the rest of the old file, then the new one.
    with log.open("a") as handle:
        handle.write("four\n")
    log.rename(tmp_path / "app.log.1")
    log.write_text("five\n")
    assert json.loads(edgesim(gateway, *tail).stdout)["shipped"] == 2
    assert [d for _, d in _all_data(kinesis, name)] == [
        b"one\n",
        b"two\n",
        b"partial line\n",
        b"three\n",
        b"four\n",
        b"five\n",
    ]
    # Copy-truncate rotation: the file shrinks, shipping starts over at its top.
    log.write_text("six\n")
    fixed = [*tail[:-4], "--partition-key", "fixed:device-7", *tail[-2:]]
    assert json.loads(edgesim(gateway, *fixed).stdout)["shipped"] == 1
    assert _all_data(kinesis, name)[-1] == ("device-7", b"six\n")
