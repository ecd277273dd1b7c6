"""Firehose (S3 destination) through boto3 `firehose`, the firehose and s3 rule actions, and `edgesim s3`."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess
from test_api_iot import client
from test_cli import run
from test_rules import device, rule

ROLE = "arn:aws:iam::123456789012:role/firehose"


def key_layout(prefix: str, stream: str, ext: str = "") -> str:
    """§10: `<prefix>YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>`, date parts agreeing."""
    date = r"(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
    return re.escape(prefix) + date + re.escape(stream) + r"-1-\1-\2-\3-\4-\d{2}-\d{2}-[0-9a-f-]{36}" + re.escape(ext)


def bucket_dir(gw: GatewayProcess, bucket: str) -> Path:
    return gw.data_dir / "s3" / bucket


def objects(gw: GatewayProcess, bucket: str) -> dict[str, bytes]:
    base = bucket_dir(gw, bucket)
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def wait_objects(gw: GatewayProcess, bucket: str, count: int = 1, timeout: float = 5.0) -> dict[str, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        found = objects(gw, bucket)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def create(fh: Any, name: str, bucket: str, *, interval: int = 0, extended: bool = True, **extra: Any) -> None:
    cfg = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "Prefix": "raw/",
        "ErrorOutputPrefix": "errors/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": interval},
        **extra,
    }
    key = "ExtendedS3DestinationConfiguration" if extended else "S3DestinationConfiguration"
    fh.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut", **{key: cfg})


def test_delivery_stream_lifecycle_and_put(gateway: GatewayProcess, unique: str) -> None:
    fh = client(gateway, "firehose")
    name, bucket = f"ds-{unique}", f"b-{unique}"
    create(fh, name, bucket)
    with pytest.raises(fh.exceptions.ResourceInUseException):
        create(fh, name, bucket)
    described = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert (described["DeliveryStreamStatus"], described["VersionId"]) == ("ACTIVE", "1")
    dest = described["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert dest["BucketARN"] == f"arn:aws:s3:::{bucket}"
    assert dest["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 0}
    assert (dest["Prefix"], dest["ErrorOutputPrefix"], dest["CompressionFormat"]) == ("raw/", "errors/", "UNCOMPRESSED")
    assert name in fh.list_delivery_streams(Limit=10000)["DeliveryStreamNames"]

    out = fh.put_record(DeliveryStreamName=name, Record={"Data": b'{"a":1}'})
    assert out["RecordId"] and out["Encrypted"] is False
    found = wait_objects(gateway, bucket)
    assert len(found) == 1
    key, body = next(iter(found.items()))
    assert re.fullmatch(key_layout("raw/", name), key), key
    assert body == b'{"a":1}'

    batch = fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": f"r{i};".encode()} for i in range(20)])
    assert batch["FailedPutCount"] == 0
    assert len(batch["RequestResponses"]) == 20 and all("RecordId" in r for r in batch["RequestResponses"])
    found = wait_objects(gateway, bucket, 2)
    # No delimiter is added between records; a batch lands in one object.
    assert sorted(found.values()) == sorted([b'{"a":1}', b"".join(f"r{i};".encode() for i in range(20))])

    fh.delete_delivery_stream(DeliveryStreamName=name)
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.describe_delivery_stream(DeliveryStreamName=name)


def test_interval_buffering_and_gzip(gateway: GatewayProcess, unique: str) -> None:
    fh = client(gateway, "firehose")
    name, bucket = f"gz-{unique}", f"gz-{unique}"
    create(fh, name, bucket, interval=1, extended=False, CompressionFormat="GZIP")
    for i in range(3):
        fh.put_record(DeliveryStreamName=name, Record={"Data": f"line {i}\n".encode()})
    assert objects(gateway, bucket) == {}, "a 1 s buffer holds the records for a moment"
    found = wait_objects(gateway, bucket, timeout=5)
    assert len(found) == 1
    key, body = next(iter(found.items()))
    assert re.fullmatch(key_layout("raw/", name, ".gz"), key), key
    assert gzip.decompress(body) == b"line 0\nline 1\nline 2\n"


def test_errors(gateway: GatewayProcess, unique: str) -> None:
    fh = client(gateway, "firehose")
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.put_record(DeliveryStreamName=f"missing-{unique}", Record={"Data": b"x"})
    name = f"err-{unique}"
    create(fh, name, f"err-{unique}")
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"x" * (1000 * 1024 + 1)})
    with pytest.raises(fh.exceptions.InvalidArgumentException, match="not supported yet"):
        create(
            fh,
            f"lambda-{unique}",
            f"err-{unique}",
            ProcessingConfiguration={
                "Enabled": True,
                "Processors": [
                    {
                        "Type": "Lambda",
                        "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:x"}],
                    },
                    {"Type": "AppendDelimiterToRecord", "Parameters": []},
                ],
            },
        )
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        create(fh, f"badhints-{unique}", f"err-{unique}", BufferingHints={"SizeInMBs": 200, "IntervalInSeconds": 0})
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.create_delivery_stream(
            DeliveryStreamName=f"badarn-{unique}",
            S3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::../etc"},
        )


def test_rule_to_firehose_with_separator(gateway: GatewayProcess, unique: str) -> None:
    fh = client(gateway, "firehose")
    name, bucket = f"rule-{unique}", f"rule-{unique}"
    create(fh, name, bucket, interval=1)
    client(gateway, "iot").create_topic_rule(
        ruleName=f"tofh_{unique}",
        topicRulePayload=rule(
            f"SELECT v FROM 'fh/{unique}'",
            {"firehose": {"roleArn": ROLE, "deliveryStreamName": name, "separator": "\n"}},
        ),
    )
    pub = device(gateway, f"pub-{unique}")
    for i in range(3):
        assert pub.publish(f"fh/{unique}", json.dumps({"v": i, "skip": True}))
    pub.close()
    deadline = time.monotonic() + 6
    while b"".join(objects(gateway, bucket).values()).count(b"\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = b"".join(objects(gateway, bucket).values()).splitlines()
    assert sorted(lines) == [b'{"v":0}', b'{"v":1}', b'{"v":2}']


def test_rule_to_s3_and_cli(gateway: GatewayProcess, unique: str, tmp_path: Path) -> None:
    bucket = f"s3-{unique}"
    client(gateway, "iot").create_topic_rule(
        ruleName=f"tos3_{unique}",
        topicRulePayload=rule(
            f"SELECT * FROM 'some/{unique}'",
            {
                "s3": {
                    "roleArn": ROLE,
                    "bucketName": bucket,
                    "key": "${topic()}/${timestamp()}",
                    "cannedAcl": "private",
                }
            },
        ),
    )
    pub = device(gateway, f"pub-{unique}")
    assert pub.publish(f"some/{unique}", b'{"t":21}')
    pub.close()
    found = wait_objects(gateway, bucket)
    assert len(found) == 1
    key, body = next(iter(found.items()))
    assert re.fullmatch(rf"some/{unique}/\d{{13}}", key), key
    assert body == b'{"t":21}'

    data_dir = str(gateway.data_dir)
    listed = json.loads(run(tmp_path, "s3", "ls", f"{bucket}/some/", "--json", "--data-dir", data_dir).stdout)
    assert [(o["Key"], o["Size"]) for o in listed] == [(key, len(body))]
    assert bucket in json.loads(run(tmp_path, "s3", "ls", "--json", "--data-dir", data_dir).stdout)
    assert run(tmp_path, "s3", "cat", f"{bucket}/{key}", "--data-dir", data_dir).stdout == '{"t":21}'
    missing = run(tmp_path, "s3", "cat", f"{bucket}/nope", "--data-dir", data_dir, check=False)
    assert missing.returncode == 1 and "NoSuchKey" in missing.stderr
    escape = run(tmp_path, "s3", "cat", f"{bucket}/../../edgesim.db", "--data-dir", data_dir, check=False)
    assert escape.returncode == 1


def test_buffered_records_survive_a_crash(tmp_path: Path, unique: str) -> None:
    import signal

    gw = GatewayProcess(tmp_path / "gw")
    gw.home.mkdir()
    gw.start()
    try:
        fh = client(gw, "firehose")
        name, bucket = f"crash-{unique}", f"crash-{unique}"
        create(fh, name, bucket, interval=900)
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"a"}, {"Data": b"b"}])
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"c"})
        assert objects(gw, bucket) == {}
        gw.stop(signal.SIGKILL)  # acknowledged records were committed before the 200
        assert objects(gw, bucket) == {}
        gw.start()
        found = wait_objects(gw, bucket)
        assert list(found.values()) == [b"abc"]
        fh = client(gw, "firehose")
        assert name in fh.list_delivery_streams()["DeliveryStreamNames"]
    finally:
        gw.stop()


def test_object_store_keys_stay_inside_their_bucket(tmp_path: Path) -> None:
    from gateway.errors import AwsError
    from gateway.sinks.s3 import ObjectStore

    store = ObjectStore(tmp_path / "s3")
    store.put("bucket-a", "x/y.json", b"1")
    store.put("bucket-a", "x/y.json", b"2")  # a constant key overwrites
    assert store.get("bucket-a", "x/y.json") == b"2"
    assert [o.key for o in store.list("bucket-a")] == ["x/y.json"]
    for bad in ("../escape", "/abs", "a/../../b", "a//b", "a/", ".", "a/./b"):
        with pytest.raises(AwsError):
            store.put("bucket-a", bad, b"no")
    with pytest.raises(AwsError):
        store.put("../x", "k", b"no")
    assert not (tmp_path / "escape").exists()
    assert store.buckets() == ["bucket-a"]


def test_rule_to_firehose_batch_mode(gateway: GatewayProcess, unique: str) -> None:
    fh = client(gateway, "firehose")
    name, bucket = f"batch-{unique}", f"batch-{unique}"
    create(fh, name, bucket, interval=0)
    client(gateway, "iot").create_topic_rule(
        ruleName=f"batch_{unique}",
        topicRulePayload=rule(
            f"SELECT VALUE items FROM 'bm/{unique}'",
            {"firehose": {"roleArn": ROLE, "deliveryStreamName": name, "separator": ",", "batchMode": True}},
        ),
    )
    pub = device(gateway, f"pub-{unique}")
    assert pub.publish(f"bm/{unique}", json.dumps({"items": [{"n": 1}, {"n": 2}, 3]}))
    pub.close()
    found = wait_objects(gateway, bucket)
    # One PutRecordBatch: its records land together in one object, each followed by the separator.
    assert list(found.values()) == [b'{"n":1},{"n":2},3,']


TRANSFORM = (
    "import base64, json\n"
    "def handler(event, context):\n"
    "    out = []\n"
    "    for r in event['records']:\n"
    "        doc = json.loads(base64.b64decode(r['data']))\n"
    "        if doc.get('drop'):\n"
    "            out.append({'recordId': r['recordId'], 'result': 'Dropped', 'data': r['data']})\n"
    "        elif doc.get('bad'):\n"
    "            out.append({'recordId': r['recordId'], 'result': 'ProcessingFailed', 'data': r['data']})\n"
    "        else:\n"
    "            doc['seen'] = True\n"
    "            data = base64.b64encode((json.dumps(doc) + '\\n').encode()).decode()\n"
    "            out.append({'recordId': r['recordId'], 'result': 'Ok', 'data': data})\n"
    "    return {'records': out}\n"
)


def test_transformation_lambda_ok_dropped_and_failed(gateway: GatewayProcess, unique: str) -> None:
    from test_lambda import create as create_function

    lam = client(gateway, "lambda")
    arn = create_function(lam, f"tx-{unique}", TRANSFORM)["FunctionArn"]
    fh = client(gateway, "firehose")
    name = f"tx-{unique}"
    create(
        fh,
        name,
        f"tx-{unique}",
        ProcessingConfiguration={
            "Enabled": True,
            "Processors": [{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": arn}]}],
        },
    )
    fh.put_record_batch(
        DeliveryStreamName=name,
        Records=[
            {"Data": json.dumps(doc).encode()} for doc in ({"n": 1}, {"n": 2, "drop": True}, {"n": 3, "bad": True})
        ],
    )
    found = wait_objects(gateway, f"tx-{unique}", count=2, timeout=15)
    delivered = [v for k, v in found.items() if k.startswith("raw/")]
    failed = [v for k, v in found.items() if k.startswith("errors/processing-failed/")]
    assert delivered == [json.dumps({"n": 1, "seen": True}).encode() + b"\n"]
    (error_lines,) = failed
    entry = json.loads(error_lines.decode().splitlines()[0])
    assert entry["errorCode"] == "Lambda.ProcessingFailed" and entry["lambdaArn"] == arn
    assert json.loads(base64.b64decode(entry["rawData"])) == {"n": 3, "bad": True}
