"""SQS as AWS words it (batch errors, FIFO delays), DLQ redrive with message move tasks, SQS over the query
protocol (form requests signed by botocore, XML answers), and STS on the same endpoint; boto3 and the AWS CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import botocore.session
import pytest
from aws_cli import aws, aws_json
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session
from botocore.loaders import Loader
from conftest import GatewayProcess
from test_api_iot import client

NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sqs(gateway: GatewayProcess) -> Any:
    return client(gateway, "sqs")


def test_batch_and_fifo_messages_worded_as_aws(sqs: Any, unique: str) -> None:
    url = sqs.create_queue(QueueName=f"words-{unique}")["QueueUrl"]
    with pytest.raises(sqs.exceptions.EmptyBatchRequest) as empty:
        sqs.delete_message_batch(QueueUrl=url, Entries=[])
    assert empty.value.response["Error"]["Message"] == (
        "There should be at least one DeleteMessageBatchRequestEntry in the request."
    )
    with pytest.raises(sqs.exceptions.EmptyBatchRequest) as empty:
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[])
    assert "ChangeMessageVisibilityBatchRequestEntry" in empty.value.response["Error"]["Message"]
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct) as repeated:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}])
    assert repeated.value.response["Error"]["Message"] == "Id a repeated."
    fifo = sqs.create_queue(
        QueueName=f"words-{unique}.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    assert sqs.send_message(QueueUrl=fifo, MessageBody="zero", MessageGroupId="g", DelaySeconds=0)["MessageId"]
    with pytest.raises(sqs.exceptions.ClientError) as delayed:
        sqs.send_message(QueueUrl=fifo, MessageBody="five", MessageGroupId="g", DelaySeconds=5)
    assert delayed.value.response["Error"]["Code"] == "InvalidParameterValue"


def _dead_letter(sqs: Any, unique: str, count: int) -> tuple[str, str, str]:
    """A source queue whose `count` messages have all been moved to its DLQ (maxReceiveCount 1)."""
    dlq = sqs.create_queue(QueueName=f"dlq-{unique}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    src = sqs.create_queue(QueueName=f"src-{unique}", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    for i in range(count):
        sqs.send_message(QueueUrl=src, MessageBody=f"m{i}")
    assert len(sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]) == count
    assert "Messages" not in sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)  # all moved now
    return src, dlq, dlq_arn


def test_message_move_task_redrives_to_the_source(sqs: Any, unique: str) -> None:
    src, dlq, dlq_arn = _dead_letter(sqs, unique, 3)
    src_arn = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(sqs.exceptions.ClientError) as not_dlq:
        sqs.start_message_move_task(SourceArn=src_arn)
    assert not_dlq.value.response["Error"]["Message"] == "Source queue must be configured as a Dead Letter Queue."
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.start_message_move_task(SourceArn=dlq_arn + "-missing")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle

    def finished() -> Any:
        results = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        return results if results[0]["Status"] == "COMPLETED" else None

    done = wait_for(finished)
    assert done, sqs.list_message_move_tasks(SourceArn=dlq_arn)
    assert done[0]["ApproximateNumberOfMessagesMoved"] == 3 and "TaskHandle" not in done[0]
    got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in got) == ["m0", "m1", "m2"]
    assert all("DeadLetterQueueSourceArn" not in m["Attributes"] for m in got)
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    with pytest.raises(sqs.exceptions.ClientError):
        sqs.cancel_message_move_task(TaskHandle=handle)  # only a running task can be cancelled


def test_rate_limited_move_task_to_a_destination_can_be_cancelled(sqs: Any, unique: str) -> None:
    _, _, dlq_arn = _dead_letter(sqs, unique, 4)
    dest = sqs.create_queue(QueueName=f"dest-{unique}")["QueueUrl"]
    dest_arn = sqs.get_queue_attributes(QueueUrl=dest, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=dest_arn, MaxNumberOfMessagesPerSecond=1)[
        "TaskHandle"
    ]
    running = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"][0]
    assert running["Status"] == "RUNNING" and running["TaskHandle"] == handle
    assert running["MaxNumberOfMessagesPerSecond"] == 1 and running["DestinationArn"] == dest_arn
    assert running["ApproximateNumberOfMessagesToMove"] == 4
    with pytest.raises(sqs.exceptions.UnsupportedOperation):
        sqs.start_message_move_task(SourceArn=dlq_arn)  # one active task per source queue
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert moved < 4
    cancelled = wait_for(lambda: sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]["Status"] == "CANCELLED")
    assert cancelled
    in_dest = sqs.get_queue_attributes(QueueUrl=dest, AttributeNames=["ApproximateNumberOfMessages"])
    assert 1 <= int(in_dest["Attributes"]["ApproximateNumberOfMessages"]) < 4
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.cancel_message_move_task(TaskHandle="not-a-task")


def query(gw: GatewayProcess, params: dict[str, str], path: str = "/") -> tuple[int, ElementTree.Element]:
    """A query-protocol SQS request as older botocore and the AWS CLI v1 send it: form body, SigV4 for `sqs`."""
    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:{gw.ports['api']}{path}",
        data=urlencode({**params, "Version": "2012-11-05"}),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials("test", "test"), "sqs", "us-east-1").add_auth(request)
    response = URLLib3Session().send(request.prepare())
    return response.status_code, ElementTree.fromstring(response.content)


def test_query_protocol_round_trip(gateway: GatewayProcess, unique: str) -> None:
    status, created = query(
        gateway,
        {
            "Action": "CreateQueue",
            "QueueName": f"q-{unique}",
            "Attribute.1.Name": "VisibilityTimeout",
            "Attribute.1.Value": "45",
        },
    )
    assert status == 200 and created.tag == f"{NS}CreateQueueResponse"
    url = created.findtext(f"{NS}CreateQueueResult/{NS}QueueUrl")
    assert url and url.endswith(f"/123456789012/q-{unique}")
    assert created.findtext(f"{NS}ResponseMetadata/{NS}RequestId")
    status, sent = query(
        gateway,
        {
            "Action": "SendMessage",
            "QueueUrl": url,
            "MessageBody": "hello <xml> & friends",
            "MessageAttribute.1.Name": "colour",
            "MessageAttribute.1.Value.DataType": "String",
            "MessageAttribute.1.Value.StringValue": "red",
        },
    )
    assert status == 200
    result = sent.find(f"{NS}SendMessageResult")
    assert result is not None and result.findtext(f"{NS}MD5OfMessageBody") and result.findtext(f"{NS}MessageId")
    assert result.findtext(f"{NS}MD5OfMessageAttributes")
    status, batch = query(
        gateway,
        {
            "Action": "SendMessageBatch",
            "QueueUrl": url,
            "SendMessageBatchRequestEntry.1.Id": "one",
            "SendMessageBatchRequestEntry.1.MessageBody": "b1",
            "SendMessageBatchRequestEntry.2.Id": "two",
            "SendMessageBatchRequestEntry.2.MessageBody": "b2",
        },
    )
    entries = batch.findall(f"{NS}SendMessageBatchResult/{NS}SendMessageBatchResultEntry")
    assert status == 200 and sorted(e.findtext(f"{NS}Id") or "" for e in entries) == ["one", "two"]
    status, received = query(
        gateway,
        {
            "Action": "ReceiveMessage",
            "QueueUrl": url,
            "MaxNumberOfMessages": "10",
            "AttributeName.1": "All",
            "MessageAttributeName.1": "All",
        },
    )
    messages = received.findall(f"{NS}ReceiveMessageResult/{NS}Message")
    assert status == 200 and len(messages) == 3
    first = next(m for m in messages if m.findtext(f"{NS}Body") == "hello <xml> & friends")
    system = {a.findtext(f"{NS}Name"): a.findtext(f"{NS}Value") for a in first.findall(f"{NS}Attribute")}
    assert system["ApproximateReceiveCount"] == "1" and system["SenderId"] == "123456789012"
    user = first.find(f"{NS}MessageAttribute")
    assert user is not None and user.findtext(f"{NS}Name") == "colour"
    assert user.findtext(f"{NS}Value/{NS}StringValue") == "red"
    assert user.findtext(f"{NS}Value/{NS}DataType") == "String"
    # Posting to the queue's own URL without QueueUrl, as older SDKs do.
    path = f"/123456789012/q-{unique}"
    status, attrs = query(gateway, {"Action": "GetQueueAttributes", "AttributeName.1": "VisibilityTimeout"}, path)
    pairs = attrs.findall(f"{NS}GetQueueAttributesResult/{NS}Attribute")
    assert status == 200 and [(p.findtext(f"{NS}Name"), p.findtext(f"{NS}Value")) for p in pairs] == [
        ("VisibilityTimeout", "45")
    ]
    status, listed = query(gateway, {"Action": "ListQueues", "QueueNamePrefix": f"q-{unique}"})
    assert [u.text for u in listed.findall(f"{NS}ListQueuesResult/{NS}QueueUrl")] == [url]
    handles = [m.findtext(f"{NS}ReceiptHandle") or "" for m in messages]
    form = {"Action": "DeleteMessageBatch", "QueueUrl": url}
    for i, receipt in enumerate(handles, 1):
        form |= {
            f"DeleteMessageBatchRequestEntry.{i}.Id": f"d{i}",
            f"DeleteMessageBatchRequestEntry.{i}.ReceiptHandle": receipt,
        }
    status, deleted = query(gateway, form)
    assert status == 200
    assert len(deleted.findall(f"{NS}DeleteMessageBatchResult/{NS}DeleteMessageBatchResultEntry")) == 3


def test_query_protocol_errors(gateway: GatewayProcess, unique: str) -> None:
    status, error = query(gateway, {"Action": "GetQueueUrl", "QueueName": f"missing-{unique}"})
    assert status == 400 and error.tag == f"{NS}ErrorResponse"
    assert error.findtext(f"{NS}Error/{NS}Code") == "AWS.SimpleQueueService.NonExistentQueue"
    assert error.findtext(f"{NS}Error/{NS}Type") == "Sender"
    assert error.findtext(f"{NS}Error/{NS}Message") == "The specified queue does not exist."
    _, created = query(gateway, {"Action": "CreateQueue", "QueueName": f"e-{unique}"})
    url = created.findtext(f"{NS}CreateQueueResult/{NS}QueueUrl") or ""
    status, error = query(gateway, {"Action": "DeleteMessageBatch", "QueueUrl": url})
    assert status == 400 and error.findtext(f"{NS}Error/{NS}Code") == "AWS.SimpleQueueService.EmptyBatchRequest"
    assert error.findtext(f"{NS}Error/{NS}Message") == (
        "There should be at least one DeleteMessageBatchRequestEntry in the request."
    )
    status, error = query(gateway, {"Action": "SendMessage", "QueueUrl": url})
    assert status == 400 and error.findtext(f"{NS}Error/{NS}Code") == "MissingParameter"
    status, error = query(gateway, {"Action": "FlyToTheMoon"})
    assert status == 400 and error.findtext(f"{NS}Error/{NS}Code") == "InvalidAction"
    # Malformed values are the protocol's own errors, never a 500.
    for bad in (
        {"Action": "ReceiveMessage", "QueueUrl": url, "MaxNumberOfMessages": "many"},
        {"Action": "ReceiveMessage", "QueueUrl": url, "VisibilityTimeout": "99999999999"},
        {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "x", "DelaySeconds": "-1"},
        {
            "Action": "SendMessage",
            "QueueUrl": url,
            "MessageBody": "x",
            "MessageAttribute.1.Name": "a",
            "MessageAttribute.1.Value.DataType": "Binary",
            "MessageAttribute.1.Value.BinaryValue": "!!!",
        },
        {"Action": "CreateQueue", "QueueName": "bad name!"},
        {"Action": "SetQueueAttributes", "QueueUrl": url, "Attribute.1.Name": "Nope", "Attribute.1.Value": "1"},
        {"Action": "ChangeMessageVisibility", "QueueUrl": url, "ReceiptHandle": "junk", "VisibilityTimeout": "1"},
        {"Action": "StartMessageMoveTask", "SourceArn": "not-an-arn"},
        {"Action": "ListMessageMoveTasks", "SourceArn": "arn:aws:sqs:us-east-1:123456789012:nope", "MaxResults": "x"},
    ):
        status, error = query(gateway, bad)
        assert 400 <= status < 500, (bad, ElementTree.tostring(error))
        assert error.findtext(f"{NS}Error/{NS}Code"), bad


def test_aws_cli_sqs_and_sts(gateway: GatewayProcess, unique: str) -> None:
    url = aws_json(gateway, "sqs", "create-queue", "--queue-name", f"cli-{unique}")["QueueUrl"]
    aws(gateway, "sqs", "send-message", "--queue-url", url, "--message-body", "from the cli")
    got = aws_json(gateway, "sqs", "receive-message", "--queue-url", url, "--attribute-names", "All")
    assert got["Messages"][0]["Body"] == "from the cli"
    missing = aws(gateway, "sqs", "get-queue-url", "--queue-name", f"nope-{unique}", check=False)
    assert missing.returncode != 0 and "NonExistentQueue" in missing.stderr
    identity = aws_json(gateway, "sts", "get-caller-identity")
    assert identity["Account"] == "123456789012" and identity["Arn"] == "arn:aws:iam::123456789012:root"


def test_sts_identity_and_assume_role(gateway: GatewayProcess) -> None:
    sts = client(gateway, "sts")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    assumed = sts.assume_role(
        RoleArn="arn:aws:iam::123456789012:role/deployer", RoleSessionName="ci-run", DurationSeconds=900
    )
    creds = assumed["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["SessionToken"]
    assert assumed["AssumedRoleUser"]["Arn"] == "arn:aws:sts::123456789012:assumed-role/deployer/ci-run"
    remaining = creds["Expiration"].timestamp() - time.time()
    assert 800 < remaining <= 905
    as_role = client(gateway, "sts", creds["AccessKeyId"], creds["SecretAccessKey"])
    me = as_role.get_caller_identity()
    assert me["Arn"] == "arn:aws:sts::123456789012:assumed-role/deployer/ci-run"
    assert me["UserId"].endswith(":ci-run")
    with pytest.raises(sts.exceptions.ClientError) as bad:
        sts.assume_role(RoleArn="arn:aws:iam::123456789012:user/not-a-role", RoleSessionName="x1")
    assert bad.value.response["Error"]["Code"] == "ValidationError"


def _query_protocol_sqs(gw: GatewayProcess, folder: Path) -> Any:
    """A boto3 SQS client speaking the query protocol, as botocore did before SQS moved to JSON: today's model with
    the query wire names of the 2012-11-05 model put back (written here from that model, not taken from edgesim)."""
    model = Loader().load_service_model("sqs", "service-2")
    meta = model["metadata"]
    meta.update(protocol="query", protocols=["query"], xmlNamespace="http://queue.amazonaws.com/doc/2012-11-05/")
    for key in ("jsonVersion", "targetPrefix", "awsQueryCompatible"):
        meta.pop(key, None)
    shapes = model["shapes"]
    for name, op in model["operations"].items():
        if "output" in op:
            op["output"]["resultWrapper"] = f"{name}Result"
    named = {
        ("CreateQueueRequest", "Attributes"): "Attribute",
        ("GetQueueAttributesResult", "Attributes"): "Attribute",
        ("SendMessageRequest", "MessageAttributes"): "MessageAttribute",
        ("ReceiveMessageResult", "Messages"): "Message",
        ("Message", "Attributes"): "Attribute",
        ("Message", "MessageAttributes"): "MessageAttribute",
        ("SendMessageBatchRequest", "Entries"): "SendMessageBatchRequestEntry",
        ("SendMessageBatchResult", "Successful"): "SendMessageBatchResultEntry",
        ("SendMessageBatchResult", "Failed"): "BatchResultErrorEntry",
        ("ListQueuesResult", "QueueUrls"): "QueueUrl",
    }
    for (shape, member), wire in named.items():
        shapes[shape]["members"][member]["locationName"] = wire
    for list_shape, wire in {
        "AttributeNameList": "AttributeName",
        "MessageAttributeNameList": "MessageAttributeName",
    }.items():
        shapes[list_shape]["member"]["locationName"] = wire
    for map_shape in ("QueueAttributeMap", "MessageSystemAttributeMap", "MessageBodyAttributeMap"):
        shapes[map_shape]["key"]["locationName"] = "Name"
        shapes[map_shape]["value"]["locationName"] = "Value"
    target = folder / "sqs" / "2012-11-05"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(folder))
    return session.create_client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_botocore_query_protocol_client(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    sqs = _query_protocol_sqs(gateway, tmp_path)
    sent_bodies: list[str] = []

    def keep(request: Any, **_: Any) -> None:
        body = request.body
        sent_bodies.append(body.decode() if isinstance(body, bytes) else str(body))

    sqs.meta.events.register("before-send.sqs", keep)
    url = sqs.create_queue(QueueName=f"old-{unique}", Attributes={"VisibilityTimeout": "7"})["QueueUrl"]
    assert "Action=CreateQueue" in sent_bodies[-1] and "Attribute.1.Name=VisibilityTimeout" in sent_bodies[-1]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"] == {
        "VisibilityTimeout": "7"
    }
    sqs.send_message(
        QueueUrl=url, MessageBody="old school", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}}
    )
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "two"}])
    assert [e["Id"] for e in batch["Successful"]] == ["x"]
    got = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    first = next(m for m in got if m["Body"] == "old school")
    assert first["MessageAttributes"] == {"k": {"StringValue": "v", "DataType": "String"}}
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert url in sqs.list_queues(QueueNamePrefix=f"old-{unique}")["QueueUrls"]
    with pytest.raises(sqs.exceptions.ClientError) as missing:
        sqs.get_queue_url(QueueName=f"gone-{unique}")
    assert missing.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


def raw_json(gw: GatewayProcess, service: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
    """A JSON-protocol request with members boto3 would refuse to send (wrong types), signed as botocore signs."""
    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:{gw.ports['api']}/",
        data=json.dumps(body),
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target},
    )
    SigV4Auth(Credentials("test", "test"), service, "us-east-1").add_auth(request)
    response = URLLib3Session().send(request.prepare())
    return response.status_code, json.loads(response.content)


def test_wrong_types_on_new_operations_are_client_errors(gateway: GatewayProcess) -> None:
    for target, body in (
        ("AmazonSQS.StartMessageMoveTask", {"SourceArn": 7}),
        ("AmazonSQS.StartMessageMoveTask", {"SourceArn": "arn:x", "MaxNumberOfMessagesPerSecond": "fast"}),
        ("AmazonSQS.ListMessageMoveTasks", {"SourceArn": "arn:x", "MaxResults": [1]}),
        ("AmazonSQS.CancelMessageMoveTask", {}),
    ):
        status, answer = raw_json(gateway, "sqs", target, body)
        # A member of the wrong JSON type fails deserialization first, as on AWS (issue 16); a missing one, validation.
        assert status == 400
        expected = ("SerializationException", "InvalidParameterValue", "MissingParameter")
        assert answer["__type"].split("#")[-1] in expected
    for target, body in (
        ("Kinesis_20131202.AddTagsToStream", {"StreamName": "s", "Tags": ["a"]}),
        ("Kinesis_20131202.ListTagsForStream", {"StreamName": "s", "Limit": "ten"}),
        ("Kinesis_20131202.RegisterStreamConsumer", {"StreamARN": {"a": 1}, "ConsumerName": "c"}),
    ):
        status, answer = raw_json(gateway, "kinesis", target, body)
        assert status == 400 and answer["__type"] in ("SerializationException", "InvalidArgumentException"), answer
