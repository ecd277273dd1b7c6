"""Kinesis shard map: reference vectors K1-K12, split/merge lineage and errors, scaling, sequence numbers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sinks.kinesis.exceptions import InvalidArgumentException, KinesisResourceNotFoundException
from gateway.sinks.kinesis.shards import (
    HASH_SPACE,
    MAX_HASH_KEY,
    SequenceNumbers,
    ShardMap,
    even_ranges,
    normalize_shard_id,
    parse_hash_key,
    parse_sequence,
    partition_hash,
    shard_id,
)

T0 = 1_700_000_000_000
STREAM, ACCOUNT = "telemetry", "123456789012"


def four() -> ShardMap:
    return ShardMap.create(STREAM, ACCOUNT, 4, T0)


# --- reference vectors (aws-iot-behaviour.md §12.4) ------------------------------------------------

K_RANGES = [
    ("shardId-000000000000", 0, 85070591730234615865843651857942052863),
    ("shardId-000000000001", 85070591730234615865843651857942052864, 170141183460469231731687303715884105727),
    ("shardId-000000000002", 170141183460469231731687303715884105728, 255211775190703847597530955573826158591),
    ("shardId-000000000003", 255211775190703847597530955573826158592, 340282366920938463463374607431768211455),
]


def test_four_shard_ranges() -> None:
    m = four()
    assert [(s.shard_id, s.start, s.end) for s in m.open_shards] == K_RANGES
    assert even_ranges(4) == [(s, e) for _, s, e in K_RANGES]


@pytest.mark.parametrize(
    ("case", "partition_key", "md5_hex", "hash_key", "expected"),
    [
        ("K1", "device-1", "d111f50a599b0a9fe3ef9e1c6b68ec88", 277901890176008628857739572313990950024, 3),
        ("K2", "device-2", "27e16a9b4321aac281113b0e11160010", 53010320865341428648053222576720576528, 0),
        ("K3", "thing-42", "1b47dadfcd531947b3056380bff0d4d5", 36262248259867425313312640124914291925, 0),
        ("K4", "sensor/temp/room1", "4c93861474cabfaff8a20ca7fec2b63c", 101787314781453734984139400594331973180, 1),
        ("K5", "alpha", "2c1743a391305fbf367df8e4f069f9f9", 58606826522850340945736240254012750329, 0),
        ("K6", "beta", "987bcab01b929eb2c07877b224215c92", 202685418872336884493770735918403116178, 2),
        ("K7", "gamma", "05b048d7242cb7b8b57cfa3b1d65ecea", 7561461604768633204219852884577479914, 0),
        ("K8", "12345", "827ccb0eea8a706c4c34a16891f84e7b", 173447602773428053556316684567667297915, 2),
    ],
)
def test_partition_key_vectors(case: str, partition_key: str, md5_hex: str, hash_key: int, expected: int) -> None:
    assert partition_hash(partition_key) == int(md5_hex, 16) == hash_key, case
    assert four().shard_for_key(partition_key).shard_id == shard_id(expected), case


def test_k9_explicit_hash_key_overrides_partition_key() -> None:
    assert four().shard_for_key("device-1", str(2**127)).shard_id == "shardId-000000000002"


@pytest.mark.parametrize(
    ("hash_key", "expected"),
    [(0, 0), (2**126 - 1, 0), (2**126, 1), (2**127 - 1, 1), (2**127, 2), (3 * 2**126, 3), (2**128 - 1, 3)],
)
def test_k10_boundaries(hash_key: int, expected: int) -> None:
    assert four().shard_for(hash_key).shard_id == shard_id(expected)


def test_k11_split_at_midpoint() -> None:
    mid = 42535295865117307932921825928971026431
    m = four().split("shardId-000000000000", str(mid), now_ms=T0 + 1)
    parent = m.get("shardId-000000000000")
    assert not parent.is_open
    assert parent.ending_sequence is not None
    low, high = m.get("shardId-000000000004"), m.get("shardId-000000000005")
    assert (low.start, low.end) == (0, 42535295865117307932921825928971026430)
    assert (high.start, high.end) == (mid, 85070591730234615865843651857942052863)
    assert low.parent == high.parent == "shardId-000000000000"
    assert low.adjacent_parent is None and high.adjacent_parent is None
    assert len(m.open_shards) == 5
    assert m.shard_for(mid - 1) == low and m.shard_for(mid) == high


def test_k12_three_shard_ranges() -> None:
    assert even_ranges(3) == [
        (0, 113427455640312821154458202477256070484),
        (113427455640312821154458202477256070485, 226854911280625642308916404954512140969),
        (226854911280625642308916404954512140970, 340282366920938463463374607431768211455),
    ]


def test_even_ranges_one_shard_and_invalid() -> None:
    assert even_ranges(1) == [(0, MAX_HASH_KEY)]
    with pytest.raises(InvalidArgumentException):
        even_ranges(0)


# --- hash key and sequence validation ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["0", "1", str(MAX_HASH_KEY)])
def test_hash_key_valid(text: str) -> None:
    assert parse_hash_key(text) == int(text)


@pytest.mark.parametrize("text", ["", "-1", "01", "1.5", "abc", " 1", "1" * 40])
def test_hash_key_pattern(text: str) -> None:
    with pytest.raises(InvalidArgumentException, match="regular expression pattern"):
        parse_hash_key(text)


def test_hash_key_too_large() -> None:
    with pytest.raises(InvalidArgumentException) as info:
        parse_hash_key(str(HASH_SPACE))
    assert info.value.message == (
        f"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {HASH_SPACE}"
    )
    assert info.value.http_status == 400
    assert info.value.code == "InvalidArgumentException"


@pytest.mark.parametrize("text", ["", "x", "-5", "007", "1e5"])
def test_parse_sequence_rejects(text: str) -> None:
    with pytest.raises(InvalidArgumentException):
        parse_sequence(text)


def test_sequence_layout() -> None:
    value = SequenceNumbers.make(T0, 7, 42)
    text = str(value)
    assert len(text) == 56 and text.startswith("49")
    assert parse_sequence(text) == value
    parts = SequenceNumbers.parts(value)
    assert (parts.created_ms, parts.shard_number, parts.counter) == (T0, 7, 42)
    with pytest.raises(InvalidArgumentException):
        SequenceNumbers.parts(12345)
    with pytest.raises(InvalidArgumentException):
        SequenceNumbers.make(T0, 0, SequenceNumbers.MAX_COUNTER + 1)


@given(st.lists(st.integers(0, SequenceNumbers.MAX_COUNTER), min_size=2, max_size=20, unique=True))
def test_sequence_strictly_increases_within_shard(counters: list[int]) -> None:
    shard = four().open_shards[1]
    values = [SequenceNumbers.for_shard(shard, c) for c in sorted(counters)]
    texts = [str(v) for v in values]
    assert values == sorted(set(values))
    assert texts == sorted(texts)  # lexicographic order agrees with numeric order (fixed width)
    assert all(len(t) == 56 for t in texts)


# --- shard IDs and lookup --------------------------------------------------------------------------


def test_shard_id_forms() -> None:
    assert shard_id(5) == "shardId-000000000005"
    assert normalize_shard_id("shardId-5") == "shardId-000000000005"
    assert normalize_shard_id("anything-2") == "shardId-000000000002"
    assert normalize_shard_id("nope") is None
    assert four().get("shard-3").shard_id == "shardId-000000000003"


def test_unknown_shard() -> None:
    with pytest.raises(KinesisResourceNotFoundException) as info:
        four().get("shardId-5")
    assert info.value.message == (
        f"Could not find shard shardId-000000000005 in stream {STREAM} under account {ACCOUNT}."
    )
    assert info.value.http_status == 400


def test_shard_for_rejects_out_of_space() -> None:
    with pytest.raises(InvalidArgumentException):
        four().shard_for(HASH_SPACE)


# --- split / merge errors and lineage ---------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1])
def test_split_too_close_to_start(offset: int) -> None:
    m = ShardMap.create(STREAM, ACCOUNT, 3, T0)
    with pytest.raises(InvalidArgumentException) as info:
        m.split("shardId-000000000000", str(offset))
    assert info.value.message == (
        f"NewStartingHashKey {offset} used in SplitShard() on shard shardId-000000000000 in stream {STREAM} under "
        f"account {ACCOUNT} is not both greater than one plus the shard's StartingHashKey 0 and less than the "
        "shard's EndingHashKey 113427455640312821154458202477256070484."
    )


def test_split_at_end_rejected_and_inside_accepted() -> None:
    m = four()
    end = m.open_shards[0].end
    with pytest.raises(InvalidArgumentException, match="not both greater"):
        m.split("shardId-000000000000", str(end))
    assert len(m.split("shardId-000000000000", "2").open_shards) == 5
    assert len(m.split("shardId-000000000000", str(end - 1)).open_shards) == 5


def test_split_closed_shard_and_bad_key() -> None:
    m = four().split("shardId-000000000000", "1000")
    with pytest.raises(InvalidArgumentException) as info:
        m.split("shardId-000000000000", "500")
    assert info.value.message == (
        f"Shard shardId-000000000000 in stream {STREAM} under account {ACCOUNT} has already been merged or split, "
        "and thus is not eligible for merging or splitting."
    )
    with pytest.raises(InvalidArgumentException, match="newStartingHashKey"):
        m.split("shardId-000000000001", "12x")
    with pytest.raises(KinesisResourceNotFoundException):
        m.split("shardId-000000000099", "5")
    with pytest.raises(InvalidArgumentException, match="Next shard number"):
        m.split("shardId-000000000001", str(2**126 + 10), next_shard_number=3)


def test_merge_lineage() -> None:
    m = four().merge("shardId-000000000001", "shardId-000000000002", next_shard_number=4, now_ms=T0 + 5)
    child = m.get("shardId-000000000004")
    assert (child.start, child.end) == (K_RANGES[1][1], K_RANGES[2][2])
    assert child.parent == "shardId-000000000001"
    assert child.adjacent_parent == "shardId-000000000002"
    for pid in ("shardId-000000000001", "shardId-000000000002"):
        parent = m.get(pid)
        assert not parent.is_open
        assert parent.ending_sequence is not None
        assert parent.ending_sequence < child.starting_sequence
    assert [s.number for s in m.open_shards] == [0, 4, 3]
    assert m.shard_for(2**127) == child


@pytest.mark.parametrize(("a", "b"), [("shardId-000000000000", "shardId-000000000002"), ("shard-1", "shard-0")])
def test_merge_not_adjacent(a: str, b: str) -> None:
    m = four()
    with pytest.raises(InvalidArgumentException) as info:
        m.merge(a, b)
    assert info.value.message == (
        f"Shards {normalize_shard_id(a)} and {normalize_shard_id(b)} in stream {STREAM} under account {ACCOUNT} "
        "are not an adjacent pair of shards eligible for merging"
    )


def test_merge_closed_shard() -> None:
    m = four().merge("shardId-000000000000", "shardId-000000000001")
    with pytest.raises(InvalidArgumentException, match="already been merged or split"):
        m.merge("shardId-000000000001", "shardId-000000000002")


def test_original_map_unchanged() -> None:
    m = four()
    m.split("shardId-000000000000", "1000")
    m.merge("shardId-000000000002", "shardId-000000000003")
    assert len(m.shards) == 4 and all(s.is_open for s in m.shards)


def test_children_created_no_earlier_than_parent() -> None:
    m = four().split("shardId-000000000000", "1000", now_ms=T0 - 50_000)  # clock went backwards
    parent, child = m.get("shardId-000000000000"), m.get("shardId-000000000004")
    assert parent.ending_sequence is not None
    assert child.starting_sequence > parent.ending_sequence
    assert child.created_ms == T0


# --- UpdateShardCount ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "target"), [(1, 2), (2, 4), (4, 5), (4, 3), (4, 2), (5, 3), (3, 6), (10, 13), (7, 7)]
)
def test_update_shard_count_uniform(initial: int, target: int) -> None:
    m = ShardMap.create(STREAM, ACCOUNT, initial, T0).update_shard_count(target, T0 + 1000)
    assert [(s.start, s.end) for s in m.open_shards] == even_ranges(target)
    for s in m.shards:
        if s.parent is not None:
            parent = m.get(s.parent)
            assert not parent.is_open
            assert parent.ending_sequence is not None and s.starting_sequence > parent.ending_sequence
    if initial == target:
        assert len(m.shards) == initial


@pytest.mark.parametrize(("initial", "target"), [(4, 9), (4, 1), (1, 0)])
def test_update_shard_count_limits(initial: int, target: int) -> None:
    with pytest.raises(InvalidArgumentException, match="between half and double"):
        ShardMap.create(STREAM, ACCOUNT, initial, T0).update_shard_count(target)


# --- properties -------------------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 10_000), st.floats(0.0, 1.0), st.integers(0, 10)),
    max_size=25,
)


def _apply(m: ShardMap, ops: list[tuple[bool, int, float, int]]) -> ShardMap:
    now = T0
    for is_split, pick, fraction, dt in ops:
        now += dt
        opened = m.open_shards
        target = opened[pick % len(opened)]
        try:
            if is_split:
                key = target.start + 2 + int((target.end - target.start - 3) * fraction)
                m = m.split(target.shard_id, str(key), now_ms=now)
            elif pick % len(opened) + 1 < len(opened):
                m = m.merge(target.shard_id, opened[pick % len(opened) + 1].shard_id, now_ms=now)
        except InvalidArgumentException:
            pass  # a shard too narrow to split: AWS refuses it too
    return m


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), _ops, st.lists(st.integers(0, MAX_HASH_KEY), max_size=20))
def test_open_shards_partition_hash_space(
    initial: int, ops: list[tuple[bool, int, float, int]], keys: list[int]
) -> None:
    m = _apply(ShardMap.create(STREAM, ACCOUNT, initial, T0), ops)
    opened = m.open_shards
    assert opened[0].start == 0 and opened[-1].end == MAX_HASH_KEY
    for a, b in itertools.pairwise(opened):
        assert a.end + 1 == b.start and a.start <= a.end
    for k in [*keys, 0, MAX_HASH_KEY] + [s.start for s in opened] + [s.end for s in opened]:
        owners = [s for s in opened if s.contains(k)]
        assert len(owners) == 1 and m.shard_for(k) == owners[0]
    # lineage: every non-original shard's parents are closed and ordered before it
    for s in m.shards:
        assert s.number == m.shards.index(s)
        for pid in (s.parent, s.adjacent_parent):
            if pid is not None:
                parent = m.get(pid)
                assert not parent.is_open and parent.ending_sequence is not None
                assert s.starting_sequence > parent.ending_sequence
                assert SequenceNumbers.for_shard(s, 0) > SequenceNumbers.for_shard(parent, SequenceNumbers.MAX_COUNTER)
                assert str(s.starting_sequence) > str(parent.ending_sequence)
