"""Turn a flushed batch into one S3 object: records concatenated as-is (no delimiter), optionally GZIP."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.sinks.firehose.buffer import Pending, extension_for, object_key
from gateway.sinks.s3 import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class S3Target:
    """Where and how a delivery stream writes: the bucket, key prefix, compression and object suffix."""

    bucket: str
    prefix: str
    compression: str
    file_extension: str | None = None


def encode(records: Sequence[Pending], compression: str) -> bytes:
    body = b"".join(r.data for r in records)
    if compression == "GZIP":
        return gzip.compress(body, mtime=0)
    return body


def write_batch(
    objects: ObjectStore, target: S3Target, stream: str, version: int, records: Sequence[Pending]
) -> ObjectInfo:
    """Write one object for `records`; its time path comes from the oldest record's arrival."""
    key = object_key(
        target.prefix,
        stream,
        version,
        records[0].arrival_ms,
        str(uuid.uuid4()),
        extension_for(target.compression, target.file_extension),
    )
    return objects.put(target.bucket, key, encode(records, target.compression))
