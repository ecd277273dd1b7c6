"""Drains the spool into the cloud while the link is up: oldest first, at most `max_in_flight` QoS 1 publishes
without a PUBACK, each message deleted only once the cloud acknowledged it."""

from __future__ import annotations

import asyncio
import logging

from gateway.edge.cloud import CloudLink
from gateway.edge.spool import Spool, SpooledMessage
from mqttwire import reasons
from mqttwire.client import MqttError, PublishError

log = logging.getLogger("edgesim.edge.forwarder")

# PUBACKed seqs are deleted together, in the store's group commit: one commit per batch, not one per message.
ACK_BATCH = 256
# MQTT 5 refusals worth another try (rate, quota, busy): the message stays spooled and goes again after a pause.
_RETRYABLE = frozenset({reasons.SERVER_BUSY, reasons.MESSAGE_RATE_TOO_HIGH, reasons.QUOTA_EXCEEDED})
RETRY_AFTER_S = 1.0


class Forwarder:
    def __init__(self, spool: Spool, cloud: CloudLink, max_in_flight: int) -> None:
        self.spool = spool
        self.cloud = cloud
        self.max_in_flight = max_in_flight
        self.sent = 0
        self.delivered = 0
        self.refused = 0  # messages an MQTT 5 cloud refused with a reason code, dropped from the spool
        self._wake = asyncio.Event()
        self._acked: list[int] = []
        self._flush_scheduled = False
        self._room = asyncio.Event()

    def wake(self) -> None:
        """Something was appended, or the link came up."""
        self._wake.set()

    def link_down(self) -> None:
        """Messages in flight when the link dropped are pending again, in their place; QoS 0 ones go as the
        nucleus drops them."""
        self._flush_acks()
        self.spool.release(self.spool.in_flight)
        dropped = self.spool.connection_interrupted()
        if dropped:
            log.info("cloud link interrupted: dropped %d queued QoS 0 messages", len(dropped))

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if not self.cloud.online:
                await self._wake.wait()
                continue
            room = self.max_in_flight - len(self.spool.in_flight)
            batch = self.spool.peek(room) if room > 0 else []
            if not batch:
                self._room.clear()
                waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._room.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                continue
            self.spool.mark_in_flight(m.seq for m in batch)
            for message in batch:
                self._send(message)
            await asyncio.sleep(0)

    def _send(self, message: SpooledMessage) -> None:
        seq = message.seq

        def done(error: MqttError | None) -> None:
            if isinstance(error, PublishError) and error.reason_code in _RETRYABLE:
                if seq in self.spool.in_flight:
                    self.spool.release([seq])
                asyncio.get_running_loop().call_later(RETRY_AFTER_S, self.wake)
                return
            if isinstance(error, PublishError):
                # An MQTT 5 cloud refused this message (not authorized, too large, ...): retrying cannot help.
                log.warning("cloud refused %s: %s; dropped from the spool", message.topic, error)
                self.refused += 1
            elif error is not None:
                if seq in self.spool.in_flight:
                    self.spool.release([seq])
                return
            else:
                self.delivered += 1
            self._acked.append(seq)
            if len(self._acked) >= ACK_BATCH:
                self._flush_acks()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_acks)
            self._room.set()

        self.sent += 1
        # QoS 1 towards the cloud always, as the bridge does (reference §11.3).
        self.cloud.send(message.topic, message.payload, 1, done, message.properties)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        acked, self._acked = self._acked, []
        if acked:
            self.spool.ack_soon(acked)  # with the store's group commit; if it fails they go again (at least once)
