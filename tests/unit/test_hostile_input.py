"""Pure parts of the hostile-input defences: request JSON, shadow documents with lone surrogates, member types, the
rate-limited log line, the data dir lock, the database's file modes and a COMMIT that fails."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway import jsonutil
from gateway.api.model import WrongTypeError, load_service, validate_input
from gateway.datadir import DataDirInUse, DataDirLock
from gateway.netguard import CappedAccept, EveryOnceASecond, descriptor_budget
from gateway.shadow.document import parse_get_or_delete, parse_update
from gateway.shadow.exceptions import ShadowRejected
from gateway.store import Store


@pytest.mark.parametrize(
    "body",
    [b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 2000 + b"]" * 2000, b'{"x":"\\ud800"}', b"\xff", b"NaN"],
)
def test_untrusted_json_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        jsonutil.loads_body(body)


def test_ordinary_json_still_parses() -> None:
    assert jsonutil.loads_body(b'{"a":[1,2.5,"\\u00e9",null,true]}') == {"a": [1, 2.5, "é", None, True]}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"state":{"reported":{"x":"\\ud800"}},"clientToken":"tok"}',
        b'{"state":{"reported":{"\\udfff":1}},"clientToken":"tok"}',
        b'{"state":{"desired":{"x":["a","\\ud800b"]}},"clientToken":"tok"}',
    ],
)
def test_a_lone_surrogate_in_a_shadow_update_is_a_400_with_the_token(payload: bytes) -> None:
    with pytest.raises(ShadowRejected) as info:
        parse_update(payload)
    assert (info.value.code, info.value.client_token) == (400, "tok")


def test_a_lone_surrogate_token_is_not_echoed() -> None:
    with pytest.raises(ShadowRejected) as info:
        parse_get_or_delete(b'{"clientToken":"\\ud800"}')
    assert (info.value.code, info.value.client_token) == (400, None)


def test_paired_surrogate_escapes_are_text() -> None:
    assert parse_update(b'{"state":{"reported":{"x":"\\ud83d\\ude00"}}}').state == {"reported": {"x": "😀"}}


def test_wrong_member_types_are_told_apart_from_missing_members() -> None:
    kinesis = load_service("kinesis")
    with pytest.raises(WrongTypeError):
        validate_input(kinesis, "PutRecordInput", {"StreamName": ["x"]}, required=False)
    with pytest.raises(WrongTypeError):
        validate_input(kinesis, "PutRecordsInput", {"Records": [{"Data": "AA==", "PartitionKey": 5}]}, required=False)
    validate_input(kinesis, "PutRecordInput", {"StreamName": "s"}, required=False)  # missing members left to handlers


def test_a_recurring_event_is_logged_once_a_second_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    report = EveryOnceASecond(logging.getLogger("t"), logging.WARNING, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for _ in range(1000):
            report("accept failed: %s", "EMFILE")
        now[0] += 1.0
        report("accept failed: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: EMFILE (1 time(s) since the last report)",
        "accept failed: EMFILE (1000 time(s) since the last report)",
    ]
    assert report.total == 1001


def test_descriptor_budget_keeps_a_reserve() -> None:
    assert descriptor_budget(1024) == 1024 - 102
    assert descriptor_budget(256) == 256 - 64
    assert descriptor_budget(10) == 16


def test_a_second_lock_on_the_data_dir_names_the_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "data")
    first.acquire()
    try:
        with pytest.raises(DataDirInUse, match=rf"data dir .*data is in use by pid {os.getpid()}$"):
            DataDirLock(tmp_path / "data").acquire()
    finally:
        first.release()
    again = DataDirLock(tmp_path / "data")
    again.acquire()  # released: free again
    again.release()


def test_the_database_and_its_wal_are_private(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    sqlite3.connect(old).close()
    old.chmod(0o644)  # what earlier versions created
    for path in (tmp_path / "new.db", old):
        store = Store(path)
        with store.transaction() as db:
            db.execute("INSERT INTO topic_rules(name, payload, created_ms) VALUES ('r', '{}', 0)")
        for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert stat.S_IMODE(each.stat().st_mode) == 0o600, each
        store.close()


def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.db.executescript(
        """
        CREATE TABLE parent(id INTEGER PRIMARY KEY);
        CREATE TABLE child(id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
        """
    )
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO child VALUES (1)")  # only found out at COMMIT
    assert not store.db.in_transaction
    with store.transaction() as db:  # the next one starts clean
        db.execute("INSERT INTO parent VALUES (1)")
    assert store.one("SELECT count(*) FROM child")[0] == 0  # type: ignore[index]
    store.close()


def test_exposing_the_insecure_port_by_name_warns_loudly(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import _check_insecure_exposure

    _check_insecure_exposure("127.0.0.1", 1883, False)  # loopback: nothing to say
    _check_insecure_exposure("0.0.0.0", None, False)  # no plain port: nothing to say
    assert capsys.readouterr().err == ""
    _check_insecure_exposure("0.0.0.0", 1883, True)
    assert "WARNING" in capsys.readouterr().err


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.busy = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


async def _capped_accept_scenario() -> None:
    made: list[_Proto] = []

    def factory() -> _Proto:
        made.append(_Proto())
        return made[-1]

    accept = CappedAccept(factory, 3, "test", lambda p: None if p.busy else 0)  # type: ignore[attr-defined]
    port = await accept.start("127.0.0.1", 0)

    async def connect() -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        return writer

    writers = [await connect() for _ in range(3)]
    made[0].busy = True  # serving a request: never closed for a newcomer
    writers.append(await connect())
    await asyncio.wait_for(made[1].lost, 2)  # the oldest idle one made room
    assert accept.connections == 3 and accept.evicted == 1
    for proto in made[2:]:
        proto.busy = True
    writers.append(await connect())  # all busy: refused, nothing else closed
    assert accept.refused == 1 and accept.connections == 3 and len(made) == 4
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.05)
    assert accept.connections == 0
    accept.close()


def test_a_capped_listener_makes_room_by_closing_the_oldest_idle_connection() -> None:
    asyncio.run(_capped_accept_scenario())


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    import resource

    from gateway.netguard import raise_descriptor_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        raised = raise_descriptor_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert hard in (raised, resource.RLIM_INFINITY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
