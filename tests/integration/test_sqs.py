"""SQS through boto3 `sqs` (JSON 1.0, query-compatible errors), and the sqs rule action end to end."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client

from gateway.sinks.sqs import MessageAttribute, md5_of_attributes


def make_queue(sqs: Any, name: str, **attributes: str) -> str:
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def test_queue_lifecycle_and_missing_queue_error(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"life-{unique}", VisibilityTimeout="40")
    assert url == f"http://127.0.0.1:{gateway.ports['api']}/123456789012/life-{unique}"
    # Same name and attributes: idempotent; a different value: QueueNameExists.
    assert make_queue(sqs, f"life-{unique}", VisibilityTimeout="40") == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        make_queue(sqs, f"life-{unique}", VisibilityTimeout="41")
    assert sqs.get_queue_url(QueueName=f"life-{unique}")["QueueUrl"] == url
    for i in range(3):
        make_queue(sqs, f"page-{unique}-{i}")
    first = sqs.list_queues(QueueNamePrefix=f"page-{unique}", MaxResults=2)
    second = sqs.list_queues(QueueNamePrefix=f"page-{unique}", MaxResults=2, NextToken=first["NextToken"])
    assert [u.rsplit("/", 1)[1] for u in first["QueueUrls"] + second["QueueUrls"]] == [
        f"page-{unique}-{i}" for i in range(3)
    ]
    assert "NextToken" not in second
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "40" and attrs["QueueArn"].endswith(f":123456789012:life-{unique}")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "5"})
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"] == {
        "DelaySeconds": "5"
    }
    sqs.delete_queue(QueueUrl=url)
    # Reference vector W3: the modeled class is raised, Error.Code is the legacy query code.
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as info:
        sqs.get_queue_url(QueueName=f"life-{unique}")
    assert info.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    headers = info.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_send_receive_delete_with_checksums_and_attributes(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"msg-{unique}")
    attributes = {
        "City": {"DataType": "String", "StringValue": "Any City"},
        "Population": {"DataType": "Number", "StringValue": "1250800"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"temp":21}', MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == "542d413d017399b802ed388899c133fb"  # vector M1
    expected_attrs_md5 = md5_of_attributes(
        {
            "City": MessageAttribute("String", string_value="Any City"),
            "Population": MessageAttribute("Number", string_value="1250800"),
            "blob": MessageAttribute("Binary", binary_value=b"\x00\x01\x02"),
        }
    )
    assert sent["MD5OfMessageAttributes"] == expected_attrs_md5
    only_city = sqs.send_message(QueueUrl=url, MessageBody="second", MessageAttributes={"City": attributes["City"]})
    assert only_city["MD5OfMessageAttributes"] == "0c32cb5c844c01fbd5b6b434b52cf670"  # vector M2
    got = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
    )["Messages"]
    assert [m["Body"] for m in got] == ['{"temp":21}', "second"]
    first = got[0]
    assert first["MessageId"] == sent["MessageId"]
    assert first["MD5OfBody"] == hashlib.md5(first["Body"].encode()).hexdigest()
    assert first["MessageAttributes"]["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"}
    assert first["MD5OfMessageAttributes"] == expected_attrs_md5
    assert first["Attributes"]["ApproximateReceiveCount"] == "1" and "SentTimestamp" in first["Attributes"]
    blob_only = sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes={"blob": attributes["blob"]})
    assert blob_only["MD5OfMessageAttributes"] == "a44784199c97ff8c40423784a25b2410"  # vector M4
    for message in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    counts = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "1", "ApproximateNumberOfMessagesNotVisible": "0"}
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="bogus")


def test_visibility_timeout_and_change_visibility(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"vis-{unique}")
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    time.sleep(1.2)
    second = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]
    assert second["MessageId"] == first["MessageId"] and second["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert third["Attributes"]["ApproximateReceiveCount"] == "3"


def test_long_poll_returns_when_a_message_arrives(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"poll-{unique}")
    sender = client(gateway, "sqs")
    timer = threading.Timer(0.5, lambda: sender.send_message(QueueUrl=url, MessageBody="wake"))
    started = time.monotonic()
    timer.start()
    try:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert [m["Body"] for m in got["Messages"]] == ["wake"]
    assert 0.4 <= elapsed < 3
    # A long poll on an empty queue waits the full time, then returns no messages.
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - started >= 0.9


def test_batches_report_per_entry_failures(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"batch-{unique}")
    result = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "one"},
            {"Id": "bad", "MessageBody": "bell \x07 is not allowed"},
            {"Id": "c", "MessageBody": "three", "DelaySeconds": 0},
        ],
    )
    assert sorted(e["Id"] for e in result["Successful"]) == ["a", "c"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in result["Failed"]] == [
        ("bad", "InvalidMessageContents", True)
    ]
    assert {e["MD5OfMessageBody"] for e in result["Successful"]} == {
        hashlib.md5(b"one").hexdigest(),
        hashlib.md5(b"three").hexdigest(),
    }
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}])
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"i{i}", "MessageBody": "m"} for i in range(11)])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "three"]
    changed = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "v0", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 60},
            {"Id": "v1", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 60},
        ],
    )
    assert [e["Id"] for e in changed["Successful"]] == ["v0"]
    assert [(f["Id"], f["Code"]) for f in changed["Failed"]] == [("v1", "ReceiptHandleIsInvalid")]
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "d0", "ReceiptHandle": got[0]["ReceiptHandle"]},
            {"Id": "d1", "ReceiptHandle": got[1]["ReceiptHandle"]},
            {"Id": "d2", "ReceiptHandle": "not-a-handle"},
        ],
    )
    assert sorted(e["Id"] for e in deleted["Successful"]) == ["d0", "d1"]
    assert [(f["Id"], f["Code"]) for f in deleted["Failed"]] == [("d2", "ReceiptHandleIsInvalid")]
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessagesNotVisible"
        ]
        == "0"
    )


def test_fifo_order_and_deduplication(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"order-{unique}.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    sequence = []
    for i in range(5):
        sent = sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g1")
        sequence.append(int(sent["SequenceNumber"]))
    assert sequence == sorted(sequence)
    duplicate = sqs.send_message(QueueUrl=url, MessageBody="m0", MessageGroupId="g1")
    explicit = sqs.send_message(QueueUrl=url, MessageBody="m0", MessageGroupId="g1", MessageDeduplicationId="other")
    assert duplicate["MessageId"] != explicit["MessageId"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["m0", "m1", "m2", "m3", "m4", "m0"]
    assert got[0]["Attributes"]["MessageGroupId"] == "g1"
    # The group is locked while its messages are in flight.
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    with pytest.raises(sqs.exceptions.ClientError) as info:
        sqs.send_message(QueueUrl=url, MessageBody="no group")
    assert info.value.response["Error"]["Code"] == "MissingParameter"


def test_dead_letter_redrive_after_max_receive_count(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    dlq_url = make_queue(sqs, f"dlq-{unique}")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url = make_queue(sqs, f"src-{unique}", RedrivePolicy=policy)
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq_url)["queueUrls"] == [url]
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    # The third receive attempt moves it instead of returning it.
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    moved = sqs.receive_message(QueueUrl=dlq_url, AttributeNames=["All"])["Messages"]
    assert [m["MessageId"] for m in moved] == [sent["MessageId"]]
    assert moved[0]["Attributes"]["DeadLetterQueueSourceArn"].endswith(f":src-{unique}")
    with pytest.raises(sqs.exceptions.ClientError) as info:
        make_queue(sqs, f"src2-{unique}", RedrivePolicy=json.dumps({**json.loads(policy), "maxReceiveCount": 0}))
    assert info.value.response["Error"]["Code"] == "InvalidAttributeValue"


def test_purge(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = make_queue(sqs, f"purge-{unique}")
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"{i}"} for i in range(5)])
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


def test_rule_delivers_telemetry_into_a_queue(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    iot = client(gateway, "iot")
    url = make_queue(sqs, f"tele-{unique}")
    b64_url = make_queue(sqs, f"tele64-{unique}")
    fifo_url = make_queue(sqs, f"telefifo-{unique}.fifo", FifoQueue="true")
    role = "arn:aws:iam::123456789012:role/r"
    iot.create_topic_rule(
        ruleName=f"toq_{unique}",
        topicRulePayload={
            "sql": f"SELECT temp, topic(2) AS device FROM 'q/+/{unique}'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [
                {"sqs": {"roleArn": role, "queueUrl": url}},
                {"sqs": {"roleArn": role, "queueUrl": b64_url, "useBase64": True}},
            ],
        },
    )
    iot.create_topic_rule(
        ruleName=f"tofifo_{unique}",
        topicRulePayload={
            "sql": f"SELECT * FROM 'qf/{unique}'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"sqs": {"roleArn": role, "queueUrl": fifo_url}}],
            "errorAction": {"republish": {"roleArn": role, "topic": f"qerr/{unique}", "qos": 1}},
        },
    )
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    dev = Device(gateway.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca).connect()
    try:
        dev.subscribe(f"qerr/{unique}", 1)
        for i in range(5):
            assert dev.publish(f"q/d{i}/{unique}", json.dumps({"temp": i, "noise": True}))
        bodies: list[str] = []
        deadline = time.monotonic() + 5
        while len(bodies) < 5 and time.monotonic() < deadline:
            page = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            bodies += [m["Body"] for m in page.get("Messages", [])]
        assert sorted((json.loads(b)["temp"], json.loads(b)["device"]) for b in bodies) == [
            (i, f"d{i}") for i in range(5)
        ]
        encoded = sqs.receive_message(QueueUrl=b64_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
        assert json.loads(base64.b64decode(encoded[0]["Body"]))["device"].startswith("d")
        # AWS's sqs action does not support FIFO queues: the run fails into the errorAction.
        dev.publish(f"qf/{unique}", b'{"x":1}')
        failure = json.loads(dev.expect().payload)["failures"][0]
        assert failure["failedAction"] == "SqsAction" and "FIFO" in failure["errorMessage"]
        assert "Messages" not in sqs.receive_message(QueueUrl=fifo_url)
    finally:
        dev.close()


def test_messages_survive_restart(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        sqs = client(gw, "sqs")
        url = make_queue(sqs, "keep")
        fifo = make_queue(sqs, "keep.fifo", FifoQueue="true")
        for i in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
            sqs.send_message(QueueUrl=fifo, MessageBody=f"f{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}")
        in_flight = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
        gw.stop()
        gw.start()
        sqs = client(gw, "sqs")
        url = sqs.get_queue_url(QueueName="keep")["QueueUrl"]
        assert url.startswith(f"http://127.0.0.1:{gw.ports['api']}/")
        time.sleep(1.0)  # the in-flight message's visibility timeout runs out
        bodies: list[str] = []
        for _ in range(3):
            bodies += [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
        assert sorted(bodies) == [f"m{i}" for i in range(5)]
        assert in_flight["Body"] in bodies
        fifo = sqs.get_queue_url(QueueName="keep.fifo")["QueueUrl"]
        # Deduplication history survives too.
        sqs.send_message(QueueUrl=fifo, MessageBody="dup", MessageGroupId="g", MessageDeduplicationId="d0")
        got = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in got] == [f"f{i}" for i in range(5)]
    finally:
        gw.stop()
