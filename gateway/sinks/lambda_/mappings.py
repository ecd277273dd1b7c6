"""Event source mappings: Kinesis streams and SQS queues polled into a function, in batches (boto3 `lambda`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidRequestException, ResourceNotFoundException
from gateway.sinks.kinesis.kpl import UserRecord, deaggregate
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.clock import Clock
    from gateway.sinks.kinesis.service import KinesisService
    from gateway.sinks.lambda_.service import LambdaService
    from gateway.sinks.sqs.service import SqsService
    from gateway.store import Store

log = logging.getLogger("edgesim.lambda")

IDLE_POLL_S = 0.2
RETRY_AFTER_ERROR_S = 1.0


@dataclass
class Mapping:
    uuid: str
    function_name: str
    source_arn: str
    batch_size: int
    starting_position: str
    enabled: bool
    created_ms: int
    last_result: str = "No records processed"

    @property
    def kind(self) -> str:
        return "kinesis" if ":kinesis:" in self.source_arn else "sqs"

    def describe(self, lambdas: LambdaService) -> dict[str, Any]:
        out: dict[str, Any] = {
            "UUID": self.uuid,
            "EventSourceArn": self.source_arn,
            "FunctionArn": lambdas.arn(self.function_name),
            "BatchSize": self.batch_size,
            "State": "Enabled" if self.enabled else "Disabled",
            "StateTransitionReason": "USER_INITIATED",
            "LastModified": self.created_ms / 1000,
            "LastProcessingResult": self.last_result,
        }
        if self.kind == "kinesis":
            out["StartingPosition"] = self.starting_position
        return out


class EventSourceMappings:
    """One polling task per enabled mapping; Kinesis positions are checkpointed in the store, KCL-style."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        lambdas: LambdaService,
        kinesis: KinesisService,
        sqs: SqsService,
        region: str,
        account: str,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lambdas = lambdas
        self.kinesis = kinesis
        self.sqs = sqs
        self.region = region
        self.account = account
        self.mappings: dict[str, Mapping] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for row in self.store.query("SELECT uuid, state FROM lambda_event_source_mappings"):
            mapping = Mapping(**json.loads(row["state"]))
            self.mappings[mapping.uuid] = mapping
            self._schedule(mapping)

    async def stop(self) -> None:
        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()

    def _save(self, mapping: Mapping) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO lambda_event_source_mappings(uuid, state) VALUES (?,?)",
                (mapping.uuid, json.dumps(asdict(mapping))),
            )

    def _schedule(self, mapping: Mapping) -> None:
        old = self._tasks.pop(mapping.uuid, None)
        if old is not None:
            old.cancel()
        if mapping.enabled:
            poll = self._poll_kinesis if mapping.kind == "kinesis" else self._poll_sqs
            self._tasks[mapping.uuid] = asyncio.get_running_loop().create_task(
                poll(mapping), name=f"event-source-{mapping.uuid}"
            )

    # ---- operations, named after AWS's
    def create_event_source_mapping(self, params: dict[str, Any]) -> dict[str, Any]:
        source = str(params.get("EventSourceArn") or "")
        function = self.lambdas.get_function_configuration(params["FunctionName"])["FunctionName"]
        if ":kinesis:" in source:
            name = source.rsplit("/", 1)[-1]
            if name not in self.kinesis.streams:
                raise InvalidRequestException(f"Stream not found: {source}")
            position = params.get("StartingPosition")
            if position not in ("TRIM_HORIZON", "LATEST"):
                raise InvalidRequestException("StartingPosition must be TRIM_HORIZON or LATEST for a Kinesis source")
            batch = int(params.get("BatchSize") or 100)
        elif ":sqs:" in source:
            if self.sqs._queue_by_arn(source) is None:
                raise InvalidRequestException(f"Queue not found: {source}")
            position = ""
            batch = int(params.get("BatchSize") or 10)
        else:
            raise InvalidRequestException(f"Unsupported event source: {source!r} (Kinesis streams and SQS queues)")
        if not 1 <= batch <= 10000:
            raise InvalidRequestException("BatchSize must be between 1 and 10000")
        mapping = Mapping(
            str(uuid.uuid4()),
            function,
            source,
            batch,
            position,
            bool(params.get("Enabled", True)),
            self.clock.wall_ms(),
        )
        self._save(mapping)
        self.mappings[mapping.uuid] = mapping
        self._schedule(mapping)
        return mapping.describe(self.lambdas)

    def _get(self, mapping_uuid: str) -> Mapping:
        mapping = self.mappings.get(mapping_uuid)
        if mapping is None:
            raise ResourceNotFoundException(f"The resource you requested does not exist. (UUID {mapping_uuid})")
        return mapping

    def get_event_source_mapping(self, mapping_uuid: str) -> dict[str, Any]:
        return self._get(mapping_uuid).describe(self.lambdas)

    def list_event_source_mappings(
        self, function_name: str | None = None, source_arn: str | None = None
    ) -> dict[str, Any]:
        items = [
            m.describe(self.lambdas)
            for m in self.mappings.values()
            if (function_name is None or m.function_name == function_name.rsplit(":", 1)[-1])
            and (source_arn is None or m.source_arn == source_arn)
        ]
        return {"EventSourceMappings": items}

    def update_event_source_mapping(self, mapping_uuid: str, params: dict[str, Any]) -> dict[str, Any]:
        mapping = self._get(mapping_uuid)
        if params.get("BatchSize") is not None:
            mapping.batch_size = int(params["BatchSize"])
        if params.get("Enabled") is not None:
            mapping.enabled = bool(params["Enabled"])
        self._save(mapping)
        self._schedule(mapping)
        return mapping.describe(self.lambdas)

    def delete_event_source_mapping(self, mapping_uuid: str) -> dict[str, Any]:
        mapping = self._get(mapping_uuid)
        with self.store.transaction() as db:
            db.execute("DELETE FROM lambda_event_source_mappings WHERE uuid=?", (mapping_uuid,))
        mapping.enabled = False
        self._schedule(mapping)
        del self.mappings[mapping_uuid]
        return {**mapping.describe(self.lambdas), "State": "Deleting"}

    # ---- pollers
    async def _deliver(self, mapping: Mapping, event: dict[str, Any]) -> bool:
        """Invoke synchronously; True when the function succeeded (then the batch is done)."""
        result = await self.lambdas.invoke(mapping.function_name, json.dumps(event).encode())
        if result.function_error:
            mapping.last_result = f"PROBLEM: function error {result.payload[:200].decode(errors='replace')}"
            return False
        mapping.last_result = "OK"
        return True

    async def _poll_kinesis(self, mapping: Mapping) -> None:
        stream = mapping.source_arn.rsplit("/", 1)[-1]
        group = f"esm:{mapping.uuid}"
        kinesis = self.kinesis
        iterators: dict[str, str | None] = {}
        while True:
            try:
                for shard in kinesis.list_shards(stream)["Shards"]:
                    shard_id = shard["ShardId"]
                    if shard_id not in iterators:
                        iterators[shard_id] = self._kinesis_iterator(mapping, stream, shard_id, group)
                busy = False
                for shard_id, iterator in list(iterators.items()):
                    if iterator is None:
                        continue
                    page = kinesis.get_records(iterator, mapping.batch_size)
                    if page["Records"]:
                        busy = True
                        event = {
                            "Records": [
                                entry for r in page["Records"] for entry in self._kinesis_records(mapping, shard_id, r)
                            ]
                        }
                        if not await self._deliver(mapping, event):
                            # Kinesis sources block on a failing batch: the same records are retried, in order.
                            await asyncio.sleep(RETRY_AFTER_ERROR_S)
                            continue
                        self._checkpoint(group, stream, shard_id, page["Records"][-1]["SequenceNumber"])
                    iterators[shard_id] = page.get("NextShardIterator")
                if not busy:
                    await asyncio.sleep(IDLE_POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a poller survives a deleted stream or a bad function until it is fixed
                mapping.last_result = f"PROBLEM: {exc}"
                log.warning("event source %s: %s", mapping.uuid, exc)
                iterators.clear()
                await asyncio.sleep(RETRY_AFTER_ERROR_S)

    def _kinesis_iterator(self, mapping: Mapping, stream: str, shard_id: str, group: str) -> str:
        row = self.store.one(
            "SELECT sequence FROM stream_checkpoints WHERE group_name=? AND stream=? AND shard=?",
            (group, stream, shard_id),
        )
        kinesis = self.kinesis
        if row is not None:
            return str(
                kinesis.get_shard_iterator(stream, shard_id, "AFTER_SEQUENCE_NUMBER", row["sequence"])["ShardIterator"]
            )
        return str(kinesis.get_shard_iterator(stream, shard_id, mapping.starting_position)["ShardIterator"])

    def _checkpoint(self, group: str, stream: str, shard_id: str, sequence: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO stream_checkpoints(group_name, stream, shard, sequence, updated_ms) "
                "VALUES (?,?,?,?,?)",
                (group, stream, shard_id, sequence, self.clock.wall_ms()),
            )

    def _kinesis_records(self, mapping: Mapping, shard_id: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The event's entries for one stored record: one per user record when it is a KPL aggregate."""
        users = deaggregate(record["Data"], record["PartitionKey"])
        # deaggregate hands the stored bytes back as they are when they are no (readable) aggregate
        aggregated = not users or users[0].data is not record["Data"]
        return [self._kinesis_entry(mapping, shard_id, record, user, aggregated) for user in users]

    def _kinesis_entry(
        self, mapping: Mapping, shard_id: str, record: dict[str, Any], user: UserRecord, aggregated: bool
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": user.partition_key,
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(user.data).decode(),
            "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"],
        }
        event_id = f"{shard_id}:{record['SequenceNumber']}"
        if aggregated:
            data["subSequenceNumber"] = user.sub_sequence
            event_id += f":{user.sub_sequence}"
            if user.explicit_hash_key is not None:
                data["explicitHashKey"] = user.explicit_hash_key
        return {
            "kinesis": data,
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventName": "aws:kinesis:record",
            "eventID": event_id,
            "awsRegion": self.region,
            "eventSourceARN": mapping.source_arn,
            "invokeIdentityArn": f"arn:aws:iam::{self.account}:role/edgesim",
        }

    async def _poll_sqs(self, mapping: Mapping) -> None:
        sqs = self.sqs
        while True:
            try:
                queue = sqs._queue_by_arn(mapping.source_arn)
                if queue is None:
                    raise InvalidRequestException(f"queue {mapping.source_arn} is gone")
                url = sqs.queue_url(queue.name)
                messages = await sqs.receive_message(url, min(mapping.batch_size, 10), None, 1, ("All",), ("All",))
                if not messages:
                    continue
                event = {
                    "Records": [
                        {
                            "messageId": m.message_id,
                            "receiptHandle": m.receipt_handle,
                            "body": m.body,
                            "attributes": m.attributes,
                            "messageAttributes": {},
                            "md5OfBody": m.md5_of_body,
                            "eventSource": "aws:sqs",
                            "eventSourceARN": mapping.source_arn,
                            "awsRegion": self.region,
                        }
                        for m in messages
                    ]
                }
                # On success the batch is deleted; on failure it stays and reappears after its visibility timeout.
                if await self._deliver(mapping, event):
                    for m in messages:
                        sqs.delete_message(url, m.receipt_handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                mapping.last_result = f"PROBLEM: {exc}"
                log.warning("event source %s: %s", mapping.uuid, exc)
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
