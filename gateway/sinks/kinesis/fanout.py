"""SubscribeToShard for enhanced fan-out consumers: one shard's records pushed as events for at most five minutes.

Each event carries the records since the last one, `MillisBehindLatest` and a `ContinuationSequenceNumber` (the
last record sent, or the position before the start while none has been): a new subscription with
`AFTER_SEQUENCE_NUMBER` and that number carries on where this one stopped. A closed shard read to its end sends
one last event naming its `ChildShards`, then the subscription ends. Time and sleeping are passed in.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.sinks.kinesis.exceptions import InvalidArgumentException, ResourceInUseException
from gateway.sinks.kinesis.extras import StreamExtras
from gateway.sinks.kinesis.iterators import decode_iterator

if TYPE_CHECKING:
    from gateway.sinks.kinesis.service import KinesisService

LIFETIME_MS = 5 * 60 * 1000
HEARTBEAT_MS = 5_000  # an event, empty if need be, at least this often
POLL_S = 0.2
TAKEOVER_MS = 5_000  # a second SubscribeToShard for the same consumer and shard sooner than this is refused
START_TYPES = ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


@dataclass
class Subscription:
    kinesis: KinesisService
    stream: str
    shard_id: str
    iterator: str
    continuation: int
    key: tuple[str, str]
    taken_over: bool = False

    def _read(self, now_ms: int) -> dict[str, Any]:
        out = self.kinesis.get_records(self.iterator)
        records = out["Records"]
        for record in records:
            record["Data"] = base64.b64encode(record["Data"]).decode()
        if records:
            self.continuation = int(records[-1]["SequenceNumber"])
        event: dict[str, Any] = {
            "Records": records,
            "ContinuationSequenceNumber": str(self.continuation),
            "MillisBehindLatest": out.get("MillisBehindLatest", 0),
        }
        if "NextShardIterator" in out:
            self.iterator = out["NextShardIterator"]
        else:
            self.iterator = ""
            event["ChildShards"] = out.get("ChildShards", [])
        return event

    async def events(
        self,
        now_ms: Callable[[], int],
        sleep: Callable[[float], Awaitable[None]],
        lifetime_ms: int = LIFETIME_MS,
        alive: Callable[[], bool] = lambda: True,
    ) -> AsyncIterator[dict[str, Any]]:
        started = now_ms()
        last_sent: int | None = None
        while alive():
            if self.taken_over:
                raise ResourceInUseException(
                    f"Another subscription for consumer {self.key[0]} and shard {self.shard_id} took over this one."
                )
            now = now_ms()
            if now - started >= lifetime_ms:
                return
            event = self._read(now)
            if event["Records"] or last_sent is None or now - last_sent >= HEARTBEAT_MS or not self.iterator:
                last_sent = now
                yield event
            if not self.iterator:
                return
            await sleep(POLL_S)


class Subscriptions:
    """One subscription per consumer and shard: a new call within 5 s of the last successful one is refused, a later
    one takes over (the older subscription ends with ResourceInUseException), as AWS documents."""

    def __init__(self, kinesis: KinesisService) -> None:
        self.kinesis = kinesis
        self.active: dict[tuple[str, str], Subscription] = {}
        self.started: dict[tuple[str, str], int] = {}

    def open(self, consumer_arn: str, shard_id: str, start: dict[str, Any]) -> Subscription:
        stream, _ = StreamExtras(self.kinesis).find_consumer(None, None, consumer_arn)
        kind = str(start.get("Type") or "")
        if kind not in START_TYPES:
            raise InvalidArgumentException(
                f"1 validation error detected: Value '{kind}' at 'startingPosition.type' failed to satisfy "
                f"constraint: Member must satisfy enum value set: [{', '.join(START_TYPES)}]"
            )
        shard = stream.shards.get(shard_id)
        key = (consumer_arn, shard.shard_id)
        now = self.kinesis.clock.wall_ms()
        if now - self.started.get(key, now - TAKEOVER_MS) < TAKEOVER_MS:
            raise ResourceInUseException(
                f"Another active subscription exists for consumer {consumer_arn} and shard {shard.shard_id}."
            )
        iterator = self.kinesis.get_shard_iterator(
            stream.name, shard.shard_id, kind, start.get("SequenceNumber"), start.get("Timestamp")
        )["ShardIterator"]
        position = decode_iterator(self.kinesis._secret, iterator, now).position
        if (previous := self.active.get(key)) is not None:
            previous.taken_over = True
        subscription = Subscription(self.kinesis, stream.name, shard.shard_id, iterator, position - 1, key)
        self.active[key] = subscription
        self.started[key] = now
        return subscription

    def close(self, subscription: Subscription) -> None:
        if self.active.get(subscription.key) is subscription:
            del self.active[subscription.key]
