"""Kinesis Data Streams over the store: streams, shards, durable records, iterators (boto3 `kinesis` operations)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.sinks.kinesis.exceptions import (
    InvalidArgumentException,
    KinesisResourceNotFoundException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
)
from gateway.sinks.kinesis.extras import encryption_json
from gateway.sinks.kinesis.iterators import decode_iterator, encode_iterator
from gateway.sinks.kinesis.shards import SequenceNumbers, Shard, ShardMap, parse_sequence
from gateway.store import OffLoop, Store, insert_rows

_COUNTER_LIMIT = SequenceNumbers.MAX_COUNTER + 1
_INSERT_HEAD = "INSERT INTO kinesis_records(stream, shard, seq, partition_key, data, arrival_ms) VALUES "
_INSERT = _INSERT_HEAD + "(?,?,?,?,?,?)"
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
MAX_RECORD_BYTES = 1024 * 1024
MAX_PUT_RECORDS = 500
MAX_PUT_RECORDS_BYTES = 5 * 1024 * 1024
SHARD_RECORDS_PER_S = 1000
SHARD_BYTES_PER_S = 1024 * 1024
MAX_GET_RECORDS = 10000


@dataclass
class Stream:
    name: str
    arn: str
    shards: ShardMap
    retention_hours: int = 24
    created_ms: int = 0
    mode: str = "PROVISIONED"
    counters: dict[int, int] = field(default_factory=dict)  # next per-shard counter, rebuilt from the records
    # Tags, encryption and registered consumers (gateway.sinks.kinesis.extras), saved with the stream's state.
    extras: dict[str, Any] = field(default_factory=dict)

    def shard_records(self, number: int) -> int:
        """Records ever written to the shard (its next counter less one), trimmed ones included."""
        return self.counters.get(number, 1) - 1

    @property
    def records_written(self) -> int:
        return sum(self.counters.values()) - len(self.counters)

    def state_json(self) -> str:
        return json.dumps(
            {
                "arn": self.arn,
                "retention_hours": self.retention_hours,
                "created_ms": self.created_ms,
                "mode": self.mode,
                "extras": self.extras,
                "shards": [
                    [
                        s.shard_id,
                        str(s.start),
                        str(s.end),
                        s.parent,
                        s.adjacent_parent,
                        str(s.starting_sequence),
                        None if s.ending_sequence is None else str(s.ending_sequence),
                    ]
                    for s in self.shards.shards
                ],
            }
        )

    @classmethod
    def from_state(cls, name: str, account: str, text: str) -> Stream:
        state = json.loads(text)
        shards = tuple(
            Shard(i, int(a), int(b), p, ap, int(ss), None if es is None else int(es))
            for i, a, b, p, ap, ss, es in state["shards"]
        )
        return cls(
            name,
            state["arn"],
            ShardMap(name, account, shards),
            state["retention_hours"],
            state["created_ms"],
            state["mode"],
            extras=state.get("extras") or {},
        )


def _encryption_type(stream: Stream) -> dict[str, str]:
    return {"EncryptionType": encryption_json(stream.extras)["EncryptionType"]}


def _shard_json(shard: Shard) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ShardId": shard.shard_id,
        "HashKeyRange": {"StartingHashKey": str(shard.start), "EndingHashKey": str(shard.end)},
        "SequenceNumberRange": {"StartingSequenceNumber": str(shard.starting_sequence)},
    }
    if shard.ending_sequence is not None:
        out["SequenceNumberRange"]["EndingSequenceNumber"] = str(shard.ending_sequence)
    if shard.parent:
        out["ParentShardId"] = shard.parent
    if shard.adjacent_parent:
        out["AdjacentParentShardId"] = shard.adjacent_parent
    return out


class KinesisService:
    def __init__(self, store: Store, clock: Clock, region: str, account: str, *, enforce_limits: bool = True) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.enforce_limits = enforce_limits
        self._secret = os.urandom(32)  # iterators from a previous run are invalid, as AWS's expire anyway
        self._usage: dict[tuple[str, int], list[int]] = {}
        # Rule-action records not yet written, and the store's future for the write that will take them all.
        self._rows: list[tuple[str, int, str, str, bytes, int]] = []
        self._rows_committed: asyncio.Future[None] | None = None
        self.streams: dict[str, Stream] = {}
        self.throttles: dict[str, int] = {}  # stream -> writes refused by the per-shard quota
        for row in store.query("SELECT name, state FROM kinesis_streams"):
            stream = Stream.from_state(row["name"], account, row["state"])
            for r in store.query(
                "SELECT shard, MAX(seq) AS top FROM kinesis_records WHERE stream=? GROUP BY shard", (stream.name,)
            ):
                stream.counters[r["shard"]] = SequenceNumbers.parts(int(r["top"])).counter + 1
            self.streams[stream.name] = stream

    # ---- helpers
    def _stream(self, name: str | None, arn: str | None = None) -> Stream:
        if not name and arn:
            name = arn.rsplit("/", 1)[-1]
        stream = self.streams.get(name or "")
        if stream is None:
            raise KinesisResourceNotFoundException(f"Stream {name} under account {self.account} not found.")
        return stream

    def _save(self, stream: Stream) -> None:
        self.store.db.execute(
            "INSERT OR REPLACE INTO kinesis_streams(name, state) VALUES (?,?)", (stream.name, stream.state_json())
        )

    def _charge(self, stream: Stream, number: int, size: int, now_ms: int) -> bool:
        """Per-shard write quota: 1,000 records or 1 MiB per second (AWS's limits; off with enforce_limits)."""
        if not self.enforce_limits:
            return True
        second = now_ms // 1000
        usage = self._usage.setdefault((stream.name, number), [second, 0, 0])
        if usage[0] != second:
            usage[:] = [second, 0, 0]
        if usage[1] + 1 > SHARD_RECORDS_PER_S or usage[2] + size > SHARD_BYTES_PER_S:
            return False
        usage[1] += 1
        usage[2] += size
        return True

    def _place(
        self, stream: Stream, data: bytes, partition_key: str, explicit_hash_key: str | None, now_ms: int
    ) -> tuple[Shard, int, tuple[str, int, str, str, bytes, int]]:
        """Check a record and give it its shard and sequence number; the row to insert for it."""
        if not 1 <= len(partition_key) <= 256:
            raise InvalidArgumentException("PartitionKey must be between 1 and 256 characters long")
        if len(data) + len(partition_key.encode()) > MAX_RECORD_BYTES:
            raise InvalidArgumentException(
                f"Record size exceeds the maximum of {MAX_RECORD_BYTES} bytes (data plus partition key)"
            )
        shard = stream.shards.shard_for_key(partition_key, explicit_hash_key)
        number = shard.number
        if not self._charge(stream, number, len(data) + len(partition_key), now_ms):
            self.throttles[stream.name] = self.throttles.get(stream.name, 0) + 1
            raise ProvisionedThroughputExceededException(
                f"Rate exceeded for shard {shard.shard_id} in stream {stream.name} under account {self.account}."
            )
        counter = stream.counters.get(number, 1)
        stream.counters[number] = counter + 1
        # SequenceNumbers.for_shard without decoding the shard's number again: the counter is the low digits.
        start = shard.starting_sequence
        seq = start - start % _COUNTER_LIMIT + counter
        return shard, seq, (stream.name, number, str(seq), partition_key, data, now_ms)

    def _append(
        self, stream: Stream, data: bytes, partition_key: str, explicit_hash_key: str | None, now_ms: int
    ) -> tuple[Shard, int]:
        shard, seq, row = self._place(stream, data, partition_key, explicit_hash_key, now_ms)
        self.store.db.execute(_INSERT, row)
        return shard, seq

    # ---- streams
    def create_stream(self, name: str, shard_count: int | None, mode: str = "PROVISIONED") -> None:
        if not STREAM_NAME.fullmatch(name or ""):
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{name}' at 'streamName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9_.-]+"
            )
        if name in self.streams:
            raise ResourceInUseException(f"Stream {name} under account {self.account} already exists.")
        count = shard_count if shard_count is not None else (4 if mode == "ON_DEMAND" else None)
        if count is None or not 1 <= count <= 500:
            raise InvalidArgumentException("ShardCount must be between 1 and 500 for a PROVISIONED stream")
        now = self.clock.wall_ms()
        arn = f"arn:aws:kinesis:{self.region}:{self.account}:stream/{name}"
        stream = Stream(name, arn, ShardMap.create(name, self.account, count, now), created_ms=now, mode=mode)
        with self.store.transaction():
            self._save(stream)
        self.streams[name] = stream

    def delete_stream(self, name: str | None, arn: str | None = None) -> None:
        stream = self._stream(name, arn)
        with self.store.transaction() as db:
            db.execute("DELETE FROM kinesis_records WHERE stream=?", (stream.name,))
            db.execute("DELETE FROM kinesis_streams WHERE name=?", (stream.name,))
        del self.streams[stream.name]

    def _description(self, stream: Stream) -> dict[str, Any]:
        return {
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": stream.mode},
            "RetentionPeriodHours": stream.retention_hours,
            "StreamCreationTimestamp": stream.created_ms / 1000,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            **encryption_json(stream.extras),
        }

    def describe_stream(
        self,
        name: str | None,
        arn: str | None = None,
        limit: int | None = None,
        exclusive_start_shard_id: str | None = None,
    ) -> dict[str, Any]:
        stream = self._stream(name, arn)
        shards = list(stream.shards.shards)
        if exclusive_start_shard_id:
            shards = [s for s in shards if s.shard_id > exclusive_start_shard_id]
        size = limit or 100
        return {
            "StreamDescription": {
                **self._description(stream),
                "Shards": [_shard_json(s) for s in shards[:size]],
                "HasMoreShards": len(shards) > size,
            }
        }

    def describe_stream_summary(self, name: str | None, arn: str | None = None) -> dict[str, Any]:
        stream = self._stream(name, arn)
        return {
            "StreamDescriptionSummary": {
                **self._description(stream),
                "OpenShardCount": len(stream.shards.open_shards),
                "ConsumerCount": len(stream.extras.get("consumers") or {}),
            }
        }

    def list_streams(self, limit: int | None = None, exclusive_start: str | None = None) -> dict[str, Any]:
        names = sorted(n for n in self.streams if exclusive_start is None or n > exclusive_start)
        size = limit or 100
        page = names[:size]
        return {
            "StreamNames": page,
            "HasMoreStreams": len(names) > size,
            "StreamSummaries": [
                {
                    "StreamName": n,
                    "StreamARN": self.streams[n].arn,
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": self.streams[n].mode},
                    "StreamCreationTimestamp": self.streams[n].created_ms / 1000,
                }
                for n in page
            ],
        }

    def list_shards(
        self,
        name: str | None,
        arn: str | None = None,
        next_token: str | None = None,
        max_results: int | None = None,
        exclusive_start_shard_id: str | None = None,
    ) -> dict[str, Any]:
        offset = 0
        if next_token:
            try:
                name, _, start = base64.urlsafe_b64decode(next_token.encode()).decode().partition("|")
                offset = int(start)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidArgumentException("Invalid NextToken.") from exc
        stream = self._stream(name, arn)
        shards = [
            s for s in stream.shards.shards if exclusive_start_shard_id is None or s.shard_id > exclusive_start_shard_id
        ]
        size = max_results or 1000
        if not 1 <= size <= 10000:
            raise InvalidArgumentException("MaxResults must be between 1 and 10000")
        out: dict[str, Any] = {"Shards": [_shard_json(s) for s in shards[offset : offset + size]]}
        if offset + size < len(shards):
            out["NextToken"] = base64.urlsafe_b64encode(f"{stream.name}|{offset + size}".encode()).decode()
        return out

    def _reshard(self, stream: Stream, shards: ShardMap) -> None:
        stream.shards = shards
        with self.store.transaction():
            self._save(stream)

    def split_shard(
        self, name: str | None, shard_to_split: str, new_starting_hash_key: str, arn: str | None = None
    ) -> None:
        stream = self._stream(name, arn)
        self._reshard(stream, stream.shards.split(shard_to_split, new_starting_hash_key, now_ms=self.clock.wall_ms()))

    def merge_shards(self, name: str | None, shard_to_merge: str, adjacent: str, arn: str | None = None) -> None:
        stream = self._stream(name, arn)
        self._reshard(stream, stream.shards.merge(shard_to_merge, adjacent, now_ms=self.clock.wall_ms()))

    def update_shard_count(self, name: str | None, target: int, arn: str | None = None) -> dict[str, Any]:
        stream = self._stream(name, arn)
        current = len(stream.shards.open_shards)
        self._reshard(stream, stream.shards.update_shard_count(target, now_ms=self.clock.wall_ms()))
        return {
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "CurrentShardCount": current,
            "TargetShardCount": target,
        }

    def set_retention(self, name: str | None, hours: int, *, increase: bool, arn: str | None = None) -> None:
        stream = self._stream(name, arn)
        if not 24 <= hours <= 8760:
            raise InvalidArgumentException("Minimum allowed retention period is 24 hours and maximum is 8760 hours.")
        if (increase and hours < stream.retention_hours) or (not increase and hours > stream.retention_hours):
            word = "increase" if increase else "decrease"
            raise InvalidArgumentException(
                f"Requested retention period ({hours} hours) for stream {stream.name} can not be used to {word} "
                f"the current retention period ({stream.retention_hours} hours)."
            )
        stream.retention_hours = hours
        with self.store.transaction():
            self._save(stream)

    def trim(self) -> int:
        """Drop records past each stream's retention period; returns how many went."""
        now = self.clock.wall_ms()
        removed = 0
        with self.store.transaction() as db:
            for stream in self.streams.values():
                cutoff = now - stream.retention_hours * 3600 * 1000
                removed += db.execute(
                    "DELETE FROM kinesis_records WHERE stream=? AND arrival_ms < ?", (stream.name, cutoff)
                ).rowcount
        return removed

    # ---- records
    def put_record(
        self,
        name: str | None,
        data: bytes,
        partition_key: str,
        explicit_hash_key: str | None = None,
        arn: str | None = None,
    ) -> dict[str, Any]:
        stream = self._stream(name, arn)
        with self.store.transaction():  # committed before the 200: acknowledged means durable
            shard, seq = self._append(stream, data, partition_key, explicit_hash_key, self.clock.wall_ms())
        return {"ShardId": shard.shard_id, "SequenceNumber": str(seq), **_encryption_type(stream)}

    async def put_record_durable(self, name: str, data: bytes, partition_key: str) -> dict[str, Any]:
        """PutRecord for rule actions: returns once the record is committed, and raises the commit's error if it was
        not (see place_record)."""
        stream = self._stream(name)
        shard, seq, row = self._place(stream, data, partition_key, None, self.clock.wall_ms())
        await self._queue_row(row)  # shared with the turn's other records; a store commit future cannot be cancelled
        return {"ShardId": shard.shard_id, "SequenceNumber": str(seq)}

    def place_record(self, name: str, data: bytes, partition_key: str) -> asyncio.Future[None]:
        """The record checked and numbered now, and written with every other record of the loop turn (one INSERT
        for all of them) through the store's group commit: the future is done once it is committed, or fails with
        the commit's error. Raises as PutRecord does (ProvisionedThroughputExceededException when throttled)."""
        return self._queue_row(self._place(self._stream(name), data, partition_key, None, self.clock.wall_ms())[2])

    def _queue_row(self, row: tuple[str, int, str, str, bytes, int]) -> asyncio.Future[None]:
        self._rows.append(row)
        committed = self._rows_committed
        if committed is None:
            committed = self._rows_committed = self.store.commit_soon(self._write_rows)
        return committed

    def _write_rows(self, db: sqlite3.Connection) -> OffLoop:
        rows, self._rows, self._rows_committed = self._rows, [], None
        return OffLoop(lambda writer: insert_rows(writer, _INSERT_HEAD, rows))  # B-tree work off the loop

    def put_records(self, name: str | None, records: list[dict[str, Any]], arn: str | None = None) -> dict[str, Any]:
        stream = self._stream(name, arn)
        if not 1 <= len(records) <= MAX_PUT_RECORDS:
            raise InvalidArgumentException(f"Records must contain between 1 and {MAX_PUT_RECORDS} entries")
        total = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records)
        if total > MAX_PUT_RECORDS_BYTES:
            raise InvalidArgumentException(f"Records size exceeds {MAX_PUT_RECORDS_BYTES} bytes")
        results: list[dict[str, Any]] = []
        failed = 0
        now = self.clock.wall_ms()
        with self.store.transaction():
            for record in records:
                try:
                    shard, seq = self._append(
                        stream, record["Data"], record["PartitionKey"], record.get("ExplicitHashKey"), now
                    )
                    results.append({"SequenceNumber": str(seq), "ShardId": shard.shard_id})
                except ProvisionedThroughputExceededException as exc:
                    failed += 1
                    results.append({"ErrorCode": exc.code, "ErrorMessage": exc.message})
        return {"FailedRecordCount": failed, "Records": results, **_encryption_type(stream)}

    def get_shard_iterator(
        self,
        name: str | None,
        shard_id: str,
        iterator_type: str,
        starting_sequence_number: str | None = None,
        timestamp: float | None = None,
        arn: str | None = None,
    ) -> dict[str, Any]:
        stream = self._stream(name, arn)
        shard = stream.shards.get(shard_id)
        if iterator_type == "TRIM_HORIZON":
            position = shard.starting_sequence
        elif iterator_type == "LATEST":
            position = SequenceNumbers.for_shard(shard, stream.counters.get(shard.number, 1))
        elif iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if starting_sequence_number is None:
                raise InvalidArgumentException(
                    f"StartingSequenceNumber is required for ShardIteratorType {iterator_type}"
                )
            position = parse_sequence(starting_sequence_number) + (iterator_type == "AFTER_SEQUENCE_NUMBER")
        elif iterator_type == "AT_TIMESTAMP":
            if timestamp is None:
                raise InvalidArgumentException("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
            row = self.store.one(
                "SELECT MIN(seq) AS seq FROM kinesis_records WHERE stream=? AND shard=? AND arrival_ms >= ?",
                (stream.name, shard.number, int(float(timestamp) * 1000)),
            )
            position = (
                int(row["seq"])
                if row and row["seq"]
                else SequenceNumbers.for_shard(shard, stream.counters.get(shard.number, 1))
            )
        else:
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{iterator_type}' at 'shardIteratorType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, "
                "TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
            )
        iterator = encode_iterator(self._secret, stream.name, shard.shard_id, position, self.clock.wall_ms())
        return {"ShardIterator": iterator}

    def get_records(self, shard_iterator: str, limit: int | None = None) -> dict[str, Any]:
        now = self.clock.wall_ms()
        state = decode_iterator(self._secret, shard_iterator, now)
        stream = self._stream(state.stream)
        shard = stream.shards.get(state.shard_id)
        size = limit or MAX_GET_RECORDS
        if not 1 <= size <= MAX_GET_RECORDS:
            raise InvalidArgumentException(f"Limit must be between 1 and {MAX_GET_RECORDS}")
        rows = self.store.query(
            "SELECT seq, partition_key, data, arrival_ms FROM kinesis_records WHERE stream=? AND shard=? AND seq >= ? "
            "ORDER BY seq LIMIT ?",
            (stream.name, shard.number, SequenceNumbers.text(state.position), size),
        )
        encryption = encryption_json(stream.extras)["EncryptionType"]
        records = [
            {
                "SequenceNumber": r["seq"],
                "ApproximateArrivalTimestamp": r["arrival_ms"] / 1000,
                "Data": bytes(r["data"]),
                "PartitionKey": r["partition_key"],
                "EncryptionType": encryption,
            }
            for r in rows
        ]
        position = int(rows[-1]["seq"]) + 1 if rows else state.position
        tip = SequenceNumbers.for_shard(shard, stream.counters.get(shard.number, 1))
        behind = 0 if position >= tip or not rows else max(0, now - rows[-1]["arrival_ms"])
        out: dict[str, Any] = {"Records": records, "MillisBehindLatest": behind}
        # A closed shard read to its end has no next iterator: the reader moves on to the children.
        if shard.is_open or position < tip:
            out["NextShardIterator"] = encode_iterator(self._secret, stream.name, shard.shard_id, position, now)
        else:
            out["ChildShards"] = [
                {
                    "ShardId": s.shard_id,
                    "ParentShards": [p for p in (s.parent, s.adjacent_parent) if p],
                    "HashKeyRange": {"StartingHashKey": str(s.start), "EndingHashKey": str(s.end)},
                }
                for s in stream.shards.shards
                if shard.shard_id in (s.parent, s.adjacent_parent)
            ]
        return out
