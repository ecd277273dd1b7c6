"""Wills: published when a connection ends without a clean DISCONNECT (or with MQTT 5's "disconnect with will"),
after the MQTT 5 Will Delay Interval when the session outlives the connection (reference §1.2)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway.broker.exceptions import PublishRefused
from mqttwire import properties as mp
from mqttwire.packets import Will

if TYPE_CHECKING:
    from gateway.broker.connection import Connection
    from gateway.broker.core import Broker

log = logging.getLogger("edgesim.broker")


class Wills:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._delayed: dict[str, tuple[asyncio.TimerHandle, Will, str | None]] = {}

    def connection_ended(self, conn: Connection) -> None:
        will = conn.will
        if will is None:
            return
        conn.will = None
        delay = (will.properties or {}).get(mp.WILL_DELAY_INTERVAL, 0)
        if delay and conn.persistent:
            # Until the delay passes or the session ends, whichever is first; a returning client cancels it.
            delay = min(delay, conn.session_expiry)
            handle = self.broker.loop.call_later(delay, self._due, conn.client_id)
            self._delayed[conn.client_id] = (handle, will, conn.principal)
            return
        self.publish(conn.client_id, will, conn.principal)

    def client_returned(self, client_id: str, ended: bool) -> None:
        """The client connected again before its will was due: no will [MQTT-3.1.3-9], unless its clean start ended
        the old session, which sends it now."""
        delayed = self._delayed.pop(client_id, None)
        if delayed is None:
            return
        delayed[0].cancel()
        if ended:
            self.publish(client_id, delayed[1], delayed[2])

    def session_ended(self, client_id: str) -> None:
        if client_id in self._delayed:
            self._due(client_id)

    def _due(self, client_id: str) -> None:
        delayed = self._delayed.pop(client_id, None)
        if delayed is not None:
            delayed[0].cancel()
            self.publish(client_id, delayed[1], delayed[2])

    def cancel_all(self) -> None:
        for handle, _, _ in self._delayed.values():
            handle.cancel()
        self._delayed.clear()

    def publish(self, client_id: str, will: Will, principal: str | None) -> None:
        """Its permission was checked at CONNECT; it goes through the intake like any message."""
        props = dict(will.properties) if will.properties else None
        if props is not None:
            props.pop(mp.WILL_DELAY_INTERVAL, None)
        try:
            self.broker.intake.admit(
                will.topic, will.payload, will.qos, will.retain, props, door="will", client_id=client_id,
                principal=principal,
            )  # fmt: skip
        except PublishRefused as refusal:
            log.info("will of %s not published: %s", client_id, refusal.message)
