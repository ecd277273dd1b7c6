"""The second sink backend: rule actions forwarded to AWS, or any compatible endpoint, through boto3."""

from __future__ import annotations

import asyncio
import json
import os
from decimal import Decimal
from typing import Any

from gateway.actions.base import ActionError
from gateway.actions.local import LocalSqs
from gateway.actions.sinks import ActionSinks, CloudWatchTarget, MessageRouter, RuleDestinations
from gateway.clock import Clock
from gateway.sinks.firehose.service import MAX_BATCH_RECORDS
from gateway.sinks.sqs.service import SqsService


class RemoteSinks:
    """`edgesim up --sink-backend aws [--sink-endpoint-url URL]`: the same calls the local sinks take, sent on."""

    def __init__(self, endpoint_url: str | None, region: str) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            kwargs: dict[str, Any] = {"region_name": os.environ.get("AWS_REGION", self.region)}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
                # A compatible endpoint (LocalStack, another edgesim) takes any key; real AWS uses the environment's.
                if not os.environ.get("AWS_ACCESS_KEY_ID"):
                    kwargs.update(aws_access_key_id="edgesim", aws_secret_access_key="edgesim")
            self._clients[service] = boto3.client(service, **kwargs)
        return self._clients[service]

    async def _call(self, service: str, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self.client(service), operation), **params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ActionError(f"{error.get('Code')}: {error.get('Message')} (forwarded to {service})") from exc
        except BotoCoreError as exc:
            raise ActionError(f"{service} unreachable: {exc}") from exc

    async def put_record(self, stream: str, data: bytes, partition_key: str) -> None:
        await self._call("kinesis", "put_record", StreamName=stream, Data=data, PartitionKey=partition_key)

    async def send_message(self, queue_url: str, body: str) -> None:
        await self._call("sqs", "send_message", QueueUrl=queue_url, MessageBody=body)

    @staticmethod
    def put_record_now(stream: str, data: bytes, partition_key: str) -> None:
        return None  # a remote call cannot be placed synchronously: the action awaits put_record

    @staticmethod
    def send_message_now(queue_url: str, body: str) -> None:
        return None

    async def invoke_event(self, function: str, payload: bytes) -> None:
        await self._call("lambda", "invoke", FunctionName=function, InvocationType="Event", Payload=payload)

    async def firehose_put(self, stream: str, records: list[bytes]) -> None:
        await self._call(
            "firehose", "put_record_batch", DeliveryStreamName=stream, Records=[{"Data": record} for record in records]
        )

    async def s3_put(self, bucket: str, key: str, body: bytes) -> None:
        await self._call("s3", "put_object", Bucket=bucket, Key=key, Body=body)

    async def dynamodb_put_item(self, table: str, item: dict[str, Any]) -> None:
        from boto3.dynamodb.types import TypeSerializer

        # DynamoDB numbers are decimals: parse floats that way so 21.5 stays 21.5, not a binary approximation.
        plain = json.loads(json.dumps(item), parse_float=Decimal)
        try:
            serializer = TypeSerializer()
            attributes = {key: serializer.serialize(value) for key, value in plain.items()}
        except (TypeError, ValueError) as exc:
            raise ActionError(f"the output cannot be a DynamoDB item: {exc}") from exc
        await self._call("dynamodb", "put_item", TableName=table, Item=attributes)


class RemoteSqs:
    def __init__(self, remote: RemoteSinks, local: SqsService) -> None:
        self.send_message = remote.send_message
        self.send_message_now = remote.send_message_now
        # The FIFO refusal is the same with either backend (a FIFO queue's name ends in .fifo).
        self.is_fifo = LocalSqs(local).is_fifo


class RemoteFirehose:
    def __init__(self, remote: RemoteSinks) -> None:
        self.remote = remote

    async def put(self, stream: str, records: list[bytes], batch: bool) -> None:
        for start in range(0, len(records), MAX_BATCH_RECORDS):
            await self.remote.firehose_put(stream, records[start : start + MAX_BATCH_RECORDS])


class RemoteS3:
    def __init__(self, remote: RemoteSinks) -> None:
        self.put_object = remote.s3_put


class RemoteDynamoDB:
    def __init__(self, remote: RemoteSinks) -> None:
        self.put_item = remote.dynamodb_put_item


def remote_sinks(
    remote: RemoteSinks,
    clock: Clock,
    sqs: SqsService,
    cloudwatch: CloudWatchTarget,
    router: MessageRouter,
    destinations: RuleDestinations,
) -> ActionSinks:
    return ActionSinks(
        clock=clock,
        kinesis=remote,
        sqs=RemoteSqs(remote, sqs),
        lambda_=remote,
        firehose=RemoteFirehose(remote),
        s3=RemoteS3(remote),
        dynamodb=RemoteDynamoDB(remote),
        cloudwatch=cloudwatch,
        router=router,
        destinations=destinations,
        remote=True,
    )
