"""The edge spool: admission rules of both full-spool policies (reference §11.2) and the durable SQLite queue."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge import (
    Admission,
    Spool,
    SpoolEntry,
    SpoolPolicy,
    admit,
    dropped_on_interrupt,
)
from gateway.edge.spool import (
    DEFAULT_MAX_SIZE_BYTES,
    REASON_FULL,
    REASON_QOS0_OFFLINE,
    REASON_TOO_LARGE,
    import_legacy_spool,
)
from gateway.errors import InvalidRequestException
from gateway.store import Store

T0 = 1_700_000_000_000
REJECT_NEW = SpoolPolicy(max_size_bytes=100)
DROP_OLDEST = SpoolPolicy(max_size_bytes=100, on_full="drop_oldest")
KEEP_QOS0 = SpoolPolicy(max_size_bytes=100, keep_qos0_when_offline=True)

# 90 of 100 bytes used: QoS 0 (40 B), QoS 1 (30 B), QoS 0 (20 B), oldest first.
MIXED = (SpoolEntry(1, 40, 0), SpoolEntry(2, 30, 1), SpoolEntry(3, 20, 0))
ALL_QOS1 = (SpoolEntry(1, 40, 1), SpoolEntry(2, 50, 1))
# 90 bytes used of which 60 are in flight, so only this one is evictable.
ONE_PENDING_QOS0 = (SpoolEntry(2, 30, 0),)
ONE_PENDING_QOS1 = (SpoolEntry(2, 30, 1),)

# (id, policy, evictable entries, total size, online, new size, new qos, expected admission)
ADMISSION_CASES = [
    ("fits", REJECT_NEW, MIXED, 90, True, 10, 1, Admission(True)),
    ("empty spool, exactly max", REJECT_NEW, (), 0, True, 100, 1, Admission(True)),
    ("reject_new evicts oldest qos0", REJECT_NEW, MIXED, 90, True, 40, 1, Admission(True, evict=(1,))),
    ("reject_new skips qos1", REJECT_NEW, MIXED, 90, True, 65, 1, Admission(True, evict=(1, 3))),
    ("reject_new, new qos0 evicts too", REJECT_NEW, MIXED, 90, True, 65, 0, Admission(True, evict=(1, 3))),
    # Spool.java: the QoS 0 messages it removed stay removed although the new one is then refused.
    ("reject_new full keeps evictions", REJECT_NEW, MIXED, 90, True, 80, 1, Admission(False, REASON_FULL, (1, 3))),
    ("reject_new all qos1", REJECT_NEW, ALL_QOS1, 90, True, 11, 1, Admission(False, REASON_FULL)),
    ("reject_new exactly max, qos1 held", REJECT_NEW, ALL_QOS1, 90, True, 100, 1, Admission(False, REASON_FULL)),
    ("drop_oldest evicts any qos", DROP_OLDEST, MIXED, 90, True, 65, 1, Admission(True, evict=(1, 2))),
    ("drop_oldest evicts one", DROP_OLDEST, MIXED, 90, True, 40, 1, Admission(True, evict=(1,))),
    ("drop_oldest all qos1", DROP_OLDEST, ALL_QOS1, 90, True, 11, 1, Admission(True, evict=(1,))),
    ("drop_oldest empties", DROP_OLDEST, MIXED, 90, True, 100, 1, Admission(True, evict=(1, 2, 3))),
    # In-flight bytes count towards the total but cannot be evicted: evicting every pending message is not enough.
    ("drop_oldest, in flight", DROP_OLDEST, ONE_PENDING_QOS1, 90, True, 80, 1, Admission(False, REASON_FULL)),
    ("reject_new, in flight", REJECT_NEW, ONE_PENDING_QOS0, 90, True, 80, 1, Admission(False, REASON_FULL, (2,))),
    ("oversize, reject_new", REJECT_NEW, (), 0, True, 101, 1, Admission(False, REASON_TOO_LARGE)),
    ("oversize, drop_oldest", DROP_OLDEST, MIXED, 90, True, 101, 1, Admission(False, REASON_TOO_LARGE)),
    ("oversize qos0 online", KEEP_QOS0, (), 0, True, 101, 0, Admission(False, REASON_TOO_LARGE)),
    ("qos0 offline dropped", REJECT_NEW, (), 0, False, 1, 0, Admission(False, REASON_QOS0_OFFLINE)),
    ("qos0 offline dropped, drop_oldest", DROP_OLDEST, MIXED, 90, False, 1, 0, Admission(False, REASON_QOS0_OFFLINE)),
    ("qos0 offline checked before size", REJECT_NEW, (), 0, False, 101, 0, Admission(False, REASON_QOS0_OFFLINE)),
    ("qos0 offline kept", KEEP_QOS0, (), 0, False, 10, 0, Admission(True)),
    ("qos0 offline kept, evicts", KEEP_QOS0, MIXED, 90, False, 40, 0, Admission(True, evict=(1,))),
    ("qos1 offline always spooled", REJECT_NEW, (), 0, False, 10, 1, Admission(True)),
    ("qos0 online", REJECT_NEW, (), 0, True, 10, 0, Admission(True)),
]


@pytest.mark.parametrize(
    ("policy", "entries", "total", "online", "size", "qos", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in ADMISSION_CASES],
)
def test_admission(
    policy: SpoolPolicy,
    entries: tuple[SpoolEntry, ...],
    total: int,
    online: bool,
    size: int,
    qos: int,
    expected: Admission,
) -> None:
    assert admit(entries, total, policy, online=online, size=size, qos=qos) == expected


def test_admission_reads_entries_lazily() -> None:
    def entries() -> Iterator[SpoolEntry]:
        yield SpoolEntry(1, 40, 0)
        raise AssertionError("read past the eviction that made room")

    assert admit(entries(), 90, REJECT_NEW, online=True, size=40, qos=1) == Admission(True, evict=(1,))


def test_defaults_and_policy_validation() -> None:
    policy = SpoolPolicy()
    assert (policy.max_size_bytes, policy.keep_qos0_when_offline, policy.on_full) == (2_621_440, False, "reject_new")
    assert int(2.5 * 1024 * 1024) == DEFAULT_MAX_SIZE_BYTES
    with pytest.raises(InvalidRequestException):
        SpoolPolicy(max_size_bytes=0)
    with pytest.raises(InvalidRequestException):
        SpoolPolicy(on_full="overwrite")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(REJECT_NEW, (1, 3)), (DROP_OLDEST, (1, 3)), (KEEP_QOS0, ())],
    ids=["keep false", "keep false, drop_oldest", "keep true"],
)
def test_qos0_dropped_when_connection_interrupted(policy: SpoolPolicy, expected: tuple[int, ...]) -> None:
    assert dropped_on_interrupt(MIXED, policy) == expected


# --- properties: a plain model driven by `admit`, and the shell checked against it ---

append_op = st.tuples(st.just("append"), st.integers(0, 60), st.sampled_from([0, 1]), st.booleans())
ack_op = st.tuples(st.just("ack"), st.integers(0, 10))
flight_op = st.tuples(st.just("flight"), st.integers(0, 3))
release_op = st.tuples(st.just("release"))
interrupt_op = st.tuples(st.just("interrupt"))
policies = st.builds(
    SpoolPolicy,
    max_size_bytes=st.integers(1, 150),
    keep_qos0_when_offline=st.booleans(),
    on_full=st.sampled_from(["reject_new", "drop_oldest"]),
)
operations = st.lists(st.one_of(append_op, ack_op, flight_op, release_op, interrupt_op), max_size=40)


@dataclass
class Model:
    """The spool as a list; seqs count up from 1 like the shell's AUTOINCREMENT."""

    policy: SpoolPolicy
    entries: list[SpoolEntry] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)
    next_seq: int = 1

    def pending(self) -> list[SpoolEntry]:
        return [e for e in self.entries if e.seq not in self.in_flight]

    def total(self) -> int:
        return sum(e.size for e in self.entries)

    def remove(self, seqs: tuple[int, ...]) -> None:
        self.entries = [e for e in self.entries if e.seq not in seqs]
        self.in_flight -= set(seqs)


def step(model: Model, op: tuple[object, ...]) -> tuple[int, ...]:
    """Apply one operation to the model, checking what `admit` decided; returns the seqs to ack, if any."""
    if op[0] == "append":
        _, size, qos, online = op
        assert isinstance(size, int) and isinstance(qos, int) and isinstance(online, bool)
        candidates = model.pending()
        decision = admit(candidates, model.total(), model.policy, online=online, size=size, qos=qos)
        by_seq = {e.seq: e for e in candidates}
        assert set(decision.evict) <= set(by_seq), "evicted a message that is not evictable"
        if model.policy.on_full == "reject_new":
            assert all(by_seq[s].qos == 0 for s in decision.evict), "reject_new evicted a QoS 1 message"
        else:
            assert decision.evict == tuple(e.seq for e in candidates[: len(decision.evict)]), "not from the front"
            assert decision.accepted or not decision.evict
        model.remove(decision.evict)
        if decision.accepted:
            model.entries.append(SpoolEntry(model.next_seq, size, qos))
            model.next_seq += 1
        else:
            assert decision.reason in (REASON_FULL, REASON_TOO_LARGE, REASON_QOS0_OFFLINE)
    elif op[0] == "ack" and model.entries:
        index = op[1]
        assert isinstance(index, int)
        victim = model.entries[index % len(model.entries)].seq
        model.remove((victim,))
        return (victim,)
    elif op[0] == "flight":
        count = op[1]
        assert isinstance(count, int)
        model.in_flight |= {e.seq for e in model.pending()[:count]}
    elif op[0] == "release":
        model.in_flight.clear()
    elif op[0] == "interrupt":
        model.remove(dropped_on_interrupt(model.pending(), model.policy))
    return ()


@settings(max_examples=50, deadline=None)
@given(policies, operations)
def test_model_never_overfills_and_keeps_append_order(policy: SpoolPolicy, ops: list[tuple[object, ...]]) -> None:
    model = Model(policy)
    for op in ops:
        step(model, op)
        assert model.total() <= policy.max_size_bytes
        seqs = [e.seq for e in model.entries]
        assert seqs == sorted(seqs)


@settings(max_examples=50, deadline=None)
@given(policies, operations)
def test_shell_follows_the_model_and_survives_reopen(policy: SpoolPolicy, ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.db"
        model = Model(policy)
        spool = Spool(path, policy)
        for n, op in enumerate(ops):
            if op[0] == "append":
                _, size, qos, online = op
                assert isinstance(size, int) and isinstance(qos, int) and isinstance(online, bool)
                spool.append(f"t/{n}", bytes([n % 256]) * size, qos, False, T0 + n, online)
            elif op[0] == "flight":
                assert isinstance(op[1], int)
                spool.mark_in_flight(m.seq for m in spool.peek(op[1]))
            elif op[0] == "release":
                spool.release(spool.in_flight)
            elif op[0] == "interrupt":
                spool.connection_interrupted()
            acked = step(model, op)
            if acked:
                assert spool.ack(acked) == 1
            assert spool.size_bytes == model.total() <= policy.max_size_bytes
            assert spool.in_flight == model.in_flight
            assert [(m.seq, len(m.payload), m.qos) for m in spool.peek(1000)] == model.pending()
        spool.close()
        with Spool(path, policy) as reopened:
            assert [(m.seq, len(m.payload), m.qos) for m in reopened.peek(1000)] == model.entries
            assert reopened.depth == len(model.entries) and reopened.in_flight == frozenset()


# --- the shell with a real file ---


def put(spool: Spool, topic: str, payload: bytes, qos: int = 1) -> int:
    """Append online, expect it accepted, and return its seq."""
    result = spool.append(topic, payload, qos, False, T0, True)
    assert result.accepted and result.seq is not None, result
    return result.seq


def test_append_peek_ack(tmp_path: Path) -> None:
    with Spool(tmp_path / "edge.db", SpoolPolicy()) as spool:
        results = [spool.append(f"dt/{i}", b"x" * (i + 1), i % 2, i == 2, T0 + i, True) for i in range(3)]
        assert [(r.accepted, r.reason, r.evicted) for r in results] == [(True, None, ())] * 3
        first, second, third = (r.seq for r in results)
        assert first is not None and second is not None and third is not None
        assert first < second < third
        got = spool.peek(10)
        assert [(m.seq, m.topic, m.payload, m.qos, m.retain, m.enqueued_ms) for m in got] == [
            (first, "dt/0", b"x", 0, False, T0),
            (second, "dt/1", b"xx", 1, False, T0 + 1),
            (third, "dt/2", b"xxx", 0, True, T0 + 2),
        ]
        assert [m.seq for m in spool.peek(2)] == [first, second]
        assert spool.peek(0) == []
        assert (spool.depth, spool.size_bytes) == (3, 6)
        assert spool.ack([first, second, first]) == 2
        assert spool.ack([first]) == 0
        assert [m.seq for m in spool.peek(10)] == [third]
        assert (spool.depth, spool.size_bytes) == (1, 3)
        assert (spool.stats.appended, spool.stats.acked, spool.stats.rejected) == (3, 2, 0)


def test_append_is_committed_before_it_returns(tmp_path: Path) -> None:
    with Spool(tmp_path / "edge.db", SpoolPolicy()) as spool:
        spool.append("dt/a", b"hello", 1, False, T0, False)
        other = sqlite3.connect(tmp_path / "edge.db")
        try:
            assert other.execute("SELECT topic, payload FROM spool").fetchall() == [("dt/a", b"hello")]
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()


def test_everything_survives_reopen_including_evictions(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with Spool(path, REJECT_NEW) as spool:
        old = spool.append("dt/old", b"a" * 60, 0, False, T0, True)
        kept = spool.append("dt/kept", b"b" * 30, 1, False, T0 + 1, True)
        new = spool.append("dt/new", b"c" * 50, 1, True, T0 + 2, True)
        assert new.accepted and new.evicted == (old.seq,)
        assert (spool.stats.evicted, spool.stats.evicted_qos0) == (1, 1)
    with Spool(path, REJECT_NEW) as spool:
        got = spool.peek(10)
        assert [(m.seq, m.topic, m.payload, m.retain) for m in got] == [
            (kept.seq, "dt/kept", b"b" * 30, False),
            (new.seq, "dt/new", b"c" * 50, True),
        ]
        assert (spool.depth, spool.size_bytes) == (2, 80)
        assert spool.ack([m.seq for m in got]) == 2
    with Spool(path, REJECT_NEW) as spool:
        assert spool.depth == 0
        # Seqs are never reused, so a late ack for a message that is gone cannot delete a newer one.
        again = spool.append("dt/again", b"d", 1, False, T0 + 3, True)
        assert again.seq is not None and new.seq is not None and again.seq > new.seq
        assert spool.ack([old.seq or 0]) == 0
        assert spool.depth == 1


def test_full_spool_rejects_and_its_qos0_evictions_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with Spool(path, REJECT_NEW) as spool:
        q0 = spool.append("dt/q0", b"a" * 20, 0, False, T0, True)
        spool.append("dt/q1", b"b" * 70, 1, False, T0, True)
        refused = spool.append("dt/big", b"c" * 40, 1, False, T0, True)
        assert (refused.accepted, refused.seq, refused.reason, refused.evicted) == (False, None, REASON_FULL, (q0.seq,))
        too_large = spool.append("dt/huge", b"c" * 101, 1, False, T0, True)
        assert (too_large.accepted, too_large.reason, too_large.evicted) == (False, REASON_TOO_LARGE, ())
        assert spool.stats.rejected == 2
    with Spool(path, REJECT_NEW) as spool:
        assert [m.topic for m in spool.peek(10)] == ["dt/q1"]


def test_qos0_offline(tmp_path: Path) -> None:
    with Spool(tmp_path / "a.db", REJECT_NEW) as spool:
        result = spool.append("dt/x", b"1", 0, False, T0, False)
        assert (result.accepted, result.reason) == (False, REASON_QOS0_OFFLINE)
        assert spool.append("dt/x", b"1", 1, False, T0, False).accepted
        assert (spool.depth, spool.stats.rejected) == (1, 1)
    with Spool(tmp_path / "b.db", KEEP_QOS0) as spool:
        assert spool.append("dt/x", b"1", 0, False, T0, False).accepted


def test_in_flight_is_skipped_not_evicted_and_not_persisted(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with Spool(path, DROP_OLDEST) as spool:
        seqs = [put(spool, f"dt/{i}", b"x" * 20) for i in range(4)]
        spool.mark_in_flight(m.seq for m in spool.peek(2))
        spool.mark_in_flight([9999])
        assert spool.in_flight == frozenset(seqs[:2])
        assert [m.seq for m in spool.peek(10)] == seqs[2:]
        assert [m.seq for m in spool.peek(1)] == seqs[2:3]
        # 80 of 100 bytes used, 40 in flight: room for 60 means evicting both pending ones, never the in-flight ones.
        made_room = spool.append("dt/60", b"y" * 60, 1, False, T0, True)
        assert made_room.evicted == tuple(seqs[2:])
        refused = spool.append("dt/61", b"y" * 61, 1, False, T0, True)
        assert (refused.accepted, refused.evicted) == (False, ())
        spool.release([seqs[1]])
        assert [m.seq for m in spool.peek(10)] == [seqs[1], made_room.seq]
    with Spool(path, DROP_OLDEST) as spool:
        assert spool.in_flight == frozenset()
        assert [m.seq for m in spool.peek(10)] == [seqs[0], seqs[1], made_room.seq]


def test_connection_interrupted_drops_pending_qos0(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with Spool(path, REJECT_NEW) as spool:
        a, b, c, d = (put(spool, f"dt/{i}", b"x", i % 2) for i in range(4))
        spool.mark_in_flight([c])
        assert spool.connection_interrupted() == (a,)
        assert (spool.stats.evicted, spool.stats.evicted_qos0) == (1, 1)
        spool.release([c])
    with Spool(path, KEEP_QOS0) as spool:
        assert [m.seq for m in spool.peek(10)] == [b, c, d]
        assert spool.connection_interrupted() == ()


def test_rejects_qos2(tmp_path: Path) -> None:
    with Spool(tmp_path / "edge.db") as spool, pytest.raises(InvalidRequestException):
        spool.append("dt/x", b"1", 2, False, T0, True)


def test_mqtt5_properties_are_kept_and_an_old_spool_file_moves_into_the_store(tmp_path: Path) -> None:
    legacy = tmp_path / "spool.db"
    old = sqlite3.connect(str(legacy))
    old.execute(
        "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
        " qos INTEGER NOT NULL, retain INTEGER NOT NULL, enqueued_ms INTEGER NOT NULL)"
    )
    old.execute("INSERT INTO spool(topic, payload, qos, retain, enqueued_ms) VALUES ('dt/old', x'01', 1, 0, 5)")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    store = Store(tmp_path / "edge.db")
    assert import_legacy_spool(store, legacy) == 1
    assert not legacy.exists() and import_legacy_spool(store, legacy) == 0  # read once
    block = b"\x05\x03\x00\x02hi"  # an encoded property block: Content Type "hi"
    spool = Spool(store, SpoolPolicy())
    spool.append("dt/new", b"2", 1, False, T0, True, block)
    assert [(m.topic, m.properties) for m in spool.peek(10)] == [("dt/old", None), ("dt/new", block)]
    spool.close()
    store.close()
    with Spool(tmp_path / "edge.db", SpoolPolicy()) as reopened:
        assert [m.properties for m in reopened.peek(10)] == [None, block]


def test_appends_of_one_turn_share_the_store_commit_and_a_failed_one_acknowledges_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    spool = Spool(store, SpoolPolicy())

    async def scenario() -> None:
        commits = store.commits
        first, done = spool.append_soon("dt/a", b"1", 1, T0, True)
        second, same = spool.append_soon("dt/b", b"2", 1, T0, True)
        assert done is same and done is not None and first.seq is not None and second.seq is not None
        await done
        assert store.commits == commits + 1 and [m.topic for m in spool.peek(10)] == ["dt/a", "dt/b"]
        # A trigger that rolls the open group back makes its write fail: none of its appends is acknowledged.
        store.db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON spool WHEN NEW.topic = 'dt/doomed' "
            "BEGIN SELECT RAISE(ROLLBACK, 'injected'); END"
        )
        _, fine = spool.append_soon("dt/fine", b"3", 1, T0, True)
        _, doomed = spool.append_soon("dt/doomed", b"4", 1, T0, True)
        assert fine is doomed and fine is not None
        with pytest.raises(sqlite3.Error):
            await fine
        await asyncio.sleep(0)  # the spool reloads its index
        assert spool.depth == 2 and [m.topic for m in spool.peek(10)] == ["dt/a", "dt/b"]
        store.db.execute("DROP TRIGGER poison")
        result, later = spool.append_soon("dt/later", b"5", 1, T0, True)
        assert later is not None
        await later
        assert result.seq is not None and result.seq > second.seq  # seqs are never reused
        assert [m.topic for m in spool.peek(10)] == ["dt/a", "dt/b", "dt/later"]

    asyncio.run(scenario())
    spool.close()
    store.close()


def test_acked_messages_are_not_peeked_again_while_their_delete_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    spool = Spool(store, SpoolPolicy())
    seqs = [put(spool, f"dt/{i}", b"x") for i in range(3)]

    async def scenario() -> None:
        spool.mark_in_flight(seqs[:2])
        assert spool.ack_soon(seqs[:2]) == 2
        assert [m.seq for m in spool.peek(1)] == [seqs[2]]  # the rows are still in the file until the commit
        await asyncio.sleep(0.05)
        store.flush()
        assert [m.seq for m in spool.peek(10)] == [seqs[2]] and spool.depth == 1

    asyncio.run(scenario())
    spool.close()
    assert [row[0] for row in store.query("SELECT seq FROM spool")] == [seqs[2]]
    store.close()
