"""Persistent MQTT sessions (MQTT 3.1.1 clean_session=0, MQTT 5 Session Expiry Interval > 0; reference §1.2):
subscriptions and queued QoS 1 messages of clients that are offline, kept in the store so they survive a restart,
and the stand-in that receives for them."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.broker.intake import expiry_seconds_left
from gateway.messages import AckHold
from gateway.store import Store
from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.frame import decode_varint, split_frame
from mqttwire.packets import V5, Publish

if TYPE_CHECKING:
    from gateway.broker.core import Subscription
    from gateway.registry import Registry

log = logging.getLogger("edgesim.broker")

MAX_QUEUED_PER_SESSION = 20_000  # QoS 1 messages kept for one offline client; the oldest are kept, newer dropped


def _topic_span(packet: bytes) -> tuple[int, int]:
    """Where the topic of a PUBLISH (whole, or only its head) starts and ends, past the fixed header."""
    _, pos = decode_varint(packet, 1, len(packet))
    return pos + 2, pos + 2 + ((packet[pos] << 8) | packet[pos + 1])


def publish_topic(head: bytes) -> str:
    """The topic of a PUBLISH from the bytes before its packet id."""
    start, end = _topic_span(head)
    return head[start:end].decode()


def split_publish(packet: bytes) -> tuple[bytes, bytes]:
    """A QoS 1 PUBLISH as sent (head + packet id + tail) back into (head with DUP set, tail) for redelivery."""
    _, end = _topic_span(packet)
    return bytes((packet[0] | 0x08,)) + packet[1:end], packet[end + 2 :]


def with_expiry_left(head: bytes, tail: bytes, seconds: int) -> tuple[bytes, bytes]:
    """An MQTT 5 QoS 1 PUBLISH (head, tail) again with its Message Expiry Interval set to the seconds it has left."""
    packet = head + b"\x00\x01" + tail
    frame = split_frame(packet, 0, len(packet))
    assert frame is not None
    first, start, end = frame
    decoded = codec.decode(first, packet[start:end], V5)
    assert isinstance(decoded, Publish)
    props = dict(decoded.properties or {})
    props[mp.MESSAGE_EXPIRY_INTERVAL] = seconds
    new_head, new_tail = codec.publish_parts(
        decoded.topic, decoded.payload, 1, decoded.retain, mp.encode_properties(props)
    )
    if decoded.dup:
        new_head = bytes((new_head[0] | 0x08,)) + new_head[1:]
    return new_head, new_tail


@dataclass(frozen=True, slots=True)
class StoredSession:
    subscriptions: dict[str, int]  # filter -> options byte (QoS, No Local, Retain As Published)
    version: int
    expiry_s: int
    principal: str | None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    seq: int
    head: bytes
    tail: bytes
    expired: bool


class SessionStore:
    """The store's side: one row per persistent session, one per queued message, in arrival order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Client ids with a row here: a clean-session CONNECT (most of them) then costs no transaction.
        self.stored = {
            row[0]
            for row in store.query(
                "SELECT client_id FROM mqtt_sessions UNION SELECT client_id FROM mqtt_session_messages"
            )
        }
        # Messages for offline sessions and acknowledged ones, written by one store write per loop turn (the group
        # commit); the publishers' acknowledgements wait for that commit through their holds.
        self._buffer: list[tuple[str, bytes, bytes, int]] = []
        self._acked: list[tuple[int]] = []
        self._holds: list[AckHold] = []
        self._written: asyncio.Future[None] | None = None

    def _soon(self) -> None:
        if self._written is None:
            holds: list[AckHold] = []
            self._written = self.store.commit_soon(functools.partial(self._write, holds))
            self._written.add_done_callback(functools.partial(self._written_done, holds))

    def enqueue_soon(self, client_id: str, head: bytes, tail: bytes, hold: AckHold | None, expires_ms: int = 0) -> None:
        self._soon()
        self._buffer.append((client_id, head, tail, expires_ms))
        self.stored.add(client_id)
        if hold is not None:
            hold.take()
            self._holds.append(hold)

    def acknowledge_soon(self, seq: int) -> None:
        """The client acknowledged a queued message: its row goes."""
        self._soon()
        self._acked.append((seq,))

    def _write(self, holds: list[AckHold], db: sqlite3.Connection) -> None:
        buffer, self._buffer = self._buffer, []
        acked, self._acked = self._acked, []
        holds.extend(self._holds)
        self._holds, self._written = [], None
        db.executemany(
            "INSERT INTO mqtt_session_messages(client_id, head, tail, expires_ms) VALUES (?, ?, ?, ?)", buffer
        )
        db.executemany("DELETE FROM mqtt_session_messages WHERE seq = ?", acked)

    @staticmethod
    def _written_done(holds: list[AckHold], written: asyncio.Future[None]) -> None:
        if written.exception() is not None:  # commit_soon's futures are never cancelled
            # Nothing of this turn is stored: the publishers get no acknowledgement and send again; the
            # acknowledged rows stay and go out once more (with DUP), as at-least-once allows.
            log.error("writing queued and acknowledged session messages failed: %s", written.exception())
            for hold in holds:
                hold.fail()
            return
        for hold in holds:
            hold.release()

    def flush(self) -> None:
        """Commit what was buffered now (every reader and writer below calls this first, to keep order)."""
        self.store.flush()

    def load(self, now_ms: int) -> dict[str, StoredSession]:
        """Every unexpired session; expired ones are deleted on the way."""
        self.flush()
        with self.store.transaction() as db:
            expired = [r[0] for r in db.execute("SELECT client_id FROM mqtt_sessions WHERE expires_ms <= ?", (now_ms,))]
            for client_id in expired:
                self._delete(client_id)
        rows = self.store.query("SELECT client_id, subscriptions, version, expiry_s, principal FROM mqtt_sessions")
        return {
            row["client_id"]: StoredSession(
                json.loads(row["subscriptions"]), row["version"], row["expiry_s"], row["principal"]
            )
            for row in rows
        }

    def save(
        self,
        client_id: str,
        subscriptions: dict[str, int],
        expires_ms: int | None,
        version: int = 4,
        expiry_s: int = 3600,
        principal: str | None = None,
    ) -> None:
        """Create or update a session; `expires_ms` None while its client is connected."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO mqtt_sessions"
                "(client_id, subscriptions, expires_ms, version, expiry_s, principal) VALUES (?, ?, ?, ?, ?, ?)",
                (client_id, json.dumps(subscriptions, sort_keys=True), expires_ms, version, expiry_s, principal),
            )
        self.stored.add(client_id)

    def delete(self, client_id: str) -> None:
        if client_id not in self.stored:
            return
        self.flush()
        with self.store.transaction():
            self._delete(client_id)

    def _delete(self, client_id: str) -> None:
        self.stored.discard(client_id)
        self.store.db.execute("DELETE FROM mqtt_sessions WHERE client_id = ?", (client_id,))
        self.store.db.execute("DELETE FROM mqtt_session_messages WHERE client_id = ?", (client_id,))

    def enqueue(self, client_id: str, messages: list[tuple[bytes, bytes]]) -> None:
        """Queue now (a client that just went away: what it had not acknowledged)."""
        if messages:
            self.stored.add(client_id)
            self._soon()
            self._buffer.extend((client_id, head, tail, 0) for head, tail in messages)
            self.flush()

    def queued(self, client_id: str) -> int:
        self.flush()
        row = self.store.one("SELECT count(*) FROM mqtt_session_messages WHERE client_id = ?", (client_id,))
        return int(row[0]) if row is not None else 0

    def peek(self, client_id: str, after_seq: int, limit: int | None, now_ms: int) -> list[QueuedMessage]:
        """Queued messages past `after_seq`, oldest first; they stay stored until acknowledged (`delete_messages`).
        A message with an MQTT 5 expiry goes out with the seconds it has left, or is marked expired."""
        self.flush()
        rows = self.store.query(
            "SELECT seq, head, tail, expires_ms FROM mqtt_session_messages WHERE client_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (client_id, after_seq, -1 if limit is None else limit),
        )
        out: list[QueuedMessage] = []
        for seq, stored_head, stored_tail, expires_ms in rows:
            head, tail = bytes(stored_head), bytes(stored_tail)
            expired = bool(expires_ms) and expires_ms <= now_ms
            if expires_ms and not expired:
                head, tail = with_expiry_left(head, tail, expiry_seconds_left(expires_ms, now_ms))
            out.append(QueuedMessage(int(seq), head, tail, expired))
        return out

    def delete_messages(self, seqs: list[int]) -> None:
        self.flush()
        with self.store.transaction() as db:
            db.executemany("DELETE FROM mqtt_session_messages WHERE seq = ?", [(seq,) for seq in seqs])

    def mark_sent(self, heads: list[tuple[int, bytes]]) -> None:
        """Stored messages that went out unacknowledged: next time they carry DUP."""
        self.flush()
        with self.store.transaction() as db:
            db.executemany("UPDATE mqtt_session_messages SET head = ? WHERE seq = ?", [(h, s) for s, h in heads])


class _ReceiveChecked:
    """A parked session's receive permission is checked when the client is back, by its new connection's policy."""

    @staticmethod
    def can_receive(topic: str) -> bool:
        return True


@dataclass(eq=False)
class ParkedSession:
    """Stands in for an offline client's connection in the subscription trie: QoS 1 messages go to the store, QoS 0
    ones are dropped (AWS does not queue them). Quacks like the parts of Connection that delivery uses."""

    client_id: str
    sessions: SessionStore
    registry: Registry  # its generation: parked sessions are never re-authorized while offline
    expires_ms: int
    # The acknowledgement hold of the message being routed (None: nobody waits), from the broker.
    hold_for: Callable[[], AckHold | None] = lambda: None
    # When the message being routed expires (MQTT 5; 0: never), from the broker.
    expiry_for: Callable[[], int] = lambda: 0
    version: int = 4
    expiry_s: int = 3600
    principal: str | None = None  # the certificate the session belongs to (None: an anonymous client's)
    session_id: str = ""
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    queued: int = 0
    dropped: int = 0
    closed: bool = False
    authorizer: _ReceiveChecked = field(default_factory=_ReceiveChecked)
    dropped_qos0: int = 0
    max_out: int = 0

    @property
    def generation(self) -> int:
        return self.registry.generation

    def backlog(self) -> int:
        return 0

    def send(self, packet: bytes) -> None:
        self.dropped_qos0 += 1

    def deliver_qos1(self, head: bytes, tail: bytes, sender: object) -> bool:
        if self.queued >= MAX_QUEUED_PER_SESSION:
            self.dropped += 1
            return False
        self.sessions.enqueue_soon(self.client_id, head, tail, self.hold_for(), self.expiry_for())
        self.queued += 1
        return True
