"""The local sink backend: rule actions delivered to edgesim's own emulated services."""

from __future__ import annotations

import asyncio

from gateway.actions.base import ActionError
from gateway.actions.sinks import ActionSinks, CloudWatchTarget, MessageRouter, RuleDestinations
from gateway.clock import Clock
from gateway.errors import AwsError
from gateway.sinks.firehose.service import MAX_BATCH_RECORDS, FirehoseService
from gateway.sinks.kinesis.service import KinesisService
from gateway.sinks.lambda_.service import LambdaService
from gateway.sinks.s3 import ObjectStore
from gateway.sinks.sqs.service import SendEntry, SqsService


class LocalKinesis:
    def __init__(self, service: KinesisService) -> None:
        # Bound once: the rule path calls the service's group commit directly, with no hop of ours in between.
        self.put_record = service.put_record_durable
        self.put_record_now = service.place_record


class LocalSqs:
    def __init__(self, service: SqsService) -> None:
        self.service = service

    def is_fifo(self, queue_url: str) -> bool:
        name = self.service.name_from_url(queue_url)
        queue = self.service.queues.get(name)
        return name.endswith(".fifo") or (queue is not None and queue.fifo)

    async def send_message(self, queue_url: str, body: str) -> None:
        await self.send_message_now(queue_url, body)

    def send_message_now(self, queue_url: str, body: str) -> asyncio.Future[None]:
        try:
            self.service.send_message(queue_url, SendEntry(body=body))
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
        return self.service.committed()


class LocalLambda:
    def __init__(self, service: LambdaService) -> None:
        self.service = service

    async def invoke_event(self, function: str, payload: bytes) -> None:
        try:
            self.service.enqueue_event(function, payload)
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc


class LocalFirehose:
    def __init__(self, service: FirehoseService) -> None:
        self.service = service

    async def put(self, stream: str, records: list[bytes], batch: bool) -> None:
        try:
            if batch:
                for start in range(0, len(records), MAX_BATCH_RECORDS):
                    self.service.put_record_batch(stream, records[start : start + MAX_BATCH_RECORDS])
            else:
                self.service.put_record(stream, records[0])
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc


class LocalS3:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        try:
            # Off the event loop: the write is fsynced.
            await asyncio.to_thread(self.objects.put, bucket, key, body)
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
        except OSError as exc:
            raise ActionError(f"could not write s3://{bucket}/{key}: {exc}") from exc


def local_sinks(
    clock: Clock,
    kinesis: KinesisService,
    sqs: SqsService,
    lambdas: LambdaService,
    firehose: FirehoseService,
    s3: ObjectStore,
    cloudwatch: CloudWatchTarget,
    router: MessageRouter,
    destinations: RuleDestinations,
) -> ActionSinks:
    return ActionSinks(
        clock=clock,
        kinesis=LocalKinesis(kinesis),
        sqs=LocalSqs(sqs),
        lambda_=LocalLambda(lambdas),
        firehose=LocalFirehose(firehose),
        s3=LocalS3(s3),
        dynamodb=None,
        cloudwatch=cloudwatch,
        router=router,
        destinations=destinations,
        remote=False,
    )
