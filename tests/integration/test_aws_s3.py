"""S3 on the one endpoint: boto3 `s3` path-style and virtual-hosted, `aws s3` commands, and the objects the Firehose
and s3 rule actions write (`<data>/s3/<bucket>/<key>`) readable through it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_cli import aws
from botocore.config import Config as BotoConfig
from conftest import GatewayProcess

from gateway.sinks.s3 import ObjectStore


def s3_client(gw: GatewayProcess, addressing: str = "path", host: str = "127.0.0.1") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{gw.ports['api']}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 1}, s3={"addressing_style": addressing}),
    )


@pytest.fixture(scope="module")
def s3(gateway: GatewayProcess) -> Any:
    return s3_client(gateway)


def test_objects_round_trip_with_ranges_and_metadata(s3: Any, unique: str) -> None:
    bucket = f"data-{unique}"
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    put = s3.put_object(
        Bucket=bucket, Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain", Metadata={"owner": "me"}
    )
    assert put["ETag"] == f'"{hashlib.md5(b"hello world").hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert head["ContentLength"] == 11 and head["ContentType"] == "text/plain" and head["Metadata"] == {"owner": "me"}
    assert head["ETag"] == put["ETag"]
    whole = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert whole["Body"].read() == b"hello world" and whole["ResponseMetadata"]["HTTPStatusCode"] == 200
    for wanted, body, content_range in [
        ("bytes=0-4", b"hello", "bytes 0-4/11"),
        ("bytes=6-", b"world", "bytes 6-10/11"),
        ("bytes=-3", b"rld", "bytes 8-10/11"),
        ("bytes=6-100", b"world", "bytes 6-10/11"),
    ]:
        part = s3.get_object(Bucket=bucket, Key="dir/hello.txt", Range=wanted)
        assert part["Body"].read() == body and part["ContentRange"] == content_range
        assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(s3.exceptions.ClientError) as beyond:
        s3.get_object(Bucket=bucket, Key="dir/hello.txt", Range="bytes=20-30")
    assert beyond.value.response["Error"]["Code"] == "InvalidRange"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="dir/missing.txt")
    with pytest.raises(s3.exceptions.ClientError) as missing_head:
        s3.head_object(Bucket=bucket, Key="dir/missing.txt")
    assert missing_head.value.response["Error"]["Code"] == "404"
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.list_objects_v2(Bucket=f"nope-{unique}")
    with pytest.raises(s3.exceptions.ClientError) as not_empty:
        s3.delete_bucket(Bucket=bucket)
    assert not_empty.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket=bucket, Key="dir/hello.txt")
    s3.delete_object(Bucket=bucket, Key="dir/hello.txt")  # absent: still 204, as S3
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_list_objects_v2_prefix_delimiter_and_continuation(s3: Any, unique: str) -> None:
    bucket = f"list-{unique}"
    s3.create_bucket(Bucket=bucket)
    keys = [f"logs/2026/{d:02d}/part-{i}.json" for d in (1, 2, 3) for i in range(2)] + ["logs/top.json", "other.txt"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    rolled = s3.list_objects_v2(Bucket=bucket, Prefix="logs/2026/", Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["logs/2026/01/", "logs/2026/02/", "logs/2026/03/"]
    assert "Contents" not in rolled and rolled["KeyCount"] == 3
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [c["Key"] for c in top["Contents"]] == ["other.txt"] and top["CommonPrefixes"] == [{"Prefix": "logs/"}]
    # Pages of 3 over everything under logs/, walked by hand and by boto3's paginator.
    seen: list[str] = []
    token: str | None = None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", MaxKeys=3, **kwargs)
        assert page["KeyCount"] <= 3
        seen += [c["Key"] for c in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(k for k in keys if k.startswith("logs/"))
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="logs/2026/", Delimiter="/", PaginationConfig={"PageSize": 2}
    )
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    assert prefixes == ["logs/2026/01/", "logs/2026/02/", "logs/2026/03/"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="logs/2026/03/part-1.json")
    assert [c["Key"] for c in after["Contents"]] == ["logs/top.json", "other.txt"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="logs/2026/01/")
    assert [c["Key"] for c in v1["Contents"]] == ["logs/2026/01/part-0.json", "logs/2026/01/part-1.json"]
    with pytest.raises(s3.exceptions.ClientError) as bad_token:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="garbage!")
    assert bad_token.value.response["Error"]["Code"] == "InvalidArgument"


def test_virtual_hosted_addressing(gateway: GatewayProcess, s3: Any, unique: str) -> None:
    """boto3 names the bucket in the Host (`bucket.localhost:port`); the connection still goes to 127.0.0.1."""
    bucket = f"vhost-{unique}"
    virtual = s3_client(gateway, "virtual", "localhost")
    hosts: list[str] = []

    def to_loopback(request: Any, **_: Any) -> None:
        host = request.url.split("/")[2]
        hosts.append(host)
        request.headers["Host"] = host
        request.url = request.url.replace(f"//{host}", f"//127.0.0.1:{gateway.ports['api']}", 1)

    virtual.meta.events.register_first("before-send.s3", to_loopback)
    virtual.create_bucket(Bucket=bucket)
    virtual.put_object(Bucket=bucket, Key="a/b.txt", Body=b"virtual")
    assert virtual.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"virtual"
    assert [c["Key"] for c in virtual.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/b.txt"]
    assert hosts and all(h == f"{bucket}.localhost:{gateway.ports['api']}" for h in hosts)
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"virtual"  # the same object, path-style


def test_firehose_and_rule_objects_are_readable(gateway: GatewayProcess, s3: Any, unique: str) -> None:
    bucket = f"fh-{unique}"
    # What the Firehose and s3 actions write: files under <data>/s3/<bucket>/<key>, through the same store.
    data = b'{"t":1}\n{"t":2}\n'
    ObjectStore(gateway.data_dir / "s3").put(bucket, "2026/12/06/22/stream-1", data)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="2026/")
    assert [(c["Key"], c["Size"]) for c in listed["Contents"]] == [("2026/12/06/22/stream-1", 16)]
    got = s3.get_object(Bucket=bucket, Key="2026/12/06/22/stream-1")
    assert got["Body"].read() == data and got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_aws_s3_commands(gateway: GatewayProcess, s3: Any, unique: str, tmp_path: Path) -> None:
    bucket = f"cli-{unique}"
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    small = tmp_path / "small.txt"
    small.write_text("small file\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the CLI's 8 MiB threshold: a multipart upload
    aws(gateway, "s3", "cp", str(small), f"s3://{bucket}/docs/small.txt")
    aws(gateway, "s3", "cp", str(big), f"s3://{bucket}/blobs/big.bin")
    assert bucket in aws(gateway, "s3", "ls").stdout
    listing = aws(gateway, "s3", "ls", f"s3://{bucket}/").stdout
    assert "PRE docs/" in listing and "PRE blobs/" in listing
    head = s3.head_object(Bucket=bucket, Key="blobs/big.bin")
    assert head["ContentLength"] == 9 * 1024 * 1024 and head["ETag"].endswith('-2"')
    back = tmp_path / "back.bin"
    aws(gateway, "s3", "cp", f"s3://{bucket}/blobs/big.bin", str(back))
    assert back.read_bytes() == big.read_bytes()
    s3.copy_object(Bucket=bucket, Key="copies/small.txt", CopySource={"Bucket": bucket, "Key": "docs/small.txt"})
    assert s3.get_object(Bucket=bucket, Key="copies/small.txt")["Body"].read() == b"small file\n"
    aws(gateway, "s3", "rm", f"s3://{bucket}/", "--recursive")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    aws(gateway, "s3", "rb", f"s3://{bucket}")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_sigv4_checked_on_s3_requests(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, ["--require-sigv4", "AKIDS3:s3secret"]).start()
    try:
        good = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
            region_name="us-east-1",
            aws_access_key_id="AKIDS3",
            aws_secret_access_key="s3secret",
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        good.create_bucket(Bucket="signed")
        good.put_object(Bucket="signed", Key="odd key/with+plus & more.txt", Body=b"ok")
        listed = good.list_objects_v2(Bucket="signed", Prefix="odd key/")
        assert [c["Key"] for c in listed["Contents"]] == ["odd key/with+plus & more.txt"]
        assert good.get_object(Bucket="signed", Key="odd key/with+plus & more.txt")["Body"].read() == b"ok"
        import urllib.error
        import urllib.request

        v4 = BotoConfig(signature_version="s3v4", retries={"max_attempts": 1})
        for secret, status in (("s3secret", 200), ("wrong", 403)):  # a presigned URL's query-string signature
            signer = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{gw.ports['api']}", region_name="us-east-1",
                                  aws_access_key_id="AKIDS3", aws_secret_access_key=secret, config=v4)  # fmt: skip
            url = signer.generate_presigned_url(
                "get_object", Params={"Bucket": "signed", "Key": "odd key/with+plus & more.txt"}, ExpiresIn=60
            )
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert (response.status, response.read()) == (status, b"ok")
            except urllib.error.HTTPError as error:
                error.close()  # it holds the response's socket
                assert error.code == status
        bad = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{gw.ports['api']}",
            region_name="us-east-1",
            aws_access_key_id="AKIDS3",
            aws_secret_access_key="wrong",
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        with pytest.raises(bad.exceptions.ClientError) as refused:
            bad.list_objects_v2(Bucket="signed")
        assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        gw.stop()


def test_presigned_urls(s3: Any, unique: str) -> None:
    import urllib.request

    bucket = f"presign-{unique}"
    s3.create_bucket(Bucket=bucket)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60)
    request = urllib.request.Request(put_url, data=b"uploaded", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(get_url, timeout=10) as response:
        assert response.read() == b"uploaded"
    v4 = boto3.client(
        "s3",
        endpoint_url=s3.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(signature_version="s3v4"),
    )
    v4_url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60)
    assert "X-Amz-Credential" in v4_url
    with urllib.request.urlopen(v4_url, timeout=10) as response:
        assert response.read() == b"uploaded"
