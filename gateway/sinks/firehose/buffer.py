"""Pure Firehose buffering: when a delivery stream's buffer flushes, and the S3 key each object gets (reference §10).

Time is always passed in; nothing here reads a clock, touches the disk or the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MIB = 1024 * 1024
DEFAULT_SIZE_MB = 5
DEFAULT_INTERVAL_S = 300
SIZE_MB_RANGE = (1, 128)
INTERVAL_S_RANGE = (0, 900)


@dataclass(frozen=True)
class BufferingHints:
    """Flush when the buffer holds `size_mb` MiB or its oldest record is `interval_s` old, whichever comes first."""

    size_mb: int = DEFAULT_SIZE_MB
    interval_s: int = DEFAULT_INTERVAL_S

    @property
    def size_bytes(self) -> int:
        return self.size_mb * MIB

    def to_json(self) -> dict[str, int]:
        return {"SizeInMBs": self.size_mb, "IntervalInSeconds": self.interval_s}


@dataclass(frozen=True)
class Pending:
    """One accepted record waiting in the buffer: `seq` is its durable row, `arrival_ms` when it was accepted."""

    seq: int
    data: bytes
    arrival_ms: int


@dataclass(frozen=True)
class FlushPlan:
    """Batches to write now, one object each and in order, and the records that stay buffered."""

    batches: tuple[tuple[Pending, ...], ...]
    remaining: tuple[Pending, ...]


def due_at(pending: Sequence[Pending], hints: BufferingHints) -> int | None:
    """Wall time (ms) at which the interval rule flushes the buffer; None when it is empty."""
    if not pending:
        return None
    return pending[0].arrival_ms + hints.interval_s * 1000


def plan_flush(pending: Sequence[Pending], hints: BufferingHints, now_ms: int, *, force: bool = False) -> FlushPlan:
    """Cut the buffer into objects: full-size batches go now; the tail goes when its interval is up (or `force`).

    A batch never exceeds the size hint unless a single record does (records are at most 1,000 KiB, the
    smallest hint is 1 MiB, so in practice never). Interval 0 means every call flushes everything.
    """
    limit = hints.size_bytes
    batches: list[tuple[Pending, ...]] = []
    current: list[Pending] = []
    size = 0
    for record in pending:
        if current and size + len(record.data) > limit:
            batches.append(tuple(current))
            current, size = [], 0
        current.append(record)
        size += len(record.data)
        if size >= limit:
            batches.append(tuple(current))
            current, size = [], 0
    if current:
        deadline = due_at(current, hints)
        if force or (deadline is not None and now_ms >= deadline):
            batches.append(tuple(current))
            current = []
    return FlushPlan(tuple(batches), tuple(current))


def _utc(when_ms: int) -> datetime:
    return datetime.fromtimestamp(when_ms / 1000, tz=UTC)


def object_key(prefix: str, stream: str, version: int, when_ms: int, unique: str, extension: str = "") -> str:
    """`<prefix>YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<unique><extension>` in UTC (§10)."""
    t = _utc(when_ms)
    return f"{prefix}{t:%Y/%m/%d/%H}/{stream}-{version}-{t:%Y-%m-%d-%H-%M-%S}-{unique}{extension}"


def error_key(
    error_prefix: str, kind: str, stream: str, version: int, when_ms: int, unique: str, extension: str = ""
) -> str:
    """Where failed records go: `<error prefix><kind>/YYYY/MM/DD/HH/…` (kind e.g. `processing-failed`; unconfirmed)."""
    return object_key(f"{error_prefix}{kind}/", stream, version, when_ms, unique, extension)


def extension_for(compression: str, file_extension: str | None = None) -> str:
    """The object suffix: an explicit FileExtension wins, else `.gz` for GZIP (unconfirmed), else none."""
    if file_extension:
        return file_extension
    return ".gz" if compression == "GZIP" else ""
