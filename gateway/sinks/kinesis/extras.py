"""Stream tags, server-side encryption settings and enhanced fan-out consumers, kept in a stream's saved state
(`Stream.extras`): AddTagsToStream/ListTagsForStream/RemoveTagsFromStream (and the ARN-based Tag/UntagResource),
Start/StopStreamEncryption, Register/Describe/List/DeregisterStreamConsumer."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gateway.sinks.kinesis.exceptions import (
    InvalidArgumentException,
    KinesisLimitExceededException,
    KinesisResourceNotFoundException,
    ResourceInUseException,
)

if TYPE_CHECKING:
    from gateway.sinks.kinesis.service import KinesisService, Stream

MAX_TAGS = 50
MAX_TAGS_PER_CALL = 10
MAX_CONSUMERS = 20
CONSUMER_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")


def encryption_json(extras: dict[str, Any]) -> dict[str, Any]:
    key = extras.get("kms_key_id")
    return {"EncryptionType": "KMS", "KeyId": key} if key else {"EncryptionType": "NONE"}


def _tags(stream: Stream) -> dict[str, str]:
    tags: dict[str, str] = stream.extras.setdefault("tags", {})
    return tags


def consumers(stream: Stream) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = stream.extras.setdefault("consumers", {})
    return found


class StreamExtras:
    def __init__(self, kinesis: KinesisService) -> None:
        self.kinesis = kinesis

    def _commit(self, stream: Stream) -> None:
        with self.kinesis.store.transaction():
            self.kinesis._save(stream)

    def _by_arn(self, arn: str | None) -> Stream:
        if not arn:
            raise InvalidArgumentException("StreamARN is required")
        name = arn.split(":stream/", 1)[-1].split("/", 1)[0]
        stream = self.kinesis.streams.get(name)
        if stream is None or not arn.startswith(stream.arn):
            raise KinesisResourceNotFoundException(f"Stream {name} under account {self.kinesis.account} not found.")
        return stream

    # ---- tags
    def add_tags(self, name: str | None, tags: dict[str, str], arn: str | None = None) -> None:
        stream = self.kinesis._stream(name, arn)
        if not tags or len(tags) > MAX_TAGS_PER_CALL:
            raise InvalidArgumentException(
                f"1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length "
                f"less than or equal to {MAX_TAGS_PER_CALL}"
                if tags
                else "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have "
                "length greater than or equal to 1"
            )
        for key, value in tags.items():
            if not 1 <= len(key) <= 128 or len(str(value)) > 256:
                raise InvalidArgumentException(f"Tag key '{key}' or its value is not a valid tag.")
        merged = {**_tags(stream), **{k: str(v) for k, v in tags.items()}}
        if len(merged) > MAX_TAGS:
            raise InvalidArgumentException(
                f"Failed to add tags to stream {stream.name} under account {self.kinesis.account} because a given "
                f"stream cannot have more than {MAX_TAGS} tags."
            )
        stream.extras["tags"] = merged
        self._commit(stream)

    def list_tags(
        self, name: str | None, exclusive_start: str | None, limit: int | None, arn: str | None = None
    ) -> dict[str, Any]:
        stream = self.kinesis._stream(name, arn)
        size = MAX_TAGS if limit is None else limit
        if not 1 <= size <= MAX_TAGS:
            raise InvalidArgumentException(f"Limit must be between 1 and {MAX_TAGS}")
        keys = sorted(k for k in _tags(stream) if exclusive_start is None or k > exclusive_start)
        return {
            "Tags": [{"Key": k, "Value": _tags(stream)[k]} for k in keys[:size]],
            "HasMoreTags": len(keys) > size,
        }

    def remove_tags(self, name: str | None, keys: list[str], arn: str | None = None) -> None:
        stream = self.kinesis._stream(name, arn)
        if not keys:
            raise InvalidArgumentException(
                "1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: Member must have "
                "length greater than or equal to 1"
            )
        stream.extras["tags"] = {k: v for k, v in _tags(stream).items() if k not in set(keys)}
        self._commit(stream)

    def tag_resource(self, arn: str, tags: dict[str, str]) -> None:
        self.add_tags(None, tags, self._by_arn(arn).arn)

    def untag_resource(self, arn: str, keys: list[str]) -> None:
        self.remove_tags(None, keys, self._by_arn(arn).arn)

    def list_tags_for_resource(self, arn: str) -> dict[str, Any]:
        stream = self._by_arn(arn)
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(_tags(stream).items())]}

    # ---- encryption
    def start_encryption(self, name: str | None, encryption_type: str, key_id: str, arn: str | None = None) -> None:
        stream = self.kinesis._stream(name, arn)
        if encryption_type != "KMS":
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{encryption_type}' at 'encryptionType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [KMS, NONE]"
            )
        if not key_id:
            raise InvalidArgumentException("KeyId is required to start stream encryption")
        stream.extras["kms_key_id"] = key_id
        self._commit(stream)

    def stop_encryption(self, name: str | None, encryption_type: str, key_id: str, arn: str | None = None) -> None:
        stream = self.kinesis._stream(name, arn)
        if encryption_type != "KMS":
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{encryption_type}' at 'encryptionType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [KMS, NONE]"
            )
        stream.extras.pop("kms_key_id", None)
        self._commit(stream)

    # ---- enhanced fan-out consumers
    def register_consumer(self, stream_arn: str, name: str) -> dict[str, Any]:
        stream = self._by_arn(stream_arn)
        if not CONSUMER_NAME.fullmatch(name or ""):
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{name}' at 'consumerName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            )
        found = consumers(stream)
        if name in found:
            raise ResourceInUseException(
                f"Consumer {name} under stream {stream.name} already exists for account {self.kinesis.account}."
            )
        if len(found) >= MAX_CONSUMERS:
            raise KinesisLimitExceededException(
                f"Consumer limit of {MAX_CONSUMERS} for stream {stream.name} under account "
                f"{self.kinesis.account} exceeded."
            )
        now = self.kinesis.clock.wall_ms()
        found[name] = {"arn": f"{stream.arn}/consumer/{name}:{now // 1000}", "created_ms": now}
        self._commit(stream)
        return {"Consumer": self._consumer_json(stream, name)}

    def _consumer_json(self, stream: Stream, name: str) -> dict[str, Any]:
        entry = consumers(stream)[name]
        return {
            "ConsumerName": name,
            "ConsumerARN": entry["arn"],
            "ConsumerStatus": "ACTIVE",
            "ConsumerCreationTimestamp": entry["created_ms"] / 1000,
        }

    def find_consumer(self, stream_arn: str | None, name: str | None, consumer_arn: str | None) -> tuple[Stream, str]:
        if consumer_arn:
            stream = self._by_arn(consumer_arn.split("/consumer/", 1)[0])
            for consumer_name, entry in consumers(stream).items():
                if entry["arn"] == consumer_arn:
                    return stream, consumer_name
            raise KinesisResourceNotFoundException(f"Consumer {consumer_arn} not found.")
        if not stream_arn or not name:
            raise InvalidArgumentException("Either ConsumerARN or both StreamARN and ConsumerName must be provided")
        stream = self._by_arn(stream_arn)
        if name not in consumers(stream):
            raise KinesisResourceNotFoundException(
                f"Consumer {name} under stream {stream.name} not found for account {self.kinesis.account}."
            )
        return stream, name

    def describe_consumer(self, stream_arn: str | None, name: str | None, consumer_arn: str | None) -> dict[str, Any]:
        stream, found = self.find_consumer(stream_arn, name, consumer_arn)
        return {"ConsumerDescription": {**self._consumer_json(stream, found), "StreamARN": stream.arn}}

    def list_consumers(self, stream_arn: str, max_results: int | None, next_token: str | None) -> dict[str, Any]:
        stream = self._by_arn(stream_arn)
        size = 100 if max_results is None else max_results
        if not 1 <= size <= 10000:
            raise InvalidArgumentException("MaxResults must be between 1 and 10000")
        names = sorted(n for n in consumers(stream) if next_token is None or n > next_token)
        out: dict[str, Any] = {"Consumers": [self._consumer_json(stream, n) for n in names[:size]]}
        if len(names) > size:
            out["NextToken"] = names[size - 1]
        return out

    def deregister_consumer(self, stream_arn: str | None, name: str | None, consumer_arn: str | None) -> None:
        stream, found = self.find_consumer(stream_arn, name, consumer_arn)
        del consumers(stream)[found]
        self._commit(stream)
