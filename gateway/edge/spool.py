"""The edge core's cloud-bound spool: which messages it keeps (pure) and a durable SQLite queue of them (shell).

Reference §11.2. Sizes count payload bytes only. Two behaviours when the spool is full:

* ``reject_new`` (default) is what the nucleus code does (``Spool.java``): QoS 0 messages are evicted oldest-first
  until the new one fits; if it still does not fit, the new message is rejected, and the QoS 0 messages already
  evicted stay evicted.
* ``drop_oldest`` is what the nucleus documentation describes: the oldest messages of any QoS are evicted until the new
  one fits; if even that cannot make room (messages in flight are never evicted), nothing is evicted and the new message
  is rejected.

A message larger than the whole spool is always rejected, and while offline a QoS 0 message is rejected up front
unless ``keep_qos0_when_offline``; when the link drops, queued QoS 0 messages go too (``connection_interrupted``).

The spool is the `spool` table of the edge core's store (gateway.store: one migration list, one commit owner).

Drain order: a drain loop calls ``peek(n)`` (oldest pending first, in-flight ones skipped), ``mark_in_flight`` on what
it publishes, then ``ack`` each message once the cloud has it (PUBACK for QoS 1, the write for QoS 0) or ``release`` it
on failure, which puts it back at its original place so the next ``peek`` returns it before anything newer. In-flight
marks live in memory only: after a restart every stored message is pending again, so QoS 1 is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple

from gateway.errors import InvalidRequestException
from gateway.store import Store

log = logging.getLogger("edgesim.edge.spool")

DEFAULT_MAX_SIZE_BYTES = 2_621_440  # mqtt.spooler.maxSizeInBytes default: 2.5 MB (reference §11.2)

# The nucleus's own wording for each refusal (reference §11.2 [P:GG]).
REASON_TOO_LARGE = "Message is larger than the size of message spool."
REASON_FULL = "Message spool is full. Message could not be added."
REASON_QOS0_OFFLINE = "Will not store the publish request with Qos 0 when MqttClient is offline"

OnFull = Literal["reject_new", "drop_oldest"]
_ON_FULL: tuple[OnFull, ...] = ("reject_new", "drop_oldest")


@dataclass(frozen=True)
class SpoolPolicy:
    """The spooler settings of the nucleus (`mqtt.spooler`), plus which full-spool behaviour to simulate."""

    max_size_bytes: int = DEFAULT_MAX_SIZE_BYTES
    keep_qos0_when_offline: bool = False
    on_full: OnFull = "reject_new"

    def __post_init__(self) -> None:
        if self.max_size_bytes < 1:
            raise InvalidRequestException(f"maxSizeInBytes must be positive, got {self.max_size_bytes}")
        if self.on_full not in _ON_FULL:
            raise InvalidRequestException(f"on_full must be one of {', '.join(_ON_FULL)}, got {self.on_full!r}")


class SpoolEntry(NamedTuple):
    """What admission needs to know about a stored message."""

    seq: int
    size: int
    qos: int


@dataclass(frozen=True)
class Admission:
    """Whether the new message goes in, why not, and which stored messages to evict (applied either way)."""

    accepted: bool
    reason: str | None = None
    evict: tuple[int, ...] = ()


def admit(
    entries: Iterable[SpoolEntry], total_size: int, policy: SpoolPolicy, *, online: bool, size: int, qos: int
) -> Admission:
    """Decide whether a new message of `size` payload bytes and `qos` joins the spool.

    `entries` are the evictable messages, oldest first (the caller leaves out those in flight); `total_size` counts
    every stored message, in flight or not. `entries` is read only as far as eviction needs, so it may be lazy.
    """
    # The nucleus checks the connection before the spool: an offline QoS 0 message never reaches it.
    if qos == 0 and not online and not policy.keep_qos0_when_offline:
        return Admission(False, REASON_QOS0_OFFLINE)
    if size > policy.max_size_bytes:
        return Admission(False, REASON_TOO_LARGE)
    excess = total_size + size - policy.max_size_bytes
    if excess <= 0:
        return Admission(True)
    any_qos = policy.on_full == "drop_oldest"
    evict: list[int] = []
    for entry in entries:
        if any_qos or entry.qos == 0:
            evict.append(entry.seq)
            excess -= entry.size
            if excess <= 0:
                return Admission(True, evict=tuple(evict))
    # Spool.java removes QoS 0 messages before it knows whether that is enough, and does not put them back.
    return Admission(False, REASON_FULL, () if any_qos else tuple(evict))


def dropped_on_interrupt(entries: Iterable[SpoolEntry], policy: SpoolPolicy) -> tuple[int, ...]:
    """Queued QoS 0 messages the nucleus drops when its connection is interrupted (unless keepQos0WhenOffline)."""
    if policy.keep_qos0_when_offline:
        return ()
    return tuple(entry.seq for entry in entries if entry.qos == 0)


@dataclass(frozen=True)
class SpooledMessage:
    """A message waiting in the spool; `seq` increases with append order and is never reused."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    enqueued_ms: int
    properties: bytes | None = None  # the message's MQTT 5 property block, as encoded for the cloud link


@dataclass(frozen=True)
class SpoolResult:
    """The outcome of `Spool.append`: the new seq if accepted, else the refusal text; evictions either way."""

    accepted: bool
    seq: int | None
    reason: str | None
    evicted: tuple[int, ...]


@dataclass
class SpoolStats:
    """Counters since this `Spool` opened: `evicted` counts every eviction or drop, `evicted_qos0` the QoS 0 ones."""

    appended: int = 0
    evicted_qos0: int = 0
    evicted: int = 0
    rejected: int = 0
    acked: int = 0


_COLUMNS = "seq, topic, payload, qos, retain, enqueued_ms, properties"
_INSERT = "INSERT INTO spool(seq, topic, payload, qos, retain, enqueued_ms, properties) VALUES (?, ?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM spool WHERE seq = ?"
Row = tuple[int, str, bytes, int, int, int, "bytes | None"]


def _is_row(op: Row | tuple[int, ...]) -> bool:
    return len(op) == 7 and isinstance(op[1], str)


class _Undone(sqlite3.OperationalError):
    """Appends made on top of a group whose commit failed: they fail with it (never acknowledged)."""


class Spool:
    """A durable FIFO of cloud-bound messages in the `spool` table of a `Store` (the edge core's database). Every
    change is committed before it returns, except `append_soon`, whose appends join the store's group commit."""

    def __init__(self, store: Store | Path, policy: SpoolPolicy | None = None) -> None:
        self.policy = policy or SpoolPolicy()
        self.stats = SpoolStats()
        self._own_store = not isinstance(store, Store)
        self.store = Store(store) if isinstance(store, Path) else store
        # Changes of the open group write, in order: rows to insert, or seqs to delete.
        self._ops: list[Row | tuple[int, ...]] = []
        self._written: asyncio.Future[None] | None = None
        self._generation = 0  # bumped when a group fails: appends made before that fail with it
        self._deleting: set[int] = set()  # rows gone from the index whose delete has not committed yet
        self._load()

    def _load(self) -> None:
        rows = self.store.query("SELECT seq, length(payload), qos FROM spool ORDER BY seq")
        # seq -> entry, in seq order (seqs only grow, and dicts keep insertion order).
        self._entries: dict[int, SpoolEntry] = {seq: SpoolEntry(seq, size, qos) for seq, size, qos in rows}
        self._size = sum(entry.size for entry in self._entries.values())
        self._in_flight: set[int] = getattr(self, "_in_flight", set()) & set(self._entries)
        # seqs are given here, never reused (AUTOINCREMENT keeps its high-water mark even for deleted rows).
        top = self.store.one("SELECT seq FROM sqlite_sequence WHERE name = 'spool'")
        floor = max(int(top[0]) if top is not None else 0, max(self._entries, default=0))
        self._next_seq = max(floor + 1, getattr(self, "_next_seq", 1))

    def _apply(self, db: sqlite3.Connection, ops: list[Row | tuple[int, ...]]) -> None:
        inserts: list[Row] = []
        for op in ops:
            if _is_row(op):
                inserts.append(op)  # type: ignore[arg-type]
                continue
            if inserts:
                db.executemany(_INSERT, inserts)
                inserts = []
            db.executemany(_DELETE, [(seq,) for seq in op])
        if inserts:
            db.executemany(_INSERT, inserts)

    def _change(self, op: Row | tuple[int, ...], *, soon: bool) -> None:
        if soon:
            if self._written is None:
                deleted: list[int] = []
                self._written = self.store.commit_soon(functools.partial(self._write, self._generation, deleted))
                self._written.add_done_callback(functools.partial(self._write_done, deleted))
            if not _is_row(op):
                self._deleting.update(op)  # type: ignore[arg-type]
            self._ops.append(op)
            return
        with self.store.transaction() as db:
            self._apply(db, [op])

    def _write(self, generation: int, deleted: list[int], db: sqlite3.Connection) -> None:
        ops, self._ops, self._written = self._ops, [], None
        deleted.extend(seq for op in ops if not _is_row(op) for seq in op)  # type: ignore[misc]
        if generation != self._generation:
            raise _Undone("an earlier spool commit failed; these appends were undone with it")
        self._apply(db, ops)

    def _write_done(self, deleted: list[int], written: asyncio.Future[None]) -> None:
        self._deleting.difference_update(deleted)  # committed, or back in the index after a failure
        if written.cancelled() or written.exception() is None:
            return
        if not isinstance(written.exception(), _Undone):
            # The index may hold what the failed group added: read it again from the file, and fail the appends
            # made on top of it that are not written yet.
            self._generation += 1
            self._load()

    def flush(self) -> None:
        """Commit the open group now."""
        self.store.flush()

    def _pending(self) -> Iterator[SpoolEntry]:
        return (entry for seq, entry in self._entries.items() if seq not in self._in_flight)

    def _forget(self, seqs: Iterable[int]) -> None:
        """Drop deleted rows from the in-memory index (after their delete has committed)."""
        for seq in seqs:
            self._size -= self._entries.pop(seq).size
            self._in_flight.discard(seq)

    def _count_evicted(self, seqs: tuple[int, ...]) -> None:
        self.stats.evicted += len(seqs)
        self.stats.evicted_qos0 += sum(1 for seq in seqs if self._entries[seq].qos == 0)

    @property
    def depth(self) -> int:
        """Messages stored, in flight or not."""
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Payload bytes stored, in flight or not."""
        return self._size

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset(self._in_flight)

    def append(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        now_ms: int,
        online: bool,
        properties: bytes | None = None,
    ) -> SpoolResult:
        """Spool one message; evictions and the insert commit in one transaction before this returns."""
        return self._append(topic, payload, qos, retain, now_ms, online, properties, soon=False)

    def append_soon(
        self, topic: str, payload: bytes, qos: int, now_ms: int, online: bool, properties: bytes | None = None
    ) -> tuple[SpoolResult, asyncio.Future[None] | None]:
        """Spool one message as part of the store's group commit: the result now, and the future that is done once
        it (and the evictions it caused) committed; no future when nothing changed."""
        result = self._append(topic, payload, qos, False, now_ms, online, properties, soon=True)
        return result, self._written if result.accepted or result.evicted else None

    def _append(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        now_ms: int,
        online: bool,
        properties: bytes | None,
        *,
        soon: bool,
    ) -> SpoolResult:
        if qos not in (0, 1):
            raise InvalidRequestException(f"QoS must be 0 or 1, got {qos}")
        payload = bytes(payload)
        decision = admit(self._pending(), self._size, self.policy, online=online, size=len(payload), qos=qos)
        seq: int | None = None
        # Evictions and the insert commit together (one transaction; nested ones join it).
        with contextlib.nullcontext() if soon else self.store.transaction():
            if decision.evict:
                self._change(decision.evict, soon=soon)
            if decision.accepted:
                seq = self._next_seq
                self._change((seq, topic, payload, qos, int(retain), now_ms, properties), soon=soon)
                self._next_seq += 1
        self._count_evicted(decision.evict)
        self._forget(decision.evict)
        if seq is None:
            self.stats.rejected += 1
        else:
            self._entries[seq] = SpoolEntry(seq, len(payload), qos)
            self._size += len(payload)
            self.stats.appended += 1
        return SpoolResult(seq is not None, seq, decision.reason, decision.evict)

    def peek(self, limit: int) -> list[SpooledMessage]:
        """Up to `limit` pending messages, oldest first, leaving out those in flight. Changes nothing."""
        if limit <= 0 or not self._entries:
            return []
        # The first limit + len(in flight) + len(deleting) rows hold at least `limit` pending ones, if there are that
        # many: the file still has rows whose delete is not committed yet, which the index has forgotten.
        skip = len(self._in_flight) + len(self._deleting)
        rows = self.store.query(f"SELECT {_COLUMNS} FROM spool ORDER BY seq LIMIT ?", (limit + skip,))
        entries, in_flight = self._entries, self._in_flight
        pending = (row for row in rows if row[0] in entries and row[0] not in in_flight)
        return [
            SpooledMessage(s, t, bytes(p), q, bool(r), ms, None if props is None else bytes(props))
            for s, t, p, q, r, ms, props in pending
        ][:limit]

    def mark_in_flight(self, seqs: Iterable[int]) -> None:
        """Note messages being published: `peek` skips them and eviction leaves them alone. Unknown seqs are ignored."""
        self._in_flight.update(seq for seq in seqs if seq in self._entries)

    def release(self, seqs: Iterable[int]) -> None:
        """Make in-flight messages pending again (a publish failed or the link dropped); they keep their place."""
        self._in_flight.difference_update(seqs)

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete delivered messages in one transaction; returns how many were still stored (evicted ones are not)."""
        known = tuple(seq for seq in dict.fromkeys(seqs) if seq in self._entries)
        if known:
            self._change(known, soon=False)
            self._forget(known)
            self.stats.acked += len(known)
        return len(known)

    def ack_soon(self, seqs: Iterable[int]) -> int:
        """`ack` as part of the store's group commit (nobody waits: if it fails, the messages are pending again)."""
        known = tuple(seq for seq in dict.fromkeys(seqs) if seq in self._entries)
        if known:
            self._change(known, soon=True)
            self._forget(known)
            self.stats.acked += len(known)
        return len(known)

    def connection_interrupted(self) -> tuple[int, ...]:
        """The cloud link dropped: delete the pending QoS 0 messages the policy does not keep offline; returns them."""
        dropped = dropped_on_interrupt(self._pending(), self.policy)
        if dropped:
            self._change(dropped, soon=False)
            self._count_evicted(dropped)
            self._forget(dropped)
        return dropped

    def close(self) -> None:
        if self._own_store:
            self.store.close()
        else:
            self.store.flush()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def import_legacy_spool(store: Store, path: Path) -> int:
    """Move the messages of a spool file an earlier version kept apart (`spool.db`) into the store's spool table,
    then rename the file so it is read only once. Returns how many messages moved."""
    if not path.exists():
        return 0
    old = sqlite3.connect(str(path))
    try:
        columns = {row[1] for row in old.execute("PRAGMA table_info(spool)")}
        props = "properties" if "properties" in columns else "NULL"
        rows = old.execute(f"SELECT seq, topic, payload, qos, retain, enqueued_ms, {props} FROM spool ORDER BY seq")
        moved = rows.fetchall() if columns else []
    finally:
        old.close()
    with store.transaction() as db:
        top = db.execute("SELECT coalesce(max(seq), 0) FROM spool").fetchone()[0]
        # Keep their order ahead of anything spooled since: renumber after the store's own rows if needed.
        shift = max(0, int(top) + 1 - (moved[0][0] if moved else 0))
        db.executemany(_INSERT, [(seq + shift, *rest) for seq, *rest in moved])
    path.rename(path.with_name(path.name + ".imported"))
    log.info("moved %d spooled message(s) from %s into the edge store", len(moved), path)
    return len(moved)
