"""boto3 `kinesis` (JSON 1.1, `X-Amz-Target: Kinesis_20131202.<Operation>`): one handler per operation."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from gateway.api.model import load_service, validate_input
from gateway.api.targets import JsonTarget, register
from gateway.errors import InvalidRequestException
from gateway.sinks.kinesis.exceptions import InvalidArgumentException
from gateway.sinks.kinesis.extras import StreamExtras
from gateway.sinks.kinesis.service import KinesisService

TARGET_PREFIX = "Kinesis_20131202"

Params = dict[str, Any]
Handler = Callable[[KinesisService, Params], Any]


def _data(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise InvalidArgumentException("Data must be base64 encoded") from exc


def _put_records(k: KinesisService, p: Params) -> Any:
    records = [
        {
            "Data": _data(r.get("Data")),
            "PartitionKey": r.get("PartitionKey", ""),
            "ExplicitHashKey": r.get("ExplicitHashKey"),
        }
        for r in p.get("Records") or []
    ]
    return k.put_records(p.get("StreamName"), records, p.get("StreamARN"))


def _get_records(k: KinesisService, p: Params) -> Any:
    out = k.get_records(p["ShardIterator"], p.get("Limit"))
    for record in out["Records"]:
        record["Data"] = base64.b64encode(record["Data"]).decode()
    return out


HANDLERS: dict[str, Handler] = {
    "CreateStream": lambda k, p: k.create_stream(
        p["StreamName"], p.get("ShardCount"), (p.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED")
    ),
    "DeleteStream": lambda k, p: k.delete_stream(p.get("StreamName"), p.get("StreamARN")),
    "DescribeStream": lambda k, p: k.describe_stream(
        p.get("StreamName"), p.get("StreamARN"), p.get("Limit"), p.get("ExclusiveStartShardId")
    ),
    "DescribeStreamSummary": lambda k, p: k.describe_stream_summary(p.get("StreamName"), p.get("StreamARN")),
    "ListStreams": lambda k, p: k.list_streams(p.get("Limit"), p.get("ExclusiveStartStreamName")),
    "ListShards": lambda k, p: k.list_shards(
        p.get("StreamName"), p.get("StreamARN"), p.get("NextToken"), p.get("MaxResults"), p.get("ExclusiveStartShardId")
    ),
    "PutRecord": lambda k, p: k.put_record(
        p.get("StreamName"),
        _data(p.get("Data")),
        p.get("PartitionKey", ""),
        p.get("ExplicitHashKey"),
        p.get("StreamARN"),
    ),
    "PutRecords": _put_records,
    "GetShardIterator": lambda k, p: k.get_shard_iterator(
        p.get("StreamName"),
        p["ShardId"],
        p["ShardIteratorType"],
        p.get("StartingSequenceNumber"),
        p.get("Timestamp"),
        p.get("StreamARN"),
    ),
    "GetRecords": _get_records,
    "SplitShard": lambda k, p: k.split_shard(
        p.get("StreamName"), p["ShardToSplit"], p["NewStartingHashKey"], p.get("StreamARN")
    ),
    "MergeShards": lambda k, p: k.merge_shards(
        p.get("StreamName"), p["ShardToMerge"], p["AdjacentShardToMerge"], p.get("StreamARN")
    ),
    "UpdateShardCount": lambda k, p: k.update_shard_count(
        p.get("StreamName"), p["TargetShardCount"], p.get("StreamARN")
    ),
    "IncreaseStreamRetentionPeriod": lambda k, p: k.set_retention(
        p.get("StreamName"), p["RetentionPeriodHours"], increase=True, arn=p.get("StreamARN")
    ),
    "DecreaseStreamRetentionPeriod": lambda k, p: k.set_retention(
        p.get("StreamName"), p["RetentionPeriodHours"], increase=False, arn=p.get("StreamARN")
    ),
}


def _validated(operation: str, handler: Handler) -> Handler:
    """Check types against the botocore model first (a wrong type is InvalidArgumentException, never a 500)."""
    shape = load_service("kinesis").operations[operation]["input"]["shape"]

    def run(k: KinesisService, p: Params) -> Any:
        try:
            validate_input(load_service("kinesis"), shape, p)
        except InvalidRequestException as exc:
            raise InvalidArgumentException(exc.message) from exc
        return handler(k, p)

    return run


_EXTRA: dict[str, Handler] = {
    "AddTagsToStream": lambda k, p: StreamExtras(k).add_tags(
        p.get("StreamName"), p.get("Tags") or {}, p.get("StreamARN")
    ),
    "ListTagsForStream": lambda k, p: StreamExtras(k).list_tags(
        p.get("StreamName"), p.get("ExclusiveStartTagKey"), p.get("Limit"), p.get("StreamARN")
    ),
    "RemoveTagsFromStream": lambda k, p: StreamExtras(k).remove_tags(
        p.get("StreamName"), list(p.get("TagKeys") or []), p.get("StreamARN")
    ),
    "TagResource": lambda k, p: StreamExtras(k).tag_resource(p.get("ResourceARN", ""), p.get("Tags") or {}),
    "UntagResource": lambda k, p: StreamExtras(k).untag_resource(
        p.get("ResourceARN", ""), list(p.get("TagKeys") or [])
    ),
    "ListTagsForResource": lambda k, p: StreamExtras(k).list_tags_for_resource(p.get("ResourceARN", "")),
    "StartStreamEncryption": lambda k, p: StreamExtras(k).start_encryption(
        p.get("StreamName"), p.get("EncryptionType", ""), p.get("KeyId", ""), p.get("StreamARN")
    ),
    "StopStreamEncryption": lambda k, p: StreamExtras(k).stop_encryption(
        p.get("StreamName"), p.get("EncryptionType", ""), p.get("KeyId", ""), p.get("StreamARN")
    ),
    "RegisterStreamConsumer": lambda k, p: StreamExtras(k).register_consumer(
        p.get("StreamARN", ""), p.get("ConsumerName", "")
    ),
    "DescribeStreamConsumer": lambda k, p: StreamExtras(k).describe_consumer(
        p.get("StreamARN"), p.get("ConsumerName"), p.get("ConsumerARN")
    ),
    "ListStreamConsumers": lambda k, p: StreamExtras(k).list_consumers(
        p.get("StreamARN", ""), p.get("MaxResults"), p.get("NextToken")
    ),
    "DeregisterStreamConsumer": lambda k, p: StreamExtras(k).deregister_consumer(
        p.get("StreamARN"), p.get("ConsumerName"), p.get("ConsumerARN")
    ),
}
HANDLERS.update({name: _validated(name, handler) for name, handler in _EXTRA.items()})


register(TARGET_PREFIX, JsonTarget(HANDLERS, lambda gw: gw.kinesis, model="kinesis"))
