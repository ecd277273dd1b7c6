"""Store.commit_soon: the one group-commit owner (one COMMIT per loop turn, one failure rule)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.store import Store

Write = Callable[[sqlite3.Connection], object]


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.db")
    # A child row without its parent breaks a deferred foreign key: found out only at COMMIT.
    store.db.executescript(
        """
        CREATE TABLE parent(id INTEGER PRIMARY KEY);
        CREATE TABLE child(id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TABLE a(v TEXT);
        CREATE TABLE b(v TEXT);
        """
    )
    return store


def _insert(table: str, value: object) -> Write:
    return lambda db: db.execute(f"INSERT INTO {table} VALUES (?)", (value,)).rowcount


def _rows(store: Store, table: str) -> list[object]:
    return [row[0] for row in store.query(f"SELECT * FROM {table} ORDER BY rowid")]


def test_writes_of_different_services_in_one_turn_commit_once(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def turn() -> list[object]:
        futures = [store.commit_soon(_insert("a", "kinesis")), store.commit_soon(_insert("b", "sqs"))]
        futures.append(store.commit_soon(_insert("a", "shadow")))
        return list(await asyncio.gather(*futures))

    before = store.commits
    assert asyncio.run(turn()) == [1, 1, 1]  # each waiter gets what its write returned
    assert store.commits == before + 1
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert _rows(reopened, "a") == ["kinesis", "shadow"] and _rows(reopened, "b") == ["sqs"]
    reopened.close()


def test_a_failed_commit_fails_every_waiter_of_its_turn_and_the_next_turn_succeeds(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def scenario() -> None:
        doomed = store.commit_soon(_insert("child", 7))  # fails at COMMIT, not when written
        fine = store.commit_soon(_insert("a", "same turn"))
        for future in (doomed, fine):
            with pytest.raises(sqlite3.IntegrityError):
                await future
        assert _rows(store, "a") == [] and _rows(store, "child") == []  # nothing of the turn is stored
        await store.commit_soon(_insert("a", "next turn"))

    asyncio.run(scenario())
    assert _rows(store, "a") == ["next turn"]
    assert not store.db.in_transaction
    store.close()


def test_a_write_that_raises_fails_only_its_own_waiter(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def bad(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO a VALUES ('half done')")
        raise ValueError("bad input")

    async def scenario() -> None:
        first = store.commit_soon(_insert("a", "before"))
        broken = store.commit_soon(bad)
        last = store.commit_soon(_insert("b", "after"))
        assert await first == 1 and await last == 1
        with pytest.raises(ValueError, match="bad input"):
            await broken

    asyncio.run(scenario())
    assert _rows(store, "a") == ["before"] and _rows(store, "b") == ["after"]
    store.close()


def test_a_synchronous_transaction_commits_earlier_writes_first(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def scenario() -> None:
        pending = store.commit_soon(_insert("a", 1))
        with store.transaction() as db:  # e.g. an HTTP request answered synchronously in the same turn
            assert [r[0] for r in db.execute("SELECT v FROM a")] == ["1"]
            db.execute("INSERT INTO a VALUES (2)")
        assert pending.done() and pending.result() == 1

    asyncio.run(scenario())
    assert _rows(store, "a") == ["1", "2"]
    store.close()


def test_writes_made_while_a_commit_is_in_flight_form_the_next_group(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def scenario() -> None:
        first = store.commit_soon(_insert("a", "first"))
        await asyncio.sleep(0)  # the first group is written and its COMMIT handed to the writer thread
        later = [store.commit_soon(_insert("a", n)) for n in range(5)]
        await asyncio.gather(first, *later)

    before = store.commits
    asyncio.run(scenario())
    assert store.commits - before <= 2
    assert len(_rows(store, "a")) == 6
    store.close()


def test_a_flush_after_a_failed_commit_fails_the_writes_registered_since(tmp_path: Path) -> None:
    """A synchronous transaction that flushes while a failed COMMIT is in flight must not store the writes made
    since: their services have not yet heard of the failure and may build on memory it rolled back."""
    store = _store(tmp_path)

    async def scenario() -> None:
        doomed = store.commit_soon(_insert("child", 7))
        await asyncio.sleep(0)  # written, its COMMIT handed to the writer thread
        since = store.commit_soon(_insert("a", "built on the failed turn"))
        with store.transaction() as db:  # flushes: settles the failed COMMIT, then the pending writes
            db.execute("INSERT INTO b VALUES ('synchronous')")
        for future in (doomed, since):
            with pytest.raises(sqlite3.IntegrityError):
                await future

    asyncio.run(scenario())
    assert _rows(store, "a") == [] and _rows(store, "b") == ["synchronous"]
    store.close()


def test_a_kinesis_record_and_an_sqs_message_of_one_turn_fail_together_and_are_not_kept(tmp_path: Path) -> None:
    from gateway.clock import ManualClock
    from gateway.sinks.kinesis.service import KinesisService
    from gateway.sinks.sqs.service import SendEntry, SqsService

    store = _store(tmp_path)
    clock = ManualClock()
    kinesis = KinesisService(store, clock, "us-east-1", "123456789012", enforce_limits=False)
    sqs = SqsService(store, clock, "us-east-1", "123456789012", "127.0.0.1", lambda: 4566)
    kinesis.create_stream("k", 1)
    url = sqs.create_queue("q")["QueueUrl"]
    # The doomed record breaks a deferred foreign key, so the turn's one COMMIT fails for both services.
    store.db.execute(
        "CREATE TRIGGER poison AFTER INSERT ON kinesis_records WHEN NEW.partition_key = 'doomed' "
        "BEGIN INSERT INTO child VALUES (1); END"
    )

    async def scenario() -> None:
        record = asyncio.ensure_future(kinesis.put_record_durable("k", b"lost", "doomed"))
        sqs.send_message(url, SendEntry(body="lost too"))
        with pytest.raises(sqlite3.IntegrityError):
            await sqs.durable()
        with pytest.raises(sqlite3.IntegrityError):
            await record
        assert await sqs.receive_message(url, 10) == []  # undone in memory as well
        await kinesis.put_record_durable("k", b"kept", "fine")
        sqs.send_message(url, SendEntry(body="kept"))
        await sqs.durable()
        assert [m.body for m in await sqs.receive_message(url, 10)] == ["kept"]

    asyncio.run(scenario())
    assert [bytes(r[0]) for r in store.query("SELECT data FROM kinesis_records")] == [b"kept"]
    store.close()


def test_a_waiter_that_is_cancelled_does_not_cancel_the_commit_it_shares(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def scenario() -> None:
        shared = store.commit_soon(_insert("a", "shared"))

        async def waiter() -> object:
            return await shared

        impatient, patient = asyncio.ensure_future(waiter()), asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # both wait on the shared future now
        impatient.cancel()  # as a rule action's timeout does
        assert await patient == 1 and not shared.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await impatient

    asyncio.run(scenario())
    assert _rows(store, "a") == ["shared"]
    store.close()


@pytest.mark.parametrize("count", [0, 1, 3, 4, 37, 300, 600])
def test_insert_rows_writes_every_row_once_in_order(tmp_path: Path, count: int) -> None:
    from gateway.store import insert_rows

    store = _store(tmp_path)
    store.db.execute("CREATE TABLE pairs(n INTEGER, s TEXT)")
    with store.transaction() as db:
        insert_rows(db, "INSERT INTO pairs(n, s) VALUES ", [(n, f"r{n}") for n in range(count)])
    assert [tuple(r) for r in store.query("SELECT n, s FROM pairs ORDER BY rowid")] == [
        (n, f"r{n}") for n in range(count)
    ]
    store.close()


def test_off_loop_parts_run_in_the_group_and_one_that_raises_fails_only_its_own_waiter(tmp_path: Path) -> None:
    import threading

    from gateway.store import OffLoop

    store = _store(tmp_path)
    threads: list[str] = []

    def bulk(value: str) -> Write:
        def write(db: sqlite3.Connection) -> OffLoop:
            def run(writer: sqlite3.Connection) -> None:
                threads.append(threading.current_thread().name)
                writer.execute("INSERT INTO a VALUES (?)", (value,))
                if value == "bad":
                    writer.execute("INSERT INTO nowhere VALUES (1)")  # raises: its own insert is undone

            return OffLoop(run)

        return write

    async def turn() -> list[object]:
        futures = [store.commit_soon(bulk("one")), store.commit_soon(bulk("bad")), store.commit_soon(_insert("b", "x"))]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    one, bad, other = asyncio.run(turn())
    assert one is None and other == 1
    assert isinstance(bad, sqlite3.OperationalError)
    assert _rows(store, "a") == ["one"] and _rows(store, "b") == ["x"]
    assert threads and all(name.startswith("edgesim-commit") for name in threads)  # off the loop thread
    store.close()


def test_off_loop_parts_of_a_failed_commit_store_nothing(tmp_path: Path) -> None:
    from gateway.store import OffLoop

    store = _store(tmp_path)

    def bulk(db: sqlite3.Connection) -> OffLoop:
        return OffLoop(lambda writer: writer.execute("INSERT INTO a VALUES ('lost')"))

    async def turn() -> list[object]:
        doomed = store.commit_soon(_insert("child", 7))  # breaks the COMMIT of the whole group
        return list(await asyncio.gather(store.commit_soon(bulk), doomed, return_exceptions=True))

    results = asyncio.run(turn())
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
    assert _rows(store, "a") == []
    store.close()


def test_kinesis_and_sqs_rows_survive_the_move_to_rowid_tables(tmp_path: Path) -> None:
    from gateway.store import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    before = next(i for i, script in enumerate(MIGRATIONS) if "kinesis_records_rowid" in script)
    for number, script in enumerate(MIGRATIONS[:before], start=1):
        old.executescript(script)
        old.execute(f"PRAGMA user_version={number}")
    seq = "49" + "0" * 53 + "1"
    old.execute("INSERT INTO kinesis_records VALUES ('s', 0, ?, 'k', x'01', 5)", (seq,))
    old.execute("INSERT INTO sqs_messages VALUES ('q', 'm-1', '[\"m-1\"]')")
    old.close()
    store = Store(path)
    assert [
        tuple(r) for r in store.query("SELECT stream, shard, partition_key, data, arrival_ms FROM kinesis_records")
    ] == [("s", 0, "k", b"\x01", 5)]
    assert [tuple(r) for r in store.query("SELECT queue, message_id, state FROM sqs_messages")] == [
        ("q", "m-1", '["m-1"]')
    ]
    tables = {r["name"]: r["sql"] for r in store.query("SELECT name, sql FROM sqlite_master WHERE type='table'")}
    assert "WITHOUT ROWID" not in tables["kinesis_records"] and "WITHOUT ROWID" not in tables["sqs_messages"]
    with pytest.raises(sqlite3.IntegrityError):  # the old primary keys still hold, as unique indexes
        store.db.execute("INSERT INTO sqs_messages VALUES ('q', 'm-1', '[]')")
    store.close()
