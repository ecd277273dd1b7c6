"""Event source mappings: a Kinesis stream and an SQS queue polled into a local function."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from conftest import GatewayProcess
from test_api_iot import client
from test_lambda import create, wait_for

RECORDER = (
    "import json, os\n"
    "def handler(event, context):\n"
    "    with open(os.environ['OUT_FILE'], 'a') as f:\n"
    "        for record in event['Records']:\n"
    "            f.write(json.dumps(record) + '\\n')\n"
    "    return {'batch': len(event['Records'])}\n"
)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_kinesis_stream_into_a_function(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    lam, kinesis = client(gateway, "lambda"), client(gateway, "kinesis")
    out = tmp_path / "kinesis.jsonl"
    create(lam, f"k-{unique}", RECORDER, Environment={"Variables": {"OUT_FILE": str(out)}})
    kinesis.create_stream(StreamName=f"esm-{unique}", ShardCount=2)
    for i in range(25):
        kinesis.put_record(StreamName=f"esm-{unique}", Data=f"r{i}".encode(), PartitionKey=f"p{i}")
    arn = kinesis.describe_stream_summary(StreamName=f"esm-{unique}")["StreamDescriptionSummary"]["StreamARN"]
    mapping = lam.create_event_source_mapping(
        FunctionName=f"k-{unique}", EventSourceArn=arn, StartingPosition="TRIM_HORIZON", BatchSize=10
    )
    wait_for(lambda: len(lines(out)) >= 25)
    records = lines(out)
    assert sorted(base64.b64decode(r["kinesis"]["data"]).decode() for r in records) == sorted(
        f"r{i}" for i in range(25)
    )
    assert {r["eventSource"] for r in records} == {"aws:kinesis"}
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled"
    listed = lam.list_event_source_mappings(FunctionName=f"k-{unique}")["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [mapping["UUID"]]
    # Checkpointed: new records only, no replays.
    kinesis.put_record(StreamName=f"esm-{unique}", Data=b"late", PartitionKey="p0")
    wait_for(lambda: len(lines(out)) >= 26)
    assert len(lines(out)) == 26
    lam.delete_event_source_mapping(UUID=mapping["UUID"])


def test_sqs_queue_into_a_function_deletes_on_success(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    lam, sqs = client(gateway, "lambda"), client(gateway, "sqs")
    out = tmp_path / "sqs.jsonl"
    create(lam, f"q-{unique}", RECORDER, Environment={"Variables": {"OUT_FILE": str(out)}})
    url = sqs.create_queue(QueueName=f"esm-{unique}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"i": i}))
    lam.create_event_source_mapping(FunctionName=f"q-{unique}", EventSourceArn=arn, BatchSize=5)
    wait_for(lambda: len(lines(out)) >= 12)
    assert sorted(json.loads(r["body"])["i"] for r in lines(out)) == list(range(12))

    def drained() -> bool:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

    wait_for(drained)
