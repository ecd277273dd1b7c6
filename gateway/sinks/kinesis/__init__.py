"""Kinesis Data Streams sink: pure shard map and iterator cores (a service shell sits on top)."""

from gateway.sinks.kinesis.exceptions import (
    ExpiredIteratorException,
    InvalidArgumentException,
    KinesisLimitExceededException,
    KinesisResourceNotFoundException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
)
from gateway.sinks.kinesis.iterators import (
    ITERATOR_MAX_AGE_MS,
    ITERATOR_TYPES,
    IteratorState,
    decode_iterator,
    encode_iterator,
    position_for,
)
from gateway.sinks.kinesis.shards import (
    HASH_SPACE,
    MAX_HASH_KEY,
    SequenceNumbers,
    SequenceParts,
    Shard,
    ShardMap,
    even_ranges,
    normalize_shard_id,
    parse_hash_key,
    parse_sequence,
    partition_hash,
    shard_id,
)

__all__ = [
    "HASH_SPACE",
    "ITERATOR_MAX_AGE_MS",
    "ITERATOR_TYPES",
    "MAX_HASH_KEY",
    "ExpiredIteratorException",
    "InvalidArgumentException",
    "IteratorState",
    "KinesisLimitExceededException",
    "KinesisResourceNotFoundException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "SequenceNumbers",
    "SequenceParts",
    "Shard",
    "ShardMap",
    "decode_iterator",
    "encode_iterator",
    "even_ranges",
    "normalize_shard_id",
    "parse_hash_key",
    "parse_sequence",
    "partition_hash",
    "position_for",
    "shard_id",
]
