"""The one way in for a message, whatever door it came by (MQTT 3.1.1/5 over TLS or WebSocket, HTTPS publish,
iot-data Publish, the edge bridge, wills): validate, authorize, build the Message with its MQTT 5 fields, route.

A refusal is raised as a typed `PublishRefused`; each door turns it into its own protocol's answer (an MQTT 5
reason code, a closed MQTT 3.1.1 connection, an AWS error over HTTP). Acknowledging is the door's job too: it waits
on `message.hold` when the message started durable work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.broker.exceptions import PayloadFormatInvalid, PayloadTooLarge, PublishNotAuthorized, TopicNameInvalid
from gateway.clock import Clock
from gateway.config import MqttLimits
from gateway.errors import InvalidRequestException
from gateway.identity.authorizer import Authorizer
from gateway.limits import MAX_MESSAGE_EXPIRY_S
from gateway.messages import Message
from gateway.topics import validate_topic_name
from mqttwire import properties as mp

_VALID_TOPICS_KEPT = 65_536
# Remembered property blocks: at most this many, each at most this long (devices' tags are tens of bytes; a client
# sending large, ever-different blocks must not make the intake hold megabytes of them).
_BLOCKS_KEPT = 4_096
_BLOCK_KEPT_BYTES = 512
# Properties that describe the message itself and travel with it; the rest belong to one hop.
_FORWARDED = frozenset(
    (
        mp.PAYLOAD_FORMAT_INDICATOR,
        mp.CONTENT_TYPE,
        mp.RESPONSE_TOPIC,
        mp.CORRELATION_DATA,
        mp.USER_PROPERTY,
    )
)
# Forwarded as they came, with nothing to check against the payload or the clock (most devices' blocks).
_FORWARDED_AS_IS = _FORWARDED - {mp.PAYLOAD_FORMAT_INDICATOR}


class PublishAuthority(Protocol):
    """What the intake asks of a publisher's authorizer (None for doors already authorized another way)."""

    def can_publish(self, topic: str) -> bool: ...

    def can_retain_publish(self, topic: str) -> bool: ...


class Intake:
    def __init__(self, limits: MqttLimits, clock: Clock, route: Callable[[Message], None]) -> None:
        self.limits = limits
        self.clock = clock
        self.route = route
        self._valid_topics: set[str] = set()
        self._blocks_as_is: set[bytes | None] = set()  # property blocks known to need no check (None never is)

    def admit(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: mp.Properties | None,
        *,
        door: str,
        client_id: str | None = None,
        principal: str | None = None,
        authorizer: PublishAuthority | Authorizer | None = None,
        acknowledged: bool = False,
        hops: int = 0,
        properties_block: bytes | None = None,
    ) -> Message:
        """Admit and route one message; the routed Message comes back (its `hold` tells the door what to wait for)."""
        if topic not in self._valid_topics:
            self.check_topic(topic)
        if len(payload) > self.limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"The payload of {len(payload)} bytes exceeds the maximum of {self.limits.max_payload_bytes}"
                " (PAYLOAD_LIMIT_EXCEEDED)"
            )
        if authorizer is not None:
            if not authorizer.can_publish(topic):
                raise PublishNotAuthorized(f"Not authorized to publish to topic/{topic}")
            if retain and not authorizer.can_retain_publish(topic):
                raise PublishNotAuthorized(f"Not authorized to retain a message on topic/{topic}", "iot:RetainPublish")
        now = self.clock.wall_ms()
        message = Message(topic, payload, qos, retain, client_id, principal, now, door, hops)
        if properties:
            if properties_block in self._blocks_as_is or self._forwarded_as_is(properties, properties_block):
                # Read-only once admitted: kept, with the block as it came.
                message.properties = properties
                message.properties_block = properties_block
            else:
                self._apply_properties(message, properties, now, properties_block)
        message.acknowledged = acknowledged and qos == 1
        self.route(message)
        return message

    def _forwarded_as_is(self, properties: mp.Properties, block: bytes | None) -> bool:
        """Whether the properties go to subscribers as they came, with nothing to check; a publisher repeats its
        block message after message, so the verdict on a block is remembered (bounded)."""
        if not properties.keys() <= _FORWARDED_AS_IS:
            return False
        if block is not None and len(block) <= _BLOCK_KEPT_BYTES:
            if len(self._blocks_as_is) >= _BLOCKS_KEPT:
                self._blocks_as_is.clear()
            self._blocks_as_is.add(block)
        return True

    def check_topic(self, topic: str) -> None:
        """Validate a topic name once; the same topics repeat, so valid ones are remembered (bounded)."""
        try:
            validate_topic_name(topic, max_bytes=self.limits.max_topic_bytes, max_slashes=self.limits.max_topic_slashes)
        except InvalidRequestException as exc:
            raise TopicNameInvalid(exc.message) from None
        if len(self._valid_topics) >= _VALID_TOPICS_KEPT:
            self._valid_topics.clear()
        self._valid_topics.add(topic)

    @staticmethod
    def _apply_properties(message: Message, properties: mp.Properties, now: int, block: bytes | None) -> None:
        if properties.get(mp.PAYLOAD_FORMAT_INDICATOR) == 1:
            try:
                message.payload.decode("utf-8")
            except UnicodeDecodeError:
                raise PayloadFormatInvalid("The payload format indicator says UTF-8; the payload is not") from None
        expiry = properties.get(mp.MESSAGE_EXPIRY_INTERVAL)
        if expiry is not None:
            message.expires_ms = now + 1000 * min(max(int(expiry), 1), MAX_MESSAGE_EXPIRY_S)
        # Properties are read-only once admitted, so a block with nothing to take out is kept as it is.
        kept = properties
        if not properties.keys() <= _FORWARDED:
            kept = {key: value for key, value in properties.items() if key in _FORWARDED}
        if kept:
            message.properties = kept
            if block is not None and len(kept) == len(properties):
                message.properties_block = block  # nothing to take out or change: subscribers get it as sent


def expiry_seconds_left(expires_ms: int, now_ms: int) -> int:
    """The Message Expiry Interval to forward: the seconds the message has left (at least 1 while alive)."""
    return max(1, (expires_ms - now_ms + 999) // 1000)
