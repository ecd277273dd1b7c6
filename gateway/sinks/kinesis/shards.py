"""Kinesis shard maps: MD5 hash ranges, split/merge/scale with lineage, and sequence numbers (pure)."""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field, replace

from gateway.sinks.kinesis.exceptions import (
    ExpiredIteratorException,
    InvalidArgumentException,
    KinesisLimitExceededException,
    KinesisResourceNotFoundException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
)

__all__ = [
    "HASH_SPACE",
    "MAX_HASH_KEY",
    "ExpiredIteratorException",
    "InvalidArgumentException",
    "KinesisLimitExceededException",
    "KinesisResourceNotFoundException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "SequenceNumbers",
    "SequenceParts",
    "Shard",
    "ShardMap",
    "even_ranges",
    "normalize_shard_id",
    "parse_hash_key",
    "parse_sequence",
    "partition_hash",
    "shard_id",
]

HASH_SPACE = 2**128
MAX_HASH_KEY = HASH_SPACE - 1

# Kinesis speaks JSON 1.1: every client error, "not found" included, is HTTP 400 (aws-iot-behaviour.md §7.2).


# --- hashing ---------------------------------------------------------------------------------------

_HASH_KEY_RE = re.compile(r"0|[1-9]\d{0,38}")
_SEQUENCE_RE = re.compile(r"0|[1-9]\d{0,128}")


def partition_hash(partition_key: str) -> int:
    """MD5 of the UTF-8 partition key read as an unsigned 128-bit big-endian integer [D]."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def parse_hash_key(text: str, member: str = "explicitHashKey") -> int:
    """Validate a decimal hash key (ExplicitHashKey, NewStartingHashKey) and return it as an int."""
    if not isinstance(text, str) or _HASH_KEY_RE.fullmatch(text) is None:
        raise InvalidArgumentException(
            f"1 validation error detected: Value '{text}' at '{member}' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})"
        )
    value = int(text)
    if value > MAX_HASH_KEY:
        name = member[:1].upper() + member[1:]
        raise InvalidArgumentException(
            f"Invalid {name}. {name} must be in the range: [0, 2^128-1]. Specified value was {text}"
        )
    return value


def even_ranges(n: int) -> list[tuple[int, int]]:
    """Inclusive hash ranges of an n-shard stream: step 2^128 // n, the last shard ends at 2^128 - 1 (§7.1, K12)."""
    if n < 1:
        raise InvalidArgumentException(f"Shard count must be at least 1, got {n}.")
    step = HASH_SPACE // n
    return [(i * step, (i + 1) * step - 1 if i < n - 1 else MAX_HASH_KEY) for i in range(n)]


def shard_id(n: int) -> str:
    """AWS shard ID for shard number n: `shardId-` plus 12 zero-padded digits."""
    return f"shardId-{n:012d}"


_SHARD_ID_RE = re.compile(r"(?:.*-)?(\d{1,12})")


def normalize_shard_id(text: str) -> str | None:
    """AWS accepts `shardId-5` or `anything-5` for shardId-000000000005; None when no number can be read."""
    match = _SHARD_ID_RE.fullmatch(text)
    return shard_id(int(match.group(1))) if match else None


# --- sequence numbers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequenceParts:
    """The fields one of our sequence numbers encodes."""

    created_ms: int
    shard_number: int
    counter: int


class SequenceNumbers:
    """Fixed-width 56-digit decimal sequence numbers that sort the same as text and as integers.

    Layout, most significant first: `49` (constant, like AWS's numbers; keeps the width fixed) · 15 digits of the
    shard's creation time in epoch ms · 12 digits of shard number · 27 digits of per-shard counter. Within a shard only
    the counter changes, so numbers strictly increase with it. A child shard is created no earlier than its parents
    (ShardMap clamps) and always has a larger shard number, so every child number exceeds every parent number.
    A closed shard's EndingSequenceNumber uses the maximum counter, as AWS's do (kinesalite observed 0x7fff...).
    """

    WIDTH = 56
    PREFIX = 49
    CREATED_DIGITS = 15
    SHARD_DIGITS = 12
    COUNTER_DIGITS = 27
    _CREATED_LIMIT: int = 10**15
    _SHARD_LIMIT: int = 10**12
    _COUNTER_LIMIT: int = 10**27
    MAX_COUNTER: int = 10**27 - 1

    @classmethod
    def make(cls, created_ms: int, shard_number: int, counter: int) -> int:
        if not 0 <= created_ms < cls._CREATED_LIMIT:
            raise InvalidArgumentException(f"Shard creation time {created_ms} is out of range.")
        if not 0 <= shard_number < cls._SHARD_LIMIT:
            raise InvalidArgumentException(f"Shard number {shard_number} is out of range.")
        if not 0 <= counter <= cls.MAX_COUNTER:
            raise InvalidArgumentException(f"Sequence counter {counter} is out of range.")
        value = cls.PREFIX * cls._CREATED_LIMIT + created_ms
        value = value * cls._SHARD_LIMIT + shard_number
        return value * cls._COUNTER_LIMIT + counter

    @classmethod
    def parts(cls, value: int) -> SequenceParts:
        """Decode; InvalidArgumentException when the number was not made by this scheme."""
        rest, counter = divmod(value, cls._COUNTER_LIMIT)
        rest, shard_number = divmod(rest, cls._SHARD_LIMIT)
        prefix, created_ms = divmod(rest, cls._CREATED_LIMIT)
        if value < 0 or prefix != cls.PREFIX:
            raise InvalidArgumentException(f"Sequence number {value} is invalid.")
        return SequenceParts(created_ms, shard_number, counter)

    @classmethod
    def for_shard(cls, shard: Shard, counter: int) -> int:
        """The sequence number of the record with this per-shard counter (0 is the shard's starting number)."""
        parts = cls.parts(shard.starting_sequence)
        return cls.make(parts.created_ms, parts.shard_number, counter)

    @staticmethod
    def text(value: int) -> str:
        return str(value)


def parse_sequence(text: str, member: str = "startingSequenceNumber") -> int:
    """A decimal sequence number as the API model allows it (`0|([1-9]\\d{0,128})`), as an int."""
    if not isinstance(text, str) or _SEQUENCE_RE.fullmatch(text) is None:
        raise InvalidArgumentException(
            f"1 validation error detected: Value '{text}' at '{member}' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})"
        )
    return int(text)


# --- shards ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard: inclusive hash range, lineage and sequence number range (ending set once CLOSED)."""

    shard_id: str
    start: int
    end: int
    parent: str | None
    adjacent_parent: str | None
    starting_sequence: int
    ending_sequence: int | None

    @property
    def is_open(self) -> bool:
        return self.ending_sequence is None

    @property
    def number(self) -> int:
        return int(self.shard_id.rsplit("-", 1)[1])

    @property
    def created_ms(self) -> int:
        return SequenceNumbers.parts(self.starting_sequence).created_ms

    def contains(self, hash_key: int) -> bool:
        return self.start <= hash_key <= self.end


def _new_shard(
    number: int, start: int, end: int, created_ms: int, parent: str | None = None, adjacent_parent: str | None = None
) -> Shard:
    return Shard(
        shard_id(number), start, end, parent, adjacent_parent, SequenceNumbers.make(created_ms, number, 0), None
    )


def _close(shard: Shard) -> Shard:
    return replace(shard, ending_sequence=SequenceNumbers.for_shard(shard, SequenceNumbers.MAX_COUNTER))


@dataclass(frozen=True)
class ShardMap:
    """All shards of one stream (index = shard number) plus the open ones sorted by StartingHashKey."""

    stream_name: str
    account_id: str
    shards: tuple[Shard, ...]
    open_shards: tuple[Shard, ...] = field(init=False, compare=False, repr=False)
    _starts: tuple[int, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        opened = tuple(sorted((s for s in self.shards if s.is_open), key=lambda s: s.start))
        object.__setattr__(self, "open_shards", opened)
        object.__setattr__(self, "_starts", tuple(s.start for s in opened))

    @classmethod
    def create(cls, stream_name: str, account_id: str, shard_count: int, now_ms: int) -> ShardMap:
        """A new stream's shards with even ranges (CreateStream)."""
        shards = tuple(_new_shard(i, s, e, now_ms) for i, (s, e) in enumerate(even_ranges(shard_count)))
        return cls(stream_name, account_id, shards)

    @property
    def next_shard_number(self) -> int:
        return len(self.shards)

    # -- lookups

    def shard_for(self, hash_key: int) -> Shard:
        """The open shard whose inclusive range holds hash_key (binary search over sorted starts)."""
        if not 0 <= hash_key <= MAX_HASH_KEY:
            raise InvalidArgumentException(f"Hash key {hash_key} is outside [0, 2^128-1].")
        return self.open_shards[bisect.bisect_right(self._starts, hash_key) - 1]

    def shard_for_key(self, partition_key: str, explicit_hash_key: str | None = None) -> Shard:
        """Route a record: ExplicitHashKey, when given, overrides the partition key's MD5 [M]."""
        if explicit_hash_key is not None:
            return self.shard_for(parse_hash_key(explicit_hash_key))
        return self.shard_for(partition_hash(partition_key))

    def get(self, requested_id: str) -> Shard:
        """Find a shard (open or closed) by ID, accepting AWS's short forms; ResourceNotFoundException if absent."""
        normal = normalize_shard_id(requested_id)
        if normal is not None:
            number = int(normal[-12:])
            if number < len(self.shards):
                return self.shards[number]
        raise KinesisResourceNotFoundException(
            f"Could not find shard {normal or requested_id} in stream {self.stream_name} "
            f"under account {self.account_id}."
        )

    # -- resharding

    def _open(self, shard_: Shard) -> Shard:
        if not shard_.is_open:
            raise InvalidArgumentException(
                f"Shard {shard_.shard_id} in stream {self.stream_name} under account {self.account_id} has already "
                "been merged or split, and thus is not eligible for merging or splitting."
            )
        return shard_

    def _with(self, closed: tuple[Shard, ...], added: tuple[Shard, ...]) -> ShardMap:
        shards = list(self.shards)
        for c in closed:
            shards[c.number] = _close(c)
        shards.extend(added)
        return ShardMap(self.stream_name, self.account_id, tuple(shards))

    def _check_next(self, next_shard_number: int | None) -> int:
        number = self.next_shard_number if next_shard_number is None else next_shard_number
        if number != self.next_shard_number:
            raise InvalidArgumentException(f"Next shard number must be {self.next_shard_number}, got {number}.")
        return number

    def split(
        self,
        shard_to_split: str,
        new_starting_hash_key: str | int,
        next_shard_number: int | None = None,
        now_ms: int = 0,
    ) -> ShardMap:
        """SplitShard: close the parent, add children [start, new-1] and [new, end] (in that shard-number order)."""
        parent = self._open(self.get(shard_to_split))
        new = (
            new_starting_hash_key
            if isinstance(new_starting_hash_key, int)
            else parse_hash_key(new_starting_hash_key, "newStartingHashKey")
        )
        # AWS's own wording states the bound: strictly greater than start + 1 and strictly less than end.
        if new <= parent.start + 1 or new >= parent.end:
            raise InvalidArgumentException(
                f"NewStartingHashKey {new} used in SplitShard() on shard {parent.shard_id} in stream "
                f"{self.stream_name} under account {self.account_id} is not both greater than one plus the "
                f"shard's StartingHashKey {parent.start} and less than the shard's EndingHashKey {parent.end}."
            )
        return self._split_unchecked(parent, new, self._check_next(next_shard_number), now_ms)

    def _split_unchecked(self, parent: Shard, new: int, number: int, now_ms: int) -> ShardMap:
        created = max(now_ms, parent.created_ms)  # children never sort before their parent
        low = _new_shard(number, parent.start, new - 1, created, parent.shard_id)
        high = _new_shard(number + 1, new, parent.end, created, parent.shard_id)
        return self._with((parent,), (low, high))

    def merge(
        self, shard_to_merge: str, adjacent_shard_to_merge: str, next_shard_number: int | None = None, now_ms: int = 0
    ) -> ShardMap:
        """MergeShards: ShardToMerge must sit directly below AdjacentShardToMerge (AWS rejects the inverse order)."""
        low = self.get(shard_to_merge)
        high = self.get(adjacent_shard_to_merge)
        self._open(low)
        self._open(high)
        if low.end + 1 != high.start:
            raise InvalidArgumentException(
                f"Shards {low.shard_id} and {high.shard_id} in stream {self.stream_name} under account "
                f"{self.account_id} are not an adjacent pair of shards eligible for merging"
            )
        return self._merge_unchecked(low, high, self._check_next(next_shard_number), now_ms)

    def _merge_unchecked(self, low: Shard, high: Shard, number: int, now_ms: int) -> ShardMap:
        created = max(now_ms, low.created_ms, high.created_ms)
        child = _new_shard(number, low.start, high.end, created, low.shard_id, high.shard_id)
        return self._with((low, high), (child,))

    def update_shard_count(self, target_shard_count: int, now_ms: int = 0) -> ShardMap:
        """UpdateShardCount with UNIFORM_SCALING: afterwards the open shards are exactly even_ranges(target).

        Approach: (1) split every open shard at each target boundary that falls strictly inside it, then
        (2) merge, left to right, neighbouring open shards lying in the same target range until each target range
        is one shard. Every step is a real split or merge, so parent/child lineage is what AWS would report; AWS
        also reaches the uniform layout through splits and merges (moto: split all, then merge).
        Limits [D]: at most double and at least half the current open shard count.
        """
        current = len(self.open_shards)
        if target_shard_count < 1 or target_shard_count > 2 * current or 2 * target_shard_count < current:
            raise InvalidArgumentException(
                f"TargetShardCount {target_shard_count} for stream {self.stream_name} under account "
                f"{self.account_id} must be between half and double the current open shard count {current}."
            )
        targets = even_ranges(target_shard_count)
        result = self
        for s in self.open_shards:
            cur = s
            for boundary, _ in targets:
                if cur.start < boundary <= cur.end:
                    result = result._split_unchecked(cur, boundary, result.next_shard_number, now_ms)
                    cur = result.shards[-1]
        for t_start, t_end in targets:
            while True:
                opened, i = result.open_shards, result._index_at(t_start)
                if i + 1 >= len(opened) or opened[i + 1].end > t_end:
                    break
                result = result._merge_unchecked(opened[i], opened[i + 1], result.next_shard_number, now_ms)
        return result

    def _index_at(self, hash_key: int) -> int:
        return bisect.bisect_right(self._starts, hash_key) - 1
