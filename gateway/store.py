"""The one SQLite database: connection, schema migrations, transactions and the one group-commit owner.

`commit_soon(write)` is how every service makes a change durable before it acknowledges it: the writes registered
in one event-loop turn run in order in ONE transaction at the end of the turn and share one COMMIT (one fsync).
The COMMIT itself runs on a writer thread (sqlite releases the GIL while it syncs), so the loop keeps taking
requests meanwhile; writes registered while a commit is in flight form the next group. One failure rule: a write
that raises fails only its own waiter (its savepoint is rolled back); a COMMIT that fails fails every waiter of the
group, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, overload

log = logging.getLogger("edgesim.store")

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]

# Each entry moves the schema one version forward; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE thing_types (
        name TEXT PRIMARY KEY,
        type_id TEXT NOT NULL,
        description TEXT,
        searchable_attributes TEXT NOT NULL DEFAULT '[]',
        deprecated INTEGER NOT NULL DEFAULT 0,
        deprecation_ms INTEGER,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE things (
        name TEXT PRIMARY KEY,
        thing_id TEXT NOT NULL,
        type_name TEXT REFERENCES thing_types(name),
        attributes TEXT NOT NULL DEFAULT '{}',
        version INTEGER NOT NULL DEFAULT 1,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE thing_groups (
        name TEXT PRIMARY KEY,
        group_id TEXT NOT NULL,
        parent TEXT REFERENCES thing_groups(name),
        description TEXT,
        attributes TEXT NOT NULL DEFAULT '{}',
        version INTEGER NOT NULL DEFAULT 1,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE thing_group_members (
        group_name TEXT NOT NULL REFERENCES thing_groups(name) ON DELETE CASCADE,
        thing_name TEXT NOT NULL REFERENCES things(name) ON DELETE CASCADE,
        PRIMARY KEY (group_name, thing_name)
    );
    CREATE TABLE ca_certificates (
        id TEXT PRIMARY KEY,
        pem TEXT NOT NULL,
        status TEXT NOT NULL,
        auto_registration INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        pem TEXT NOT NULL,
        status TEXT NOT NULL,
        ca_id TEXT,
        mode TEXT NOT NULL DEFAULT 'DEFAULT',
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    CREATE TABLE policies (
        name TEXT PRIMARY KEY,
        default_version TEXT NOT NULL,
        next_version INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    CREATE TABLE policy_versions (
        policy_name TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE,
        version_id TEXT NOT NULL,
        document TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (policy_name, version_id)
    );
    CREATE TABLE policy_targets (
        policy_name TEXT NOT NULL REFERENCES policies(name),
        target TEXT NOT NULL,
        PRIMARY KEY (policy_name, target)
    );
    CREATE INDEX policy_targets_by_target ON policy_targets(target);
    CREATE TABLE thing_principals (
        thing_name TEXT NOT NULL,
        principal TEXT NOT NULL,
        exclusive INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (thing_name, principal)
    );
    CREATE INDEX thing_principals_by_principal ON thing_principals(principal);
    """,
    """
    CREATE TABLE retained_messages (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE shadows (
        thing TEXT NOT NULL,
        name TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (thing, name)
    );
    """,
    """
    CREATE TABLE topic_rules (
        name TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'api',
        created_ms INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE kinesis_streams (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE kinesis_records (
        stream TEXT NOT NULL,
        shard INTEGER NOT NULL,
        seq TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        data BLOB NOT NULL,
        arrival_ms INTEGER NOT NULL,
        PRIMARY KEY (stream, shard, seq)
    ) WITHOUT ROWID;
    CREATE INDEX kinesis_records_by_arrival ON kinesis_records(stream, arrival_ms);
    """,
    """
    CREATE TABLE sqs_queues (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE firehose_streams (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE firehose_records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        data BLOB NOT NULL,
        arrival_ms INTEGER NOT NULL
    );
    CREATE INDEX firehose_records_by_stream ON firehose_records(stream, seq);
    """,
    """
    CREATE TABLE stream_checkpoints (
        group_name TEXT NOT NULL,
        stream TEXT NOT NULL,
        shard TEXT NOT NULL,
        sequence TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (group_name, stream, shard)
    );
    """,
    """
    CREATE TABLE lambda_functions (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        code BLOB NOT NULL
    );
    CREATE TABLE lambda_events (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        due_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX lambda_events_by_due ON lambda_events(due_ms);
    """,
    """
    CREATE TABLE lambda_event_source_mappings (
        uuid TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE sqs_messages (
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (queue, message_id)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE mqtt_sessions (
        client_id TEXT PRIMARY KEY,
        subscriptions TEXT NOT NULL,
        expires_ms INTEGER
    );
    CREATE TABLE mqtt_session_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id TEXT NOT NULL,
        head BLOB NOT NULL,
        tail BLOB NOT NULL
    );
    CREATE INDEX mqtt_session_messages_by_client ON mqtt_session_messages(client_id, seq);
    """,
    # MQTT 5: a session's protocol version, expiry interval and owner; message expiry; retained message properties.
    """
    ALTER TABLE mqtt_sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 4;
    ALTER TABLE mqtt_sessions ADD COLUMN expiry_s INTEGER NOT NULL DEFAULT 3600;
    ALTER TABLE mqtt_sessions ADD COLUMN principal TEXT;
    ALTER TABLE mqtt_session_messages ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE retained_messages ADD COLUMN properties BLOB;
    ALTER TABLE retained_messages ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
    """,
    # Rules: HTTP topic rule destinations; what cloudwatchLogs / cloudwatchMetric actions recorded.
    """
    CREATE TABLE topic_rule_destinations (
        arn TEXT PRIMARY KEY,
        document TEXT NOT NULL
    );
    CREATE TABLE cloudwatch_log_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        log_group TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX cloudwatch_log_events_by_group ON cloudwatch_log_events(log_group, seq);
    CREATE TABLE cloudwatch_datapoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        unit TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL
    );
    CREATE INDEX cloudwatch_datapoints_by_metric ON cloudwatch_datapoints(namespace, name, seq);
    """,
    # Fleet provisioning: provisioning templates and their versions; certificate ownership tokens.
    """
    CREATE TABLE provisioning_templates (
        name TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        default_version INTEGER NOT NULL,
        next_version INTEGER NOT NULL
    );
    CREATE TABLE provisioning_template_versions (
        name TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (name, version_id)
    );
    CREATE TABLE certificate_ownership_tokens (
        token TEXT PRIMARY KEY,
        certificate_id TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    """,
    # CA registration (issue 20b): a CA's certificate mode and JITP registration config; the account's registration
    # code; which registry events are enabled (all off until UpdateEventConfigurations, as on AWS).
    """
    ALTER TABLE ca_certificates ADD COLUMN mode TEXT NOT NULL DEFAULT 'DEFAULT';
    ALTER TABLE ca_certificates ADD COLUMN registration_config TEXT;
    CREATE TABLE registration_code (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        code TEXT NOT NULL
    );
    CREATE TABLE event_configurations (
        event_type TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    """,
    # IoT Jobs: jobs, their executions, targets still waiting for the rollout, templates.
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        target_selection TEXT NOT NULL,
        spec TEXT NOT NULL,
        document TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        completed_ms INTEGER,
        started_ms INTEGER,
        force_canceled INTEGER NOT NULL DEFAULT 0,
        reason_code TEXT,
        comment TEXT,
        rollout_window INTEGER NOT NULL DEFAULT 0,
        rollout_released INTEGER NOT NULL DEFAULT 0,
        notified INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE job_rollout_queue (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        thing TEXT NOT NULL,
        PRIMARY KEY (job_id, thing)
    );
    CREATE INDEX job_rollout_queue_order ON job_rollout_queue(job_id, seq);
    CREATE TABLE job_executions (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        thing TEXT NOT NULL,
        execution_number INTEGER NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        status_details TEXT NOT NULL DEFAULT '{}',
        queued_ms INTEGER NOT NULL,
        started_ms INTEGER,
        updated_ms INTEGER NOT NULL,
        step_deadline_ms INTEGER,
        retry_attempt INTEGER NOT NULL DEFAULT 0,
        force_canceled INTEGER NOT NULL DEFAULT 0,
        superseded INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, thing, execution_number)
    );
    CREATE INDEX job_executions_by_thing ON job_executions(thing, status, queued_ms);
    CREATE INDEX job_executions_by_status ON job_executions(status, job_id);
    CREATE INDEX job_executions_counts ON job_executions(job_id, superseded, status);
    CREATE TABLE job_templates (
        template_id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE custom_authorizers (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL
    );
    """,
    # Tables that were created outside this list (IF NOT EXISTS: older databases already have them), and the edge
    # core's spool, which had a database file and a migration list of its own.
    """
    CREATE TABLE IF NOT EXISTS fleet_indexing (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS dynamic_thing_groups (
        name TEXT PRIMARY KEY, query TEXT NOT NULL, index_name TEXT NOT NULL, query_version TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS gg_connectivity (thing TEXT PRIMARY KEY, info TEXT NOT NULL, version TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS gg_client_devices (
        core TEXT NOT NULL, thing TEXT NOT NULL, associated_ms INTEGER NOT NULL, PRIMARY KEY (core, thing)
    );
    CREATE TABLE IF NOT EXISTS gg_core_cas (core TEXT PRIMARY KEY, cas TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS dashboard_edge_reports (
        core TEXT PRIMARY KEY, entry TEXT NOT NULL, received_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS edge_fleet_status (id INTEGER PRIMARY KEY, sequence INTEGER);
    CREATE TABLE IF NOT EXISTS edge_shadow_sync (
        thing TEXT NOT NULL, shadow TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (thing, shadow)
    );
    CREATE TABLE IF NOT EXISTS spool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        properties BLOB
    );
    """,
    # Kinesis records in a rowid table: a WITHOUT ROWID table stores each ~300-byte record in its primary key's
    # B-tree, a dozen to a page, and inserting cost twice as much (bench/sinks.py's rule → Kinesis path).
    """
    CREATE TABLE kinesis_records_rowid (
        stream TEXT NOT NULL,
        shard INTEGER NOT NULL,
        seq TEXT NOT NULL,
        partition_key TEXT NOT NULL,
        data BLOB NOT NULL,
        arrival_ms INTEGER NOT NULL,
        UNIQUE (stream, shard, seq)
    );
    INSERT INTO kinesis_records_rowid(stream, shard, seq, partition_key, data, arrival_ms)
        SELECT stream, shard, seq, partition_key, data, arrival_ms FROM kinesis_records ORDER BY stream, shard, seq;
    DROP TABLE kinesis_records;
    ALTER TABLE kinesis_records_rowid RENAME TO kinesis_records;
    CREATE INDEX kinesis_records_by_arrival ON kinesis_records(stream, arrival_ms);
    """,
    # SQS messages likewise: their ids are random, so in a WITHOUT ROWID table every ~400-byte row went to a random
    # page of the primary key's B-tree (80 µs a row at 500 a commit, against 22 µs with the rows appended and only
    # the small unique index taking random inserts).
    """
    CREATE TABLE sqs_messages_rowid (
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        state TEXT NOT NULL,
        UNIQUE (queue, message_id)
    );
    INSERT INTO sqs_messages_rowid(queue, message_id, state) SELECT queue, message_id, state FROM sqs_messages;
    DROP TABLE sqs_messages;
    ALTER TABLE sqs_messages_rowid RENAME TO sqs_messages;
    """,
]


def private_file(path: Path) -> None:
    """Create a database file readable by its owner only (SQLite gives its -wal and -shm files the database's mode)
    and tighten one an older version created world-readable."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if each.stat().st_mode & 0o077:
                each.chmod(0o600)
        except FileNotFoundError:
            pass


class OffLoop:
    """What a group write returns to have part of its work done off the event loop: `run(db)` runs on the commit
    thread, inside the group's transaction (in a savepoint of its own), just before the COMMIT. It must touch nothing
    but `db` and what it was given: the write itself, on the loop, hands its batch over (and starts a new one).
    Bulk inserts use it, so SQLite's B-tree work (which releases the GIL) overlaps the loop's. The write's future
    resolves with None, or fails with what `run` raised (only its changes are undone)."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[sqlite3.Connection], object]) -> None:
        self.run = run


_ROWS_PER_STATEMENT = (256, 32, 4, 1)  # a few statement shapes, so the connection's statement cache keeps them


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]]) -> None:
    """`head` ("INSERT INTO t(a, b) VALUES") for every row, many rows per statement. Off the loop this matters:
    executemany gives up and takes back the GIL around every row's step, and a busy loop thread makes each take
    wait; one statement for many rows waits once."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"
    start, total = 0, len(rows)
    for size in _ROWS_PER_STATEMENT:
        if total - start < size:
            continue
        sql = head + ",".join([one] * size)
        while total - start >= size:
            db.execute(sql, [value for row in rows[start : start + size] for value in row])
            start += size


class _Commit(asyncio.Future[T]):
    """What `commit_soon` returns. Several waiters may share one (a service registers one write per turn), so a
    waiter that is cancelled (a timeout) must not cancel it for the others: `cancel()` refuses, and the cancelled
    task stops once the commit has settled. Cheaper than an `asyncio.shield` per waiter."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Group:
    """The writes of one loop turn and their waiters; `outcomes` are what each write returned (or raised)."""

    __slots__ = ("off_loop", "outcomes", "settled")

    def __init__(self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        self.outcomes = outcomes
        self.settled = False
        self.off_loop: list[int] = []  # the outcomes whose result is an OffLoop still to run

    def run_off_loop(self, db: sqlite3.Connection) -> None:
        """The OffLoop parts, each in a savepoint (on the commit thread, or inline without one)."""
        for index in self.off_loop:
            future, part, _ = self.outcomes[index]
            db.execute("SAVEPOINT o")
            try:
                part.run(db)
            except Exception as exc:
                db.execute("ROLLBACK TO o")
                self.outcomes[index] = (future, None, exc)
            else:
                self.outcomes[index] = (future, None, None)
            db.execute("RELEASE o")

    def settle(self, error: BaseException | None) -> None:
        if self.settled:
            return
        self.settled = True
        for future, result, own_error in self.outcomes:
            if future.done() or future.get_loop().is_closed():  # closed: committed at close(), nobody waits
                continue
            failure = error or own_error
            if failure is None:
                future.set_result(result)
            else:
                future.set_exception(failure)
                future.exception()  # retrieved: a waiter that was cancelled must not warn


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what `transaction()` spans.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns: acknowledged means durable
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class Store:
    """A SQLite database in WAL mode with numbered migrations.

    Two connections to one file: `db` for reads and synchronous transactions on the loop thread, and the group
    writer's, whose COMMIT (and the `OffLoop` parts of its writes) runs on a thread of its own. Readers therefore
    see only what has committed. While a group's writes run, `db` IS the writer's connection, so code called from a
    write needs no other handle.
    """

    def __init__(self, path: Path | str, *, commit_thread: bool = True) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)
        self.db = _connect(str(path))
        self._depth = 0
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._inflight: tuple[concurrent.futures.Future[None], _Group] | None = None
        self.commits = 0  # group commits done (tests and benchmarks read it)
        self._migrate()
        self._reader = self.db
        # An in-memory database is private to its connection: its group writes and commits on the loop thread.
        self._writer = self.db if memory else _connect(str(path))
        self._thread = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgesim-commit")
            if commit_thread and not memory
            else None
        )

    def _migrate(self) -> None:
        current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

    # ---- the one group-commit owner
    @overload
    def commit_soon(self, write: Callable[[sqlite3.Connection], OffLoop]) -> asyncio.Future[None]: ...

    @overload
    def commit_soon(self, write: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]: ...

    def commit_soon(self, write: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """Run `write(db)` at the end of this loop turn, in one transaction with every other write of the turn, and
        resolve the returned future with its result once that transaction has committed. It fails with the write's
        own exception if the write raised (only its changes are undone), or with the COMMIT's error if that failed
        (then every write of the group fails). The future cannot be cancelled, so many may await it. Needs a running
        loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = _Commit(loop=loop)
        self._pending.append((write, future))
        if not self._scheduled and self._inflight is None:
            self._scheduled = True
            loop.call_soon(self._start_group)
        return future

    def _start_group(self) -> None:
        self._scheduled = False
        if self._inflight is not None or not self._pending:
            return  # a commit is in flight: its completion starts this group
        group = self._write_group()
        if group is None:
            return
        if self._thread is None:
            self._settle(group, self._commit_writer(group))
            return
        loop = asyncio.get_running_loop()
        done = self._thread.submit(self._commit_writer_in_thread, group)
        self._inflight = (done, group)
        done.add_done_callback(functools.partial(_notify, loop, self._commit_done))

    def _write_group(self) -> _Group | None:
        """Run the pending writes in one open transaction on the writer's connection (on the loop thread)."""
        batch, self._pending = self._pending, []
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        off_loop: list[int] = []
        db = self._writer
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            _Group([(future, None, None) for _, future in batch]).settle(exc)
            log.error("group commit of %d write(s) could not begin: %s", len(batch), exc)
            return None
        self.db, self._depth = db, 1  # code called from a write joins this transaction
        try:
            single = len(batch) == 1
            for write, future in batch:
                # A cancelled waiter's write still runs: services hand over state they already changed in memory.
                if single:  # nothing else in the group to protect: no savepoint needed
                    try:
                        outcomes.append((future, write(db), None))
                        if type(outcomes[-1][1]) is OffLoop:
                            off_loop.append(len(outcomes) - 1)
                    except Exception as exc:
                        outcomes.append((future, None, exc))
                        _rollback(db)
                        db.execute("BEGIN IMMEDIATE")
                    continue
                db.execute("SAVEPOINT w")
                try:
                    result = write(db)
                except Exception as exc:  # this write's own failure: undo it alone
                    db.execute("ROLLBACK TO w")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                    if type(result) is OffLoop:
                        off_loop.append(len(outcomes) - 1)
                db.execute("RELEASE w")
        except sqlite3.Error as exc:  # the savepoint machinery itself failed: the whole group goes
            self.db, self._depth = self._reader, 0
            _rollback(db)
            _Group(outcomes + [(f, None, None) for _, f in batch if not any(f is o[0] for o in outcomes)]).settle(exc)
            return None
        finally:
            self.db, self._depth = self._reader, 0
        group = _Group(outcomes)
        group.off_loop = off_loop
        return group

    def _commit_writer(self, group: _Group) -> BaseException | None:
        try:
            if group.off_loop:
                group.run_off_loop(self._writer)
            self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT (a deferred constraint, a full disk) can leave the transaction open: end it.
            _rollback(self._writer)
            return exc
        return None

    def _commit_writer_in_thread(self, group: _Group) -> None:
        error = self._commit_writer(group)
        if error is not None:
            raise error

    def _commit_done(self, done: concurrent.futures.Future[None]) -> None:
        if self._inflight is None or self._inflight[0] is not done:
            return  # settled already by flush()
        group = self._inflight[1]
        self._inflight = None
        self._settle(group, done.exception())
        if self._pending and not self._scheduled:
            # After the waiters' callbacks (scheduled by settle): a service that undoes its memory after a failed
            # commit does so before its next write runs.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_group)

    def _settle(self, group: _Group, error: BaseException | None) -> None:
        if error is not None:
            waiting = sum(1 for f, _, _ in group.outcomes if not f.done())
            log.error("group commit failed; none of its %d write(s) is acknowledged: %s", waiting, error)
        else:
            self.commits += 1
        group.settle(error)

    @property
    def total_changes(self) -> int:
        """Rows changed through either connection since the store opened."""
        changes = self._reader.total_changes
        return changes if self._writer is self._reader else changes + self._writer.total_changes

    def flush(self) -> None:
        """Commit now (blocking): the commit in flight, then every write registered so far. Synchronous writers and
        readers that must see earlier writes of this turn call this first, so changes land in the order made."""
        if self._depth:
            return  # called from inside a write or a transaction: the enclosing one commits it all
        if self._inflight is not None:
            done, group = self._inflight
            self._inflight = None
            try:
                done.result()
                error: BaseException | None = None
            except BaseException as exc:
                error = exc
            self._settle(group, error)
            if error is not None and self._pending:
                # The failed group's waiters have not undone their memory yet (their callbacks run later), and the
                # writes registered since may build on it: they fail too, as _commit_done's ordering would have made
                # them see the failure first.
                batch, self._pending = self._pending, []
                _Group([(future, None, None) for _, future in batch]).settle(error)
        if self._pending:
            pending = self._write_group()
            if pending is not None:
                self._settle(pending, self._commit_writer(pending))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block atomically and commit it before returning; nested blocks (and blocks inside a group write)
        join the outer transaction. Pending group writes are committed first, so the order of changes holds."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.flush()
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error:
                # A failed COMMIT (a deferred constraint, a full disk) can leave the transaction open: end it, so
                # the next one starts clean, and let the caller fail whoever waited for this commit.
                self._rollback()
                raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        _rollback(self.db)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
        return row

    def close(self) -> None:
        if self._pending or self._inflight is not None:
            self.flush()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._writer is not self._reader:
            self._writer.close()
        self._reader.close()


def _notify(
    loop: asyncio.AbstractEventLoop,
    callback: Callable[[concurrent.futures.Future[None]], None],
    done: concurrent.futures.Future[None],
) -> None:
    """From the writer thread: hand the finished commit to the loop (unless the loop is gone: close() settles it)."""
    with suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, done)


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")
