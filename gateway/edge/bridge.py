"""Local pub/sub (the components' IPC bus) and the MQTT bridge between LocalMqtt, Pubsub and IotCore (§11.3)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.edge.config import Endpoint, TopicMapping
from gateway.topics import TopicTrie
from mqttwire.properties import Properties

log = logging.getLogger("edgesim.edge.bridge")

Handler = Callable[[str, bytes], None]
# Messages the core itself puts on the local broker carry this door: LocalMqtt-source mappings skip them, so a pair
# of mappings A -> LocalMqtt and LocalMqtt -> A on overlapping topics cannot loop.
EDGE_DOOR = "edge"


class LocalPubSub:
    """In-process publish/subscribe with MQTT filters; not persisted, as Greengrass's local pub/sub."""

    def __init__(self) -> None:
        self._trie: TopicTrie[Handler] = TopicTrie()
        self.published = 0

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self._trie.add(topic_filter, handler)

    def publish(self, topic: str, payload: bytes) -> None:
        self.published += 1
        for handler in self._trie.match(topic):
            try:
                handler(topic, payload)
            except Exception:
                log.exception("local pub/sub subscriber of %s failed", topic)


@dataclass(frozen=True)
class BridgeTargets:
    """How the bridge reaches each endpoint."""

    local_mqtt: Callable[[str, bytes, int, Properties | None], None]
    pubsub: Callable[[str, bytes], None]
    iot_core: Callable[[str, bytes, int, Properties | None], None]


class Bridge:
    """Forwards every message matching a mapping's filter from its source to its target, with the target prefix."""

    def __init__(self, mappings: Mapping[str, TopicMapping], targets: BridgeTargets) -> None:
        self._targets = targets
        self._by_source: dict[Endpoint, TopicTrie[TopicMapping]] = {
            "LocalMqtt": TopicTrie(),
            "Pubsub": TopicTrie(),
            "IotCore": TopicTrie(),
        }
        self.mappings = dict(mappings)
        for mapping in self.mappings.values():
            self._by_source[mapping.source].add(mapping.topic, mapping)
        self.forwarded: dict[str, int] = dict.fromkeys(self.mappings, 0)
        self._names = {id(m): name for name, m in self.mappings.items()}

    def filters(self, source: Endpoint) -> list[str]:
        return self._by_source[source].filters()

    def from_local_mqtt(self, topic: str, payload: bytes, qos: int, properties: Properties | None = None) -> None:
        self._forward("LocalMqtt", topic, payload, qos, properties)

    def from_pubsub(self, topic: str, payload: bytes) -> None:
        self._forward("Pubsub", topic, payload, 0, None)

    def from_iot_core(self, topic: str, payload: bytes, qos: int, properties: Properties | None = None) -> None:
        self._forward("IotCore", topic, payload, qos, properties)

    def _forward(self, source: Endpoint, topic: str, payload: bytes, qos: int, properties: Properties | None) -> None:
        """MQTT 5 properties travel between the MQTT endpoints (local pub/sub has none)."""
        for mapping in self._by_source[source].match(topic):
            self.forwarded[self._names[id(mapping)]] += 1
            target_topic = mapping.target_topic_prefix + topic
            if mapping.target == "IotCore":
                self._targets.iot_core(target_topic, payload, 1, properties)  # QoS 1 towards IoT Core, always
            elif mapping.target == "LocalMqtt":
                self._targets.local_mqtt(target_topic, payload, qos, properties)
            else:
                self._targets.pubsub(target_topic, payload)
