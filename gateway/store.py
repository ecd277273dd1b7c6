"""The one SQLite database: connection, schema migrations and transactions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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


class Store:
    """A SQLite database in WAL mode with numbered migrations."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what `transaction()` spans.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self._migrate()

    def _migrate(self) -> None:
        current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block atomically; nested blocks join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
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
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
        return row

    def close(self) -> None:
        self.db.close()
