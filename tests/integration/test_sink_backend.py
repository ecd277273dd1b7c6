"""--sink-backend aws: rule actions forwarded through boto3 to an AWS-compatible endpoint (here, a second edgesim)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client
from test_kinesis import read_all


def test_rule_actions_forward_to_another_endpoint(tmp_path: Path, unique: str) -> None:
    cloud = GatewayProcess(tmp_path / "cloud")
    cloud.home.mkdir()
    cloud.start()
    edge = None
    try:
        client(cloud, "kinesis").create_stream(StreamName="upstream", ShardCount=1)
        queue_url = client(cloud, "sqs").create_queue(QueueName="upstream-q")["QueueUrl"]
        edge = GatewayProcess(
            tmp_path / "edge",
            extra_args=["--sink-backend", "aws", "--sink-endpoint-url", f"http://127.0.0.1:{cloud.ports['api']}"],
        )
        edge.home.mkdir()
        edge.start()
        client(edge, "iot").create_topic_rule(
            ruleName=f"fwd_{unique}",
            topicRulePayload={
                "sql": "SELECT * FROM 'fwd/#'",
                "awsIotSqlVersion": "2016-03-23",
                "actions": [
                    {
                        "kinesis": {
                            "roleArn": "arn:aws:iam::123456789012:role/r",
                            "streamName": "upstream",
                            "partitionKey": "${topic()}",
                        }
                    },
                    {"sqs": {"roleArn": "arn:aws:iam::123456789012:role/r", "queueUrl": queue_url}},
                ],
            },
        )
        creds = edge.provision(f"dev-{unique}", allow_all_policy())
        dev = Device(edge.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca).connect()
        assert dev.publish("fwd/a", json.dumps({"v": 1}))
        dev.close()
        kinesis = client(cloud, "kinesis")
        deadline = time.monotonic() + 10
        while not read_all(kinesis, "upstream") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [json.loads(r["Data"]) for r in read_all(kinesis, "upstream")] == [{"v": 1}]
        messages = client(cloud, "sqs").receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
        assert json.loads(messages[0]["Body"]) == {"v": 1}
        # Nothing landed in the edge's own sinks.
        assert client(edge, "kinesis").list_streams()["StreamNames"] == []
    finally:
        if edge is not None:
            edge.stop()
        cloud.stop()
