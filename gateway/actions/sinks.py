"""What a rule action may ask of the world: one narrow interface per sink, local or remote.

The gateway picks the implementations once at start-up (gateway.actions.local or gateway.actions.remote) and hands
every action the same `ActionSinks`; an action never asks which backend it talks to, per message or otherwise.
Each method raises ActionError (or, where noted, an AwsError the action turns into one) when it cannot deliver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from gateway.clock import Clock
from gateway.messages import Message
from gateway.sinks.cloudwatch import Datapoint, LogEvent


class KinesisSink(Protocol):
    def put_record(self, stream: str, data: bytes, partition_key: str) -> Awaitable[object]:
        """Done once the record is durable. Throttling raises ProvisionedThroughputExceededException (the action
        retries it); any other AwsError or ActionError is a failure."""
        ...

    def put_record_now(self, stream: str, data: bytes, partition_key: str) -> asyncio.Future[None] | None:
        """The record checked and placed now; the future is done once it is durable (or failed with the commit's
        error). None when this backend cannot place records synchronously: then `put_record` is awaited. Raises as
        `put_record` does."""
        ...


class SqsSink(Protocol):
    def is_fifo(self, queue_url: str) -> bool: ...

    async def send_message(self, queue_url: str, body: str) -> None:
        """Done once the message is durable."""
        ...

    def send_message_now(self, queue_url: str, body: str) -> asyncio.Future[None] | None:
        """The message queued now; the future is done once it is durable. None when this backend cannot queue
        synchronously: then `send_message` is awaited. Raises ActionError when it cannot be queued."""
        ...


class LambdaSink(Protocol):
    async def invoke_event(self, function: str, payload: bytes) -> None:
        """An asynchronous invoke (InvocationType Event): done once the event is queued."""
        ...


class FirehoseSink(Protocol):
    async def put(self, stream: str, records: list[bytes], batch: bool) -> None:
        """`batch` False: `records` is the one record of a PutRecord; True: PutRecordBatch calls of at most the
        service's batch size."""
        ...


class S3Sink(Protocol):
    async def put_object(self, bucket: str, key: str, body: bytes) -> None: ...


class DynamoDBSink(Protocol):
    async def put_item(self, table: str, item: dict[str, Any]) -> None: ...


class CloudWatchTarget(Protocol):
    def put_log_events(self, events: list[LogEvent]) -> None: ...

    def put_datapoint(self, point: Datapoint) -> None: ...

    async def durable(self) -> None: ...


class MessageRouter(Protocol):
    """The broker's router: a republished message goes the way every admitted message goes."""

    def route(self, message: Message) -> None: ...


class RuleDestinations(Protocol):
    """Topic rule destinations, which the http action needs confirmed before it posts."""

    def find(self, confirmation_url: str) -> dict[str, Any] | None: ...

    def create(self, confirmation_url: str) -> dict[str, Any]: ...

    def session(self) -> aiohttp.ClientSession: ...


@dataclass(frozen=True)
class ActionSinks:
    """Everything an action may use, chosen once when the gateway starts."""

    clock: Clock
    kinesis: KinesisSink
    sqs: SqsSink
    lambda_: LambdaSink
    firehose: FirehoseSink
    s3: S3Sink
    dynamodb: DynamoDBSink | None  # only the aws backend has DynamoDB
    cloudwatch: CloudWatchTarget  # kept locally with either backend
    router: MessageRouter
    destinations: RuleDestinations
    remote: bool = False  # for create-time checks only (actions.base.unsupported_reason)
