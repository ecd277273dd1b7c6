"""Kinesis errors. Kinesis speaks JSON 1.1: every client error, "not found" included, is HTTP 400
(aws-iot-behaviour.md §7.2); the codes Firehose shares live on the root (gateway.errors)."""

from __future__ import annotations

from gateway.errors import AwsError, InvalidArgumentException, JsonResourceNotFoundException, ResourceInUseException

__all__ = [
    "ExpiredIteratorException",
    "InvalidArgumentException",
    "KinesisLimitExceededException",
    "KinesisResourceNotFoundException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
]

KinesisResourceNotFoundException = JsonResourceNotFoundException


class ProvisionedThroughputExceededException(AwsError):
    code = "ProvisionedThroughputExceededException"
    http_status = 400


class ExpiredIteratorException(AwsError):
    code = "ExpiredIteratorException"
    http_status = 400


class KinesisLimitExceededException(AwsError):
    code = "LimitExceededException"
    http_status = 400
