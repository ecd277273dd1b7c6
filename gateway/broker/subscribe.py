"""SUBSCRIBE and UNSUBSCRIBE, MQTT 3.1.1 and 5, with AWS IoT's answers (reference §1.1, §1.5)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.broker import delivery
from gateway.errors import InvalidRequestException
from gateway.topics import validate_topic_filter
from mqttwire import codec, reasons
from mqttwire import properties as mp
from mqttwire.errors import ProtocolViolation
from mqttwire.packets import V5, Suback, Subscribe, Unsuback, Unsubscribe

if TYPE_CHECKING:
    from gateway.broker.connection import Connection
    from gateway.broker.core import Broker, Subscription

log = logging.getLogger("edgesim.broker")


def on_subscribe(broker: Broker, conn: Connection, packet: Subscribe) -> None:
    if conn.generation != broker.registry.generation and not broker.refresh(conn):
        return
    authorizer = conn.authorizer
    assert authorizer is not None
    v5 = conn.version == V5
    limits = broker.config.mqtt
    if not v5 and any(f.qos == 2 for f in packet.filters):
        # AWS IoT answers a v3.1.1 SUBSCRIBE asking QoS 2 with no SUBACK at all (reference §1.1, W5).
        log.info("%s asked for QoS 2; no SUBACK, as AWS IoT does", conn.client_id)
        return
    if v5 and packet.properties and mp.SUBSCRIPTION_IDENTIFIER in packet.properties:
        # AWS IoT does not support subscription identifiers (CONNACK says so): every filter is refused.
        refused = [reasons.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED] * len(packet.filters)
        _suback(conn, packet.packet_id, refused, "subscription identifiers are not supported")
        return
    codes: list[int] = []
    problems: list[str] = []
    retained_out: list[tuple[Subscription, int]] = []
    accepted: list[str] = []
    for request in packet.filters:
        topic_filter = request.topic_filter
        try:
            validate_topic_filter(topic_filter, max_bytes=limits.max_topic_bytes, max_slashes=limits.max_topic_slashes)
        except InvalidRequestException as exc:
            codes.append(reasons.TOPIC_FILTER_INVALID if v5 else 0x80)
            problems.append(exc.message)
            continue
        shared = topic_filter.startswith("$share/")
        if shared and request.no_local:
            raise ProtocolViolation("No Local on a shared subscription", "MQTT-3.8.3-4")
        if not authorizer.can_subscribe(topic_filter):
            broker.denied("iot:Subscribe")
            if not v5:
                # MQTT 3.1.1 on AWS: an unauthorized SUBSCRIBE closes the connection (reference §1.5, W4).
                conn.close(f"iot:Subscribe denied on topicfilter/{topic_filter}")
                return
            codes.append(reasons.NOT_AUTHORIZED)
            problems.append(f"iot:Subscribe denied on topicfilter/{topic_filter}")
            continue
        existed = topic_filter in conn.subscriptions
        if not existed and len(conn.subscriptions) >= limits.subscriptions_per_connection:
            codes.append(reasons.QUOTA_EXCEEDED if v5 else 0x80)
            problems.append(f"more than {limits.subscriptions_per_connection} subscriptions on one connection")
            continue
        # QoS 2 is granted as 1, the Maximum QoS this server has (MQTT 5 §3.8.4: a lower QoS may be granted).
        qos = min(request.qos, 1)
        options = qos | (4 if request.no_local else 0) | (8 if request.retain_as_published else 0)
        sub = broker.add_subscription(conn, topic_filter, options)
        accepted.append(topic_filter)
        codes.append(qos)
        handling = request.retain_handling
        wants_retained = handling == 0 or (handling == 1 and not existed)
        if wants_retained and sub.share is None and "+" not in sub.filter and "#" not in sub.filter:
            retained_out.append((sub, qos))
    _suback(conn, packet.packet_id, codes, "; ".join(problems) if problems else None)
    broker.save_session(conn)
    if accepted:
        broker.lifecycle.subscriptions("subscribed", conn, accepted)
    # AWS delivers stored retained messages only to subscriptions whose filter equals the topic.
    now = broker.clock.wall_ms()
    for sub, qos in retained_out:
        stored = broker.retained.message(sub.filter, now)
        if stored is None or not authorizer.can_receive(sub.filter):
            continue
        granted = min(qos, stored.qos)
        if stored.expires_ms:
            stored.encoded = None  # its remaining expiry changes: encode afresh
        head, tail = delivery.parts(stored, conn.version, True, granted, now)
        if granted:
            conn.deliver_qos1(head, tail, None)
        else:
            conn.send(head)


def _suback(conn: Connection, packet_id: int, codes: list[int], problem: str | None) -> None:
    props = conn.reason_props(problem) if problem and conn.version == V5 else None
    conn.send(codec.encode(Suback(packet_id, codes, props), conn.version))


def on_unsubscribe(broker: Broker, conn: Connection, packet: Unsubscribe) -> None:
    removed: list[str] = []
    codes: list[int] = []
    for topic_filter in packet.filters:
        sub = conn.subscriptions.pop(topic_filter, None)
        if sub is not None:
            broker.trie.remove(sub.filter, sub)
            removed.append(topic_filter)
            codes.append(reasons.SUCCESS)
        else:
            codes.append(reasons.NO_SUBSCRIPTION_EXISTED)
    conn.send(codec.encode(Unsuback(packet.packet_id, codes), conn.version))
    broker.save_session(conn)
    if removed:
        broker.lifecycle.subscriptions("unsubscribed", conn, removed)
