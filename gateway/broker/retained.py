"""Retained messages: one per topic, kept in memory for delivery and in the store for restarts, with the MQTT 5
properties they were published with and their expiry."""

from __future__ import annotations

from gateway.messages import Message
from gateway.store import Store
from mqttwire import properties as mp


class RetainedStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_topic: dict[str, Message] = {}
        rows = store.query("SELECT topic, payload, qos, modified_ms, properties, expires_ms FROM retained_messages")
        for row in rows:
            message = Message(row["topic"], bytes(row["payload"]), row["qos"], True, received_ms=row["modified_ms"])
            if row["properties"]:
                message.properties, _ = mp.decode_properties(row["properties"], 0, len(row["properties"]), mp.WILL)
            message.expires_ms = row["expires_ms"]
            self._by_topic[message.topic] = message

    def put(self, topic: str, message: Message) -> None:
        """Store, or delete when the payload is empty [MQTT-3.3.1-10]."""
        payload = message.payload
        with self.store.transaction() as db:
            if payload:
                props = mp.encode_properties(message.properties) if message.properties else None
                db.execute(
                    "INSERT OR REPLACE INTO retained_messages(topic, payload, qos, modified_ms, properties, expires_ms)"
                    " VALUES (?,?,?,?,?,?)",
                    (topic, payload, message.qos, message.received_ms, props, message.expires_ms),
                )
            else:
                db.execute("DELETE FROM retained_messages WHERE topic=?", (topic,))
        if payload:
            kept = Message(topic, payload, message.qos, True, received_ms=message.received_ms)
            kept.properties, kept.expires_ms = message.properties, message.expires_ms
            self._by_topic[topic] = kept
        else:
            self._by_topic.pop(topic, None)

    def message(self, topic: str, now_ms: int) -> Message | None:
        """The retained message of `topic`, unless it has expired (MQTT 5 Message Expiry Interval)."""
        kept = self._by_topic.get(topic)
        if kept is not None and kept.expires_ms and kept.expires_ms <= now_ms:
            return None
        return kept

    def get(self, topic: str) -> tuple[bytes, int, int] | None:
        kept = self._by_topic.get(topic)
        return None if kept is None else (kept.payload, kept.qos, kept.received_ms)

    def topics(self) -> list[str]:
        return sorted(self._by_topic)
