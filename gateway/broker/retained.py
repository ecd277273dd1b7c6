"""Retained messages: one per topic, kept in memory for delivery and in the store for restarts."""

from __future__ import annotations

from gateway.store import Store


class RetainedStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_topic: dict[str, tuple[bytes, int, int]] = {
            row["topic"]: (bytes(row["payload"]), row["qos"], row["modified_ms"])
            for row in store.query("SELECT topic, payload, qos, modified_ms FROM retained_messages")
        }

    def put(self, topic: str, payload: bytes, qos: int, now_ms: int) -> None:
        """Store, or delete when the payload is empty [MQTT-3.3.1-10]."""
        with self.store.transaction() as db:
            if payload:
                db.execute(
                    "INSERT OR REPLACE INTO retained_messages(topic, payload, qos, modified_ms) VALUES (?,?,?,?)",
                    (topic, payload, qos, now_ms),
                )
            else:
                db.execute("DELETE FROM retained_messages WHERE topic=?", (topic,))
        if payload:
            self._by_topic[topic] = (payload, qos, now_ms)
        else:
            self._by_topic.pop(topic, None)

    def get(self, topic: str) -> tuple[bytes, int, int] | None:
        return self._by_topic.get(topic)

    def topics(self) -> list[str]:
        return sorted(self._by_topic)
