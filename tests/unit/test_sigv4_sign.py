"""The one SigV4 derivation (gateway/identity/sigv4_sign.py) against botocore's signer and AWS's worked example."""

from __future__ import annotations

import hashlib

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.identity.sigv4_sign import canonical_headers, signature

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_aws_worked_example_signature() -> None:
    # The IAM ListUsers request of AWS's "Signature Version 4 signing process" example.
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": "iam.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
    }
    signed = ["content-type", "host", "x-amz-date"]
    got = signature(
        SECRET,
        ["20150830", "us-east-1", "iam", "aws4_request"],
        "20150830T123600Z",
        method="GET",
        path="/",
        query="Action=ListUsers&Version=2010-05-08",
        headers=canonical_headers(headers.get, signed),
        signed=signed,
        payload_hash=hashlib.sha256(b"").hexdigest(),
    )
    assert got == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


def test_same_signature_as_botocore_for_a_json_post() -> None:
    body = b'{"StreamName":"s"}'
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4566/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.DescribeStream"},
    )
    SigV4Auth(Credentials("AKIDEXAMPLE", SECRET), "kinesis", "eu-west-1").add_auth(request)
    header = request.headers["Authorization"]
    fields = dict(p.strip().split("=", 1) for p in header[len("AWS4-HMAC-SHA256 ") :].split(","))
    signed = fields["SignedHeaders"].split(";")
    amz_date = request.headers["X-Amz-Date"]
    lowered = {k.lower(): v for k, v in request.headers.items()} | {
        "host": "127.0.0.1:4566"
    }  # botocore's, from the URL
    got = signature(
        SECRET,
        fields["Credential"].split("/")[1:],
        amz_date,
        method="POST",
        path="/",
        query="",
        headers=canonical_headers(lowered.get, signed),
        signed=signed,
        payload_hash=request.headers.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest(),
    )
    assert got == fields["Signature"]
