"""boto3 `firehose` (JSON 1.1, `X-Amz-Target: Firehose_20150804.<Operation>`): one handler per operation."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from gateway.api.targets import JsonTarget, register
from gateway.sinks.firehose.exceptions import InvalidArgumentException
from gateway.sinks.firehose.service import FirehoseService

TARGET_PREFIX = "Firehose_20150804"

Params = dict[str, Any]
Handler = Callable[[FirehoseService, Params], Any]


def _data(record: Any) -> bytes:
    if not isinstance(record, dict) or "Data" not in record:
        raise InvalidArgumentException("Record.Data is required")
    try:
        return base64.b64decode(record["Data"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise InvalidArgumentException("Record.Data must be base64 encoded") from exc


def _put_record_batch(f: FirehoseService, p: Params) -> Any:
    records = p.get("Records")
    if not isinstance(records, list):
        raise InvalidArgumentException("Records must be a list")
    return f.put_record_batch(p.get("DeliveryStreamName"), [_data(r) for r in records])


HANDLERS: dict[str, Handler] = {
    "CreateDeliveryStream": lambda f, p: f.create_delivery_stream(p),
    "DescribeDeliveryStream": lambda f, p: f.describe_delivery_stream(p.get("DeliveryStreamName")),
    "ListDeliveryStreams": lambda f, p: f.list_delivery_streams(
        p.get("Limit"), p.get("DeliveryStreamType"), p.get("ExclusiveStartDeliveryStreamName")
    ),
    "DeleteDeliveryStream": lambda f, p: f.delete_delivery_stream(p.get("DeliveryStreamName")),
    "PutRecord": lambda f, p: f.put_record(p.get("DeliveryStreamName"), _data(p.get("Record"))),
    "PutRecordBatch": _put_record_batch,
}


register(TARGET_PREFIX, JsonTarget(HANDLERS, lambda gw: gw.firehose, model="firehose"))
