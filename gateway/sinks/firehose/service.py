"""Firehose delivery streams with an S3 destination, over the store (boto3 `firehose` operations).

Accepted records are committed to the database before the 200, buffered in memory, and deleted only
once the object holding them is written; a restart flushes whatever was still buffered.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.errors import AwsError
from gateway.sinks.firehose.buffer import (
    DEFAULT_INTERVAL_S,
    DEFAULT_SIZE_MB,
    INTERVAL_S_RANGE,
    SIZE_MB_RANGE,
    BufferingHints,
    Pending,
    due_at,
    error_key,
    plan_flush,
)
from gateway.sinks.firehose.exceptions import (
    FirehoseResourceInUseException,
    FirehoseResourceNotFoundException,
    InvalidArgumentException,
)
from gateway.sinks.firehose.writer import S3Target, write_batch
from gateway.sinks.s3 import BUCKET_NAME, ObjectStore
from gateway.store import Store

log = logging.getLogger("edgesim.firehose")

STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")
FILE_EXTENSION = re.compile(r"\.[0-9a-z!\-_.*'()]{1,127}")
MAX_RECORD_BYTES = 1000 * 1024
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
COMPRESSIONS = ("UNCOMPRESSED", "GZIP")
OTHER_DESTINATIONS = (
    "RedshiftDestinationConfiguration",
    "ElasticsearchDestinationConfiguration",
    "AmazonopensearchserviceDestinationConfiguration",
    "SplunkDestinationConfiguration",
    "HttpEndpointDestinationConfiguration",
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
    "IcebergDestinationConfiguration",
)


# (function name or ARN, event) -> (response payload, X-Amz-Function-Error or None)
Invoke = Callable[[str, bytes], Awaitable[tuple[bytes, str | None]]]


@dataclass
class DeliveryStream:
    name: str
    arn: str
    created_ms: int
    destination: dict[str, Any]  # the S3 description as DescribeDeliveryStream shows it
    extended: bool
    hints: BufferingHints
    target: S3Target
    version: int = 1
    pending: list[Pending] = field(default_factory=list)

    @property
    def processor(self) -> str | None:
        return transform_function(self.destination)

    def state_json(self) -> str:
        return json.dumps(
            {
                "arn": self.arn,
                "created_ms": self.created_ms,
                "destination": self.destination,
                "extended": self.extended,
                "version": self.version,
            }
        )

    @classmethod
    def from_state(cls, name: str, text: str) -> DeliveryStream:
        state = json.loads(text)
        hints, target = _parse_destination(state["destination"])
        return cls(
            name,
            state["arn"],
            state["created_ms"],
            state["destination"],
            state["extended"],
            hints,
            target,
            state["version"],
        )


def _unsupported(what: str) -> InvalidArgumentException:
    return InvalidArgumentException(f"{what} is not supported yet by edgesim")


def _bucket_from_arn(arn: Any) -> str:
    if not isinstance(arn, str) or not arn.startswith("arn:aws:s3:::"):
        raise InvalidArgumentException(f"BucketARN must look like arn:aws:s3:::bucket-name, got {arn!r}")
    bucket = arn.removeprefix("arn:aws:s3:::")
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgumentException(f"BucketARN names an invalid bucket: {bucket!r}")
    return bucket


def _hints(raw: Any) -> BufferingHints:
    if raw is None:
        return BufferingHints()
    if not isinstance(raw, dict):
        raise InvalidArgumentException("BufferingHints must be an object")
    size, interval = raw.get("SizeInMBs"), raw.get("IntervalInSeconds")
    if (size is None) != (interval is None):
        raise InvalidArgumentException("BufferingHints: SizeInMBs and IntervalInSeconds must be given together")
    size = DEFAULT_SIZE_MB if size is None else size
    interval = DEFAULT_INTERVAL_S if interval is None else interval
    if not isinstance(size, int) or not SIZE_MB_RANGE[0] <= size <= SIZE_MB_RANGE[1]:
        raise InvalidArgumentException(f"BufferingHints.SizeInMBs must be between 1 and 128, got {size!r}")
    if not isinstance(interval, int) or not INTERVAL_S_RANGE[0] <= interval <= INTERVAL_S_RANGE[1]:
        raise InvalidArgumentException(f"BufferingHints.IntervalInSeconds must be between 0 and 900, got {interval!r}")
    return BufferingHints(size, interval)


def _parse_destination(cfg: dict[str, Any]) -> tuple[BufferingHints, S3Target]:
    bucket = _bucket_from_arn(cfg.get("BucketARN"))
    hints = _hints(cfg.get("BufferingHints"))
    compression = cfg.get("CompressionFormat") or "UNCOMPRESSED"
    if compression in ("ZIP", "Snappy", "HADOOP_SNAPPY"):
        raise _unsupported(f"CompressionFormat {compression}")
    if compression not in COMPRESSIONS:
        raise InvalidArgumentException(f"CompressionFormat must be UNCOMPRESSED or GZIP, got {compression!r}")
    prefix = cfg.get("Prefix") or ""
    error_prefix = cfg.get("ErrorOutputPrefix") or ""
    for name, value in (("Prefix", prefix), ("ErrorOutputPrefix", error_prefix)):
        if not isinstance(value, str) or len(value) > 1024:
            raise InvalidArgumentException(f"{name} must be a string of at most 1024 characters")
        if "!{" in value:
            raise _unsupported(f"{name} with !{{...}} expressions (custom prefixes)")
        if value.startswith("/") or ".." in value.split("/"):
            raise InvalidArgumentException(f"{name} must not start with '/' or contain a '..' segment")
    extension = cfg.get("FileExtension") or None
    if extension is not None and not (isinstance(extension, str) and FILE_EXTENSION.fullmatch(extension)):
        raise InvalidArgumentException(f"FileExtension must look like .ext, got {extension!r}")
    return hints, S3Target(bucket, prefix, compression, extension)


def _check_extended_features(cfg: dict[str, Any]) -> None:
    transform_function(cfg)  # validates the processor list
    if (cfg.get("DataFormatConversionConfiguration") or {}).get("Enabled"):
        raise _unsupported("DataFormatConversionConfiguration")
    if (cfg.get("DynamicPartitioningConfiguration") or {}).get("Enabled"):
        raise _unsupported("DynamicPartitioningConfiguration")
    if cfg.get("S3BackupMode", "Disabled") != "Disabled":
        raise _unsupported("S3BackupMode Enabled")


def transform_function(cfg: dict[str, Any]) -> str | None:
    """The Lambda of an enabled ProcessingConfiguration (one `Lambda` processor with a `LambdaArn`), if any."""
    processing = cfg.get("ProcessingConfiguration") or {}
    if not processing.get("Enabled"):
        return None
    processors = processing.get("Processors") or []
    if len(processors) != 1 or processors[0].get("Type") != "Lambda":
        raise _unsupported("ProcessingConfiguration other than one Lambda processor")
    params = {p.get("ParameterName"): p.get("ParameterValue") for p in processors[0].get("Parameters") or []}
    arn = params.get("LambdaArn")
    if not isinstance(arn, str) or not arn:
        raise InvalidArgumentException("The Lambda processor needs a LambdaArn parameter")
    return arn


def _description(cfg: dict[str, Any], hints: BufferingHints, target: S3Target, extended: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "RoleARN": cfg.get("RoleARN", ""),
        "BucketARN": cfg["BucketARN"],
        "Prefix": target.prefix,
        "BufferingHints": hints.to_json(),
        "CompressionFormat": target.compression,
        "EncryptionConfiguration": cfg.get("EncryptionConfiguration") or {"NoEncryptionConfig": "NoEncryption"},
        "CloudWatchLoggingOptions": cfg.get("CloudWatchLoggingOptions") or {"Enabled": False},
    }
    if cfg.get("ErrorOutputPrefix"):
        out["ErrorOutputPrefix"] = cfg["ErrorOutputPrefix"]
    if extended:
        out["S3BackupMode"] = "Disabled"
        if cfg.get("ProcessingConfiguration") is not None:
            out["ProcessingConfiguration"] = cfg["ProcessingConfiguration"]
        if target.file_extension:
            out["FileExtension"] = target.file_extension
    return out


class FirehoseService:
    def __init__(
        self, store: Store, objects: ObjectStore, clock: Clock, region: str, account: str, invoke: Invoke | None = None
    ) -> None:
        self.invoke = invoke
        self.store = store
        self.objects = objects
        self.clock = clock
        self.region = region
        self.account = account
        self.streams: dict[str, DeliveryStream] = {}
        for row in store.query("SELECT name, state FROM firehose_streams"):
            self.streams[row["name"]] = DeliveryStream.from_state(row["name"], row["state"])
        for row in store.query("SELECT seq, stream, data, arrival_ms FROM firehose_records ORDER BY seq"):
            stream = self.streams.get(row["stream"])
            if stream is not None:
                stream.pending.append(Pending(row["seq"], bytes(row["data"]), row["arrival_ms"]))
        self.flush_all()  # records buffered when the last run stopped go out now

    # ---- helpers
    def _stream(self, name: Any) -> DeliveryStream:
        stream = self.streams.get(name) if isinstance(name, str) else None
        if stream is None:
            raise FirehoseResourceNotFoundException(f"Firehose {name} under account {self.account} not found.")
        return stream

    def _save(self, stream: DeliveryStream) -> None:
        self.store.db.execute(
            "INSERT OR REPLACE INTO firehose_streams(name, state) VALUES (?,?)", (stream.name, stream.state_json())
        )

    # ---- buffering
    def _flush(self, stream: DeliveryStream, now_ms: int, *, force: bool = False) -> int:
        """Write every batch that is due; a batch's rows are deleted only after its object is on disk."""
        plan = plan_flush(stream.pending, stream.hints, now_ms, force=force)
        written = 0
        for batch in plan.batches:
            try:
                write_batch(self.objects, stream.target, stream.name, stream.version, batch)
            except (OSError, AwsError) as exc:
                # Kept buffered and durable; the next tick tries again (AWS retries S3 delivery for hours).
                log.warning("firehose %s: delivery to bucket %s failed: %s", stream.name, stream.target.bucket, exc)
                break
            seqs = [r.seq for r in batch]
            with self.store.transaction() as db:
                db.executemany("DELETE FROM firehose_records WHERE seq=?", [(s,) for s in seqs])
            done = set(seqs)
            stream.pending = [r for r in stream.pending if r.seq not in done]
            written += 1
        return written

    def flush_due(self) -> int:
        """Called on a timer: flush every buffer whose size or interval is reached."""
        now = self.clock.wall_ms()
        return sum(self._flush(s, now) for s in list(self.streams.values()) if s.pending)

    def flush_all(self) -> int:
        """Shutdown: write plain buffers now; transformed ones stay durable and are processed on the next start."""
        now = self.clock.wall_ms()
        return sum(
            self._flush(s, now, force=True) for s in list(self.streams.values()) if s.pending and s.processor is None
        )

    async def flush_due_async(self) -> int:
        """The timer's flush: plain streams as before, streams with a Lambda processor through their function."""
        now = self.clock.wall_ms()
        written = 0
        for stream in list(self.streams.values()):
            if not stream.pending:
                continue
            if stream.processor is None:
                written += self._flush(stream, now)
                continue
            for batch in plan_flush(stream.pending, stream.hints, now).batches:
                await self._transform_and_write(stream, batch, stream.processor)
                seqs = {r.seq for r in batch}
                with self.store.transaction() as db:
                    db.executemany("DELETE FROM firehose_records WHERE seq=?", [(s,) for s in seqs])
                stream.pending = [r for r in stream.pending if r.seq not in seqs]
                written += 1
        return written

    async def _transform_and_write(self, stream: DeliveryStream, batch: Sequence[Pending], function: str) -> None:
        """Firehose's Lambda contract: Ok records are delivered, Dropped vanish, ProcessingFailed go to the error
        prefix as JSON lines (`processing-failed/…`)."""
        request = {
            "invocationId": str(uuid.uuid4()),
            "deliveryStreamArn": stream.arn,
            "region": self.region,
            "records": [
                {
                    "recordId": str(r.seq),
                    "approximateArrivalTimestamp": r.arrival_ms,
                    "data": base64.b64encode(r.data).decode(),
                }
                for r in batch
            ],
        }
        outcome: dict[str, dict[str, Any]] = {}
        error = "Lambda.FunctionError"
        message = "the transformation function failed"
        if self.invoke is None:
            message = "no Lambda service to run the transformation"
        else:
            try:
                payload, function_error = await self.invoke(function, json.dumps(request).encode())
                if function_error:
                    message = payload.decode(errors="replace")[:500]
                else:
                    outcome = {str(r.get("recordId")): r for r in json.loads(payload).get("records", [])}
            except (AwsError, ValueError, AttributeError) as exc:
                message = str(exc)
        delivered: list[Pending] = []
        failed: list[tuple[Pending, str, str]] = []
        for record in batch:
            result = outcome.get(str(record.seq))
            if result is None:
                failed.append(
                    (
                        record,
                        error if not outcome else "Lambda.MissingRecordId",
                        message if not outcome else "the function returned no result for this record",
                    )
                )
            elif result.get("result") == "Ok":
                try:
                    delivered.append(Pending(record.seq, base64.b64decode(result.get("data") or ""), record.arrival_ms))
                except ValueError:
                    failed.append((record, "Lambda.InvalidData", "the returned data is not base64"))
            elif result.get("result") == "Dropped":
                continue
            else:
                failed.append((record, "Lambda.ProcessingFailed", "the function marked the record ProcessingFailed"))
        if delivered:
            write_batch(self.objects, stream.target, stream.name, stream.version, delivered)
        if failed:
            now = self.clock.wall_ms()
            lines = [
                json.dumps(
                    {
                        "attemptsMade": 1,
                        "arrivalTimestamp": r.arrival_ms,
                        "errorCode": code,
                        "errorMessage": text,
                        "attemptEndingTimestamp": now,
                        "rawData": base64.b64encode(r.data).decode(),
                        "lambdaArn": function,
                    }
                )
                for r, code, text in failed
            ]
            key = error_key(
                str(stream.destination.get("ErrorOutputPrefix") or ""),
                "processing-failed",
                stream.name,
                stream.version,
                failed[0][0].arrival_ms,
                str(uuid.uuid4()),
            )
            self.objects.put(stream.target.bucket, key, ("\n".join(lines) + "\n").encode())

    def next_due_ms(self) -> int | None:
        dues = [d for s in self.streams.values() if (d := due_at(s.pending, s.hints)) is not None]
        return min(dues) if dues else None

    # ---- delivery streams
    def create_delivery_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("DeliveryStreamName")
        if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{name}' at 'deliveryStreamName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ (1 to 64 characters)"
            )
        kind = params.get("DeliveryStreamType") or "DirectPut"
        if kind != "DirectPut":
            raise _unsupported(f"DeliveryStreamType {kind}")
        for other in OTHER_DESTINATIONS:
            if params.get(other) is not None:
                raise _unsupported(other.removesuffix("Configuration"))
        extended_cfg = params.get("ExtendedS3DestinationConfiguration")
        plain_cfg = params.get("S3DestinationConfiguration")
        if (extended_cfg is None) == (plain_cfg is None):
            raise InvalidArgumentException(
                "Exactly one of ExtendedS3DestinationConfiguration or S3DestinationConfiguration is required"
            )
        cfg = extended_cfg if extended_cfg is not None else plain_cfg
        if not isinstance(cfg, dict):
            raise InvalidArgumentException("The destination configuration must be an object")
        if extended_cfg is not None:
            _check_extended_features(cfg)
        hints, target = _parse_destination(cfg)
        if name in self.streams:
            raise FirehoseResourceInUseException(f"Firehose {name} under accountId {self.account} already exists")
        arn = f"arn:aws:firehose:{self.region}:{self.account}:deliverystream/{name}"
        stream = DeliveryStream(
            name,
            arn,
            self.clock.wall_ms(),
            _description(cfg, hints, target, extended_cfg is not None),
            extended_cfg is not None,
            hints,
            target,
        )
        with self.store.transaction():
            self._save(stream)
        self.streams[name] = stream
        return {"DeliveryStreamARN": arn}

    def describe_delivery_stream(self, name: Any) -> dict[str, Any]:
        stream = self._stream(name)
        destination: dict[str, Any] = {
            "DestinationId": "destinationId-000000000001",
            "S3DestinationDescription": {
                k: v
                for k, v in stream.destination.items()
                if k not in ("S3BackupMode", "ProcessingConfiguration", "FileExtension")
            },
        }
        if stream.extended:
            destination["ExtendedS3DestinationDescription"] = stream.destination
        return {
            "DeliveryStreamDescription": {
                "DeliveryStreamName": stream.name,
                "DeliveryStreamARN": stream.arn,
                "DeliveryStreamStatus": "ACTIVE",
                "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
                "DeliveryStreamType": "DirectPut",
                "VersionId": str(stream.version),
                "CreateTimestamp": stream.created_ms / 1000,
                "Destinations": [destination],
                "HasMoreDestinations": False,
            }
        }

    def list_delivery_streams(self, limit: Any = None, kind: Any = None, exclusive_start: Any = None) -> dict[str, Any]:
        size = 10 if limit is None else limit
        if not isinstance(size, int) or not 1 <= size <= 10000:
            raise InvalidArgumentException("Limit must be between 1 and 10000")
        names = sorted(
            n for n in self.streams if (exclusive_start is None or n > exclusive_start) and kind in (None, "DirectPut")
        )
        return {"DeliveryStreamNames": names[:size], "HasMoreDeliveryStreams": len(names) > size}

    def delete_delivery_stream(self, name: Any) -> None:
        stream = self._stream(name)
        self._flush(stream, self.clock.wall_ms(), force=True)  # hand over what was accepted before it goes
        with self.store.transaction() as db:
            db.execute("DELETE FROM firehose_records WHERE stream=?", (stream.name,))
            db.execute("DELETE FROM firehose_streams WHERE name=?", (stream.name,))
        del self.streams[stream.name]

    # ---- records
    def put_records(self, name: Any, records: list[bytes]) -> list[str]:
        """Commit `records` (acknowledged = durable), buffer them, flush what is due; returns their RecordIds."""
        stream = self._stream(name)
        for data in records:
            if len(data) > MAX_RECORD_BYTES:
                raise InvalidArgumentException(
                    f"Record size {len(data)} exceeds the maximum of {MAX_RECORD_BYTES} bytes (1,000 KiB)"
                )
        now = self.clock.wall_ms()
        added: list[Pending] = []
        with self.store.transaction() as db:
            for data in records:
                cursor = db.execute(
                    "INSERT INTO firehose_records(stream, data, arrival_ms) VALUES (?,?,?)", (stream.name, data, now)
                )
                added.append(Pending(int(cursor.lastrowid or 0), data, now))
        stream.pending.extend(added)
        if stream.processor is None:
            self._flush(stream, now)  # transformed streams are flushed by the timer, which can await the Lambda
        return [f"{uuid.uuid4().hex}{p.seq:016x}" for p in added]

    def put_record(self, name: Any, data: bytes) -> dict[str, Any]:
        return {"RecordId": self.put_records(name, [data])[0], "Encrypted": False}

    def put_record_batch(self, name: Any, records: list[bytes]) -> dict[str, Any]:
        self._stream(name)
        if not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise InvalidArgumentException(f"Records must contain between 1 and {MAX_BATCH_RECORDS} entries")
        total = sum(len(r) for r in records)
        if total > MAX_BATCH_BYTES:
            raise InvalidArgumentException(f"Records size {total} exceeds the maximum of {MAX_BATCH_BYTES} bytes")
        ids = self.put_records(name, records)
        return {"FailedPutCount": 0, "Encrypted": False, "RequestResponses": [{"RecordId": i} for i in ids]}
