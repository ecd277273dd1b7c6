"""Delivering a routed message to the subscriptions that match it: QoS downgrade, one copy per subscriber, shared
groups, receive permission, and an encoding per protocol version made once per message."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.broker.connection import Connection
from gateway.broker.intake import expiry_seconds_left
from gateway.broker.local import LocalSubscriber
from gateway.messages import Message
from mqttwire import properties as mp
from mqttwire.codec import publish_parts
from mqttwire.packets import V5

if TYPE_CHECKING:
    from gateway.broker.core import Broker, Subscription
    from gateway.broker.sessions import ParkedSession

log = logging.getLogger("edgesim.broker")


def parts(message: Message, version: int, retain: bool, qos: int, now_ms: int) -> tuple[bytes, bytes]:
    """The PUBLISH of `message` for a receiver speaking `version`, made once per message: for QoS 1 split around its
    packet id, for QoS 0 the whole packet and b"".

    MQTT 5 receivers get the message's properties and the seconds it has left before it expires; MQTT 3.1.1
    receivers get neither (the fields do not exist there).
    """
    encoded = message.encoded
    key = (version, retain, qos)
    if encoded is None:
        encoded = message.encoded = {}
    else:
        found = encoded.get(key)
        if found is not None:
            return found
    block = None
    if version == V5:
        if message.expires_ms:
            props = dict(message.properties or {})
            props[mp.MESSAGE_EXPIRY_INTERVAL] = expiry_seconds_left(message.expires_ms, now_ms)
            block = mp.encode_properties(props)
        elif message.properties_block is not None:
            block = message.properties_block
        elif message.properties:
            block = mp.encode_properties(message.properties)
        else:
            block = mp.EMPTY_BLOCK
    head, tail = publish_parts(message.topic, message.payload, qos, retain, block)
    result = encoded[key] = (head, tail) if qos else (head + tail, b"")
    return result


def deliver(broker: Broker, message: Message) -> None:
    topic = message.topic
    subs = broker.trie.match(topic)
    if not subs:
        return
    qos = message.qos
    sender = broker.sender
    targets: dict[Connection | ParkedSession | LocalSubscriber, tuple[int, bool]] = {}
    for sub in subs:
        if sub.share is not None:
            continue
        if sub.no_local and sub.conn is sender:
            continue
        granted = sub.qos if sub.qos < qos else qos
        found = targets.get(sub.conn)
        if found is None or found[0] < granted:
            targets[sub.conn] = (granted, sub.retain_as_published and message.retain)
    if len(targets) < len(subs):
        _pick_shared(broker, subs, qos, targets)
    if message.expires_ms and message.expires_ms <= broker.clock.wall_ms():
        return
    now = broker.clock.wall_ms() if message.expires_ms else 0
    generation = broker.registry.generation
    for conn, (granted, retain) in targets.items():
        if conn.closed:
            continue
        if isinstance(conn, LocalSubscriber):
            _deliver_local(broker, conn, message, granted)
            continue
        if isinstance(conn, Connection) and conn.generation != generation and not broker.refresh(conn):
            continue
        authorizer = conn.authorizer
        if authorizer is None or not authorizer.can_receive(topic):
            continue
        head, tail = parts(message, conn.version, retain, granted, now)
        if conn.max_out and len(head) + len(tail) + 2 > conn.max_out:
            continue  # larger than the client said it accepts [MQTT-3.1.2-25]: as if delivered
        if granted == 0:
            if conn.backlog() > broker.outgoing_limit:
                conn.dropped_qos0 += 1
                broker.stats["dropped_qos0"] += 1
                continue
            conn.send(head)
        else:
            if not conn.deliver_qos1(head, tail, sender):
                broker.stats["dropped_qos1"] += 1
                continue
            broker.out_qos1 += 1
        broker.stats["messages_out"] += 1


def _deliver_local(broker: Broker, conn: LocalSubscriber, message: Message, granted: int) -> None:
    sender = message.client_id
    try:
        conn.callback(message.topic, message.payload, granted, sender, message.properties)
    except Exception:  # an in-process view must never cost a client its delivery
        broker.local_failures += 1
        if broker.local_failures <= 10 or broker.local_failures % 10_000 == 0:
            log.exception("local subscriber %s failed on %s (%d failures so far)", conn.client_id, message.topic,
                          broker.local_failures)  # fmt: skip


def _pick_shared(
    broker: Broker,
    subs: list[Subscription],
    qos: int,
    targets: dict[Connection | ParkedSession | LocalSubscriber, tuple[int, bool]],
) -> None:
    groups: dict[str, list[Subscription]] = {}
    for sub in subs:
        if sub.share is not None:
            groups.setdefault(sub.share + "\x00" + sub.filter, []).append(sub)
    for key, members in groups.items():
        turn = broker.share_turn.get(key, 0)
        broker.share_turn[key] = turn + 1
        sub = members[turn % len(members)]
        granted = min(sub.qos, qos)
        found = targets.get(sub.conn)
        if found is None or found[0] < granted:
            targets[sub.conn] = (granted, False)
