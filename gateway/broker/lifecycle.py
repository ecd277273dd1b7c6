"""AWS IoT's lifecycle events (reference §1.3): presence and subscription changes, built only when someone listens.

`sessionIdentifier` is a UUID per session (kept while a persistent session is resumed); `versionNumber` rises
with every connect of a client id, so consumers can order a client's connect and disconnect events.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from gateway.broker.delivery import deliver
from gateway.messages import Message

if TYPE_CHECKING:
    from gateway.broker.connection import Connection
    from gateway.broker.core import Broker

VERSIONS_KEPT = 100_000  # client ids whose connect count is remembered


class LifecycleEvents:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._versions: OrderedDict[str, int] = OrderedDict()

    def _version(self, client_id: str, bump: bool) -> int:
        versions = self._versions
        number = versions.pop(client_id, 0) + (1 if bump else 0)
        versions[client_id] = number
        if len(versions) > VERSIONS_KEPT:
            versions.popitem(last=False)
        return number

    def presence(self, event: str, conn: Connection) -> None:
        number = self._version(conn.client_id, event == "connected")
        topic = f"$aws/events/presence/{event}/{conn.client_id}"
        if not self.broker.trie.match(topic):
            return
        body = self._body(event, conn)
        body["ipAddress"] = conn.peer_ip or ""
        body["versionNumber"] = number
        if event == "disconnected":
            body["clientInitiatedDisconnect"] = conn.clean_disconnect
            body["disconnectReason"] = (
                "CLIENT_INITIATED_DISCONNECT" if conn.clean_disconnect else conn.disconnect_reason or "CONNECTION_LOST"
            )
        self._publish(topic, body, conn)

    def subscriptions(self, event: str, conn: Connection, topics: list[str]) -> None:
        topic = f"$aws/events/subscriptions/{event}/{conn.client_id}"
        if not self.broker.trie.match(topic):
            return
        body = self._body(event, conn)
        body["topics"] = topics
        self._publish(topic, body, conn)

    def _body(self, event: str, conn: Connection) -> dict[str, Any]:
        return {
            "clientId": conn.client_id,
            "timestamp": self.broker.clock.wall_ms(),
            "eventType": event,
            "sessionIdentifier": conn.session_id,
            "principalIdentifier": conn.principal or "anonymous",
        }

    def _publish(self, topic: str, body: dict[str, Any], conn: Connection) -> None:
        message = Message(topic, orjson.dumps(body), 1, client_id=conn.client_id, received_ms=body["timestamp"],
                          door="lifecycle")  # fmt: skip
        # Delivered, not routed: lifecycle events reach subscribers (and the dashboard) but no rule counts.
        deliver(self.broker, message)
