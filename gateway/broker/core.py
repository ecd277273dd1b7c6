"""The broker: sessions by client id, the subscription trie, retained messages, wills and message routing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from gateway.broker import connect as connect_step
from gateway.broker import delivery, subscribe
from gateway.broker.connect_auth import ConnectAuth
from gateway.broker.connection import Connection
from gateway.broker.exceptions import PublishRefused
from gateway.broker.intake import Intake
from gateway.broker.lifecycle import LifecycleEvents
from gateway.broker.local import LocalCallback, LocalSubscriber
from gateway.broker.retained import RetainedStore
from gateway.broker.router import Route, classify
from gateway.broker.sessions import ParkedSession, SessionStore, publish_topic, split_publish
from gateway.broker.wills import Wills
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import InvalidRequestException
from gateway.identity.policy_doc import PolicyDocument
from gateway.messages import AckHold, Message
from gateway.registry import Registry, RegistryChange
from gateway.topics import TopicTrie, validate_topic_filter
from mqttwire import codec, reasons
from mqttwire import properties as mp
from mqttwire.errors import ProtocolViolation
from mqttwire.packets import V5, Disconnect, Subscribe, Unsubscribe

log = logging.getLogger("edgesim.broker")

MessageHook = Callable[[Message], None]
LAST_MESSAGES_KEPT = 20_000  # disconnected clients whose last message the dashboard can still show
LAST_MESSAGE_BYTES = 4096


class Subscription:
    __slots__ = ("conn", "filter", "no_local", "qos", "retain_as_published", "share")

    def __init__(
        self,
        conn: Connection | ParkedSession | LocalSubscriber,
        topic_filter: str,
        qos: int,
        share: str | None,
        no_local: bool = False,
        retain_as_published: bool = False,
    ) -> None:
        self.conn = conn
        self.filter = topic_filter
        self.qos = qos
        self.share = share
        self.no_local = no_local
        self.retain_as_published = retain_as_published

    @property
    def options(self) -> int:
        """The subscription options byte as stored with a session (QoS, No Local, Retain As Published)."""
        return self.qos | (4 if self.no_local else 0) | (8 if self.retain_as_published else 0)


class Broker:
    """All connections of every door share this one broker, one trie and one router."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        clock: Clock,
        retained: RetainedStore,
        dev_policy: PolicyDocument | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.config = config
        self.session_store = sessions
        # Offline clients with a persistent session: their subscriptions stay in the trie, bound to these.
        self.parked: dict[str, ParkedSession] = {}
        self.registry = registry
        self.clock = clock
        self.retained = retained
        self.dev_policy = dev_policy
        self.connect_auth: ConnectAuth | None = None  # custom authorizers and SigV4 (gateway/broker/connect_auth.py)
        limits = config.mqtt
        self.max_payload = limits.max_payload_bytes
        # Room for the topic, packet id, properties and length fields on top of the payload limit.
        self.max_packet_bytes = limits.max_payload_bytes + limits.max_topic_bytes + 1024
        self.publishes_per_second = limits.publishes_per_second
        self.inflight_window = limits.inflight_qos1
        # A subscriber's QoS 1 queue past pending_high pauses whoever publishes to it; pending_limit is a hard cap.
        self.pending_high = 1000
        self.pending_limit = 20000
        # A publisher with this many PUBACKs waiting (for durable rule actions, in order) is not read until half
        # have gone out: TCP slows it, so a device that does not wait for its PUBACKs cannot queue without bound.
        self.acks_high = max(2, limits.held_acks)
        self.sender: Connection | None = None
        self.outgoing_limit = limits.outgoing_queue_bytes
        self.connect_timeout = limits.connect_timeout_s
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, Connection] = {}
        self.connections: set[Connection] = set()
        self.trie: TopicTrie[Subscription] = TopicTrie()
        self.shadow_handler: MessageHook | None = None
        self.message_hooks: list[MessageHook] = []
        self.intake = Intake(limits, clock, self.route)
        self.wills = Wills(self)
        self.lifecycle = LifecycleEvents(self)
        self._dirty: list[Connection] = []
        self.share_turn: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.stats = {
            "messages_out": 0,
            "dropped_qos0": 0,
            "dropped_qos1": 0,
            "denied": 0,
            "connects": 0,
            "paused_for_acks": 0,  # times a publisher was not read because its held PUBACKs reached acks_high
        }
        self.in_by_door: dict[str, list[int]] = {}  # door -> [QoS 0 count, QoS 1 count]: messages routed
        self.out_qos1 = 0
        self.denials: dict[str, int] = {}  # policy action -> refusals
        # Client id -> its last PUBLISH (payload cut short), kept when it disconnects; the oldest go past the cap.
        self.last_messages: dict[str, Message] = {}
        self.local_failures = 0
        self.routing: Message | None = None
        registry.subscribe(self._on_registry_change)

    # ---- lifecycle
    def start(self) -> None:
        if self.session_store is not None:
            now = self.clock.wall_ms()
            for client_id, stored in self.session_store.load(now).items():
                parked = self.new_parked(client_id, now, stored.version, stored.expiry_s, stored.principal)
                parked.queued = self.session_store.queued(client_id)
                for topic_filter, options in stored.subscriptions.items():
                    self.add_subscription(parked, topic_filter, options)
        self._sweeper = self.loop.create_task(self._sweep_keepalives(), name="broker-keepalive-sweeper")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        self.wills.cancel_all()
        for conn in list(self.connections):
            conn.close("gateway shutting down", reasons.SERVER_SHUTTING_DOWN)

    def connection_opened(self, conn: Connection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.last_message is not None:
            self._keep_last_message(conn.client_id, conn.last_message)
        current = conn.connected and self.sessions.get(conn.client_id) is conn
        if conn.persistent and current:
            self._park(conn)
        for sub in conn.subscriptions.values():
            self.trie.remove(sub.filter, sub)
        conn.subscriptions.clear()
        if current:
            del self.sessions[conn.client_id]
            if not conn.persistent and self.session_store is not None:
                self.session_store.delete(conn.client_id)  # a resumed session that does not outlive this one
            if conn.will is not None:
                self.wills.connection_ended(conn)
            self.lifecycle.presence("disconnected", conn)

    # ---- persistent sessions
    def new_parked(
        self, client_id: str, now_ms: int, version: int, expiry_s: int, principal: str | None
    ) -> ParkedSession:
        assert self.session_store is not None
        parked = ParkedSession(
            client_id,
            self.session_store,
            self.registry,
            now_ms + 1000 * expiry_s,
            hold_for=self.current_hold,
            expiry_for=self.current_expiry,
            version=version,
            expiry_s=expiry_s,
            principal=principal,
        )
        self.parked[client_id] = parked
        return parked

    def _park(self, conn: Connection) -> None:
        """The client went away: keep its subscriptions, and queue what it has not acknowledged, in order."""
        assert self.session_store is not None
        now = self.clock.wall_ms()
        parked = self.new_parked(conn.client_id, now, conn.version, conn.session_expiry, conn.principal)
        parked.session_id = conn.session_id
        # Messages the store still holds (a drain under way) stay there, marked DUP if they went out; the others
        # (live traffic) are queued behind them.
        stored = conn.stored
        sent = [(seq, split_publish(conn.inflight[pid])[0]) for pid, seq in stored.items() if pid in conn.inflight]
        if sent:
            self.session_store.mark_sent(sent)
        unacked = [split_publish(packet) for pid, packet in conn.inflight.items() if pid not in stored]
        unacked += [(head, tail) for head, tail, seq in conn.pending if not seq]
        conn.inflight.clear()
        conn.pending.clear()
        stored.clear()
        self.session_store.enqueue(conn.client_id, unacked)
        parked.queued = self.session_store.queued(conn.client_id)
        for key, sub in conn.subscriptions.items():
            sub.conn = parked
            parked.subscriptions[key] = sub
        conn.subscriptions.clear()
        self.session_store.save(
            conn.client_id,
            self._options_by_filter(parked.subscriptions),
            parked.expires_ms,
            conn.version,
            conn.session_expiry,
            conn.principal,
        )

    def resume(self, conn: Connection, parked: ParkedSession) -> None:
        """The client is back: its subscriptions move to the connection (as its policy still allows), then the
        messages queued meanwhile follow, oldest first."""
        assert self.session_store is not None and conn.authorizer is not None
        conn.session_id = parked.session_id or conn.session_id
        for key, sub in parked.subscriptions.items():
            if conn.authorizer.can_subscribe(key):
                sub.conn = conn
                conn.subscriptions[key] = sub
            else:
                self.trie.remove(sub.filter, sub)
        self.save_session(conn)
        conn.resume_after = 0
        self._drain_session(conn)

    def _drain_session(self, conn: Connection) -> None:
        """Queued messages go to a returning client oldest first, at most `resume_messages_per_second` a second
        (AWS: 10) alongside live traffic; each stays in the store until the client acknowledges it. Expired ones
        (MQTT 5 Message Expiry Interval) are dropped instead."""
        if conn.closed or self.sessions.get(conn.client_id) is not conn or self.session_store is None:
            return
        rate = self.config.mqtt.resume_messages_per_second
        now = self.clock.wall_ms()
        batch = self.session_store.peek(conn.client_id, conn.resume_after, rate or None, now)
        assert conn.authorizer is not None
        refused: list[int] = []
        for queued in batch:
            conn.resume_after = queued.seq
            if queued.expired or not conn.authorizer.can_receive(publish_topic(queued.head)):
                refused.append(queued.seq)
            else:
                conn.deliver_qos1(queued.head, queued.tail, None, queued.seq)
        if refused:
            self.session_store.delete_messages(refused)
        if rate and len(batch) == rate:
            self.loop.call_later(1.0, self._drain_session, conn)

    def discard_parked(self, client_id: str) -> None:
        parked = self.parked.pop(client_id, None)
        if parked is not None:
            for sub in parked.subscriptions.values():
                self.trie.remove(sub.filter, sub)
        if self.session_store is not None:
            self.session_store.delete(client_id)

    def save_session(self, conn: Connection) -> None:
        if conn.persistent and self.session_store is not None:
            self.session_store.save(
                conn.client_id,
                self._options_by_filter(conn.subscriptions),
                None,
                conn.version,
                conn.session_expiry,
                conn.principal,
            )

    @staticmethod
    def _options_by_filter(subscriptions: dict[str, Subscription]) -> dict[str, int]:
        return {key: sub.options for key, sub in subscriptions.items()}

    def _expire_parked(self) -> None:
        now = self.clock.wall_ms()
        for client_id in [c for c, parked in self.parked.items() if parked.expires_ms <= now]:
            log.info("persistent session of %s expired", client_id)
            self.discard_parked(client_id)
            self.wills.session_ended(client_id)

    def mark_dirty(self, conn: Connection) -> None:
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    async def _sweep_keepalives(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.parked:
                self._expire_parked()
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.connected:
                    # [MQTT-3.1.2-24]: 1.5 x keep-alive without any packet from the client.
                    if conn.keep_alive and now - conn.last_rx > conn.keep_alive * 1.5:
                        conn.disconnect_reason = "MQTT_KEEP_ALIVE_TIMEOUT"
                        conn.close("keep-alive timeout", reasons.KEEP_ALIVE_TIMEOUT)
                elif now - conn.opened > self.connect_timeout:
                    # From accept, not from the last byte: a client dribbling a byte at a time is not a CONNECT.
                    conn.close("no CONNECT in time")

    # ---- CONNECT and DISCONNECT
    def on_connect(self, conn: Connection, body: bytes) -> bool:
        return connect_step.handle_connect(self, conn, body)

    def on_disconnect(self, conn: Connection, packet: Disconnect) -> None:
        props = packet.properties
        if props is not None and mp.SESSION_EXPIRY_INTERVAL in props:
            requested = props[mp.SESSION_EXPIRY_INTERVAL]
            if conn.session_expiry == 0 and requested:
                raise ProtocolViolation("Session Expiry Interval changed from 0 at DISCONNECT", "MQTT-3.14.2-2")
            conn.session_expiry = min(requested, self.config.mqtt.max_session_expiry_s)
            conn.persistent = conn.session_expiry > 0 and self.session_store is not None
        conn.clean_disconnect = True
        if packet.reason_code != reasons.DISCONNECT_WITH_WILL:
            conn.will = None
        conn.close("client disconnected")

    def refresh(self, conn: Connection) -> bool:
        """Recompile a connection's authorizer after a registry change; False if it must go."""
        if connect_step.authorize_connection(self, conn) is not None:
            conn.close("authorization revoked", reasons.NOT_AUTHORIZED)
            return False
        return True

    def _on_registry_change(self, change: RegistryChange) -> None:
        if change.kind in ("certificate", "ca"):
            # A deactivated or revoked certificate loses its connections at once, not on its next packet.
            for conn in list(self.sessions.values()):
                if conn.cert_der is not None and (change.kind == "ca" or conn.principal == change.key):
                    self.refresh(conn)

    # ---- PUBLISH
    def on_publish(self, conn: Connection, first: int, buf: bytearray, start: int, end: int) -> None:
        qos = (first >> 1) & 0x03
        if qos == 2:
            self.denied("iot:Publish")
            raise ProtocolViolation("QoS 2 is not supported by AWS IoT", None, reasons.QOS_NOT_SUPPORTED)
        v5 = conn.version == V5
        seen = conn.seen_properties
        topic, pid, payload, props, block = codec.parse_publish_block(first, buf, start, end, v5, seen)
        if props is not None:
            if seen is None or block is not seen[0]:
                if mp.TOPIC_ALIAS in props:
                    block = None  # a topic alias is one hop's: what subscribers get is encoded again
                elif block is not None:
                    conn.seen_properties = (block, props)  # read-only from here on: the next PUBLISH may share it
                topic = self._resolve_alias(conn, topic, props)
            elif not topic:
                # The previous PUBLISH's block again: checked then, and it holds no topic alias (those are not kept).
                raise _no_topic()
        if conn.generation != self.registry.generation and not self.refresh(conn):
            return
        retain = bool(first & 0x01)
        self.sender = conn  # No Local subscriptions skip it; backed-up subscribers pause it
        try:
            message = self.intake.admit(
                topic,
                payload,
                qos,
                retain,
                props,
                door=conn.door,
                client_id=conn.client_id,
                principal=conn.principal,
                authorizer=conn.authorizer,
                acknowledged=True,
                properties_block=block,
            )
        except PublishRefused as refusal:
            self._publish_refused(conn, refusal, qos, pid)
            return
        finally:
            self.sender = None
        conn.last_message = message
        if qos:
            hold = message.hold
            if hold is not None and (hold.pending or hold.failed):
                conn.acks.append((pid, hold, None))
                if hold.pending:
                    hold.on_release = lambda: self._send_acks(conn)
                else:
                    self._send_acks(conn)
            elif conn.acks:
                conn.acks.append((pid, None, None))
            else:
                conn.send(codec.puback(pid))

    @staticmethod
    def _resolve_alias(conn: Connection, topic: str, props: mp.Properties) -> str:
        if mp.SUBSCRIPTION_IDENTIFIER in props:
            raise ProtocolViolation("a client PUBLISH must not carry a Subscription Identifier", "MQTT-3.3.4-6")
        alias = props.pop(mp.TOPIC_ALIAS, None)
        if alias is None:
            if not topic:
                raise _no_topic()
            return topic
        if alias > connect_step.TOPIC_ALIAS_MAXIMUM:
            raise ProtocolViolation(
                f"topic alias {alias} exceeds the Topic Alias Maximum", "MQTT-3.3.2-9", reasons.TOPIC_ALIAS_INVALID
            )
        if topic:
            conn.aliases[alias] = topic
            return topic
        known = conn.aliases.get(alias)
        if known is None:
            raise ProtocolViolation(f"topic alias {alias} was never set", "MQTT-3.3.4", reasons.PROTOCOL_ERROR)
        return known

    def _publish_refused(self, conn: Connection, refusal: PublishRefused, qos: int, pid: int) -> None:
        action = getattr(refusal, "action", None)
        if action is not None:
            self.denied(action)
        if conn.version != V5 or refusal.disconnects:
            # MQTT 3.1.1 has no way to say why: AWS IoT closes the connection.
            raise ProtocolViolation(refusal.message, None, refusal.reason_code)
        log.info("refused a PUBLISH from %s: %s", conn.client_id, refusal.message)
        if qos:
            ack = codec.puback(pid, refusal.reason_code, refusal.message if conn.problem_info else None)
            if conn.acks:
                conn.acks.append((pid, None, ack))  # PUBACKs keep PUBLISH order: this one waits its turn
            else:
                conn.send(ack)

    def _send_acks(self, conn: Connection) -> None:
        """PUBACK every message at the head of the queue whose durable work is done, keeping PUBLISH order."""
        acks = conn.acks
        while acks and (acks[0][1] is None or acks[0][1].pending == 0):
            pid, hold, refusal = acks.popleft()
            if hold is not None and hold.failed:
                # Not stored, so never acknowledged: an MQTT 5 client hears it in the PUBACK's reason code; a 3.1.1
                # client has no way to, so its connection closes and it sends the message again (DUP).
                if conn.version != V5:
                    conn.close(f"message {pid} could not be stored")
                    return
                refusal = codec.puback(pid, reasons.UNSPECIFIED_ERROR, "the message could not be stored")
            conn.send(refusal or codec.puback(pid))
        if conn.acks_paused and len(acks) <= self.acks_high // 2:
            conn.acks_paused = False
            self.loop.call_soon(conn.unblock_reading)

    def route(self, message: Message) -> None:
        """Hand a message admitted by the intake to the services that own reserved topics, the rules and the
        subscribers. Every door's messages come through here, by way of the intake."""
        counts = self.in_by_door.get(message.door)
        if counts is None:
            counts = self.in_by_door[message.door] = [0, 0]
        counts[message.qos] += 1
        topic = message.topic
        if topic[0] == "$":
            route = classify(topic)
            # The shadow service's own replies come back through here; only requests go to it.
            if route is Route.SHADOW and self.shadow_handler is not None and message.door != "shadow":
                self.shadow_handler(message)
            elif route is Route.BASIC_INGEST:
                for hook in self.message_hooks:
                    hook(message)
                return
            elif message.retain:
                return  # AWS: no retained messages on reserved topics
        elif message.retain:
            self.retained.put(topic, message)
        for hook in self.message_hooks:
            hook(message)
        outer, self.routing = self.routing, message
        delivery.deliver(self, message)
        self.routing = outer

    def current_hold(self) -> AckHold | None:
        """Durable work for the message being routed (a copy queued for an offline session): its acknowledgement,
        when it has one, waits for that."""
        message = self.routing
        if message is None or not message.acknowledged:
            return None
        if message.hold is None:
            message.hold = AckHold()
        return message.hold

    def current_expiry(self) -> int:
        message = self.routing
        return message.expires_ms if message is not None else 0

    # ---- SUBSCRIBE / UNSUBSCRIBE
    def on_subscribe(self, conn: Connection, packet: Subscribe) -> None:
        subscribe.on_subscribe(self, conn, packet)

    def on_unsubscribe(self, conn: Connection, packet: Unsubscribe) -> None:
        subscribe.on_unsubscribe(self, conn, packet)

    def add_subscription(
        self, owner: Connection | ParkedSession | LocalSubscriber, topic_filter: str, options: int
    ) -> Subscription:
        """Subscribe (or change the options of) `topic_filter`, `$share/<name>/<filter>` included."""
        qos, no_local, rap = options & 3, bool(options & 4), bool(options & 8)
        old = owner.subscriptions.get(topic_filter)
        if old is not None:
            old.qos, old.no_local, old.retain_as_published = qos, no_local, rap
            return old
        share: str | None = None
        real_filter = topic_filter
        if topic_filter.startswith("$share/"):
            _, share, real_filter = topic_filter.split("/", 2)
        sub = Subscription(owner, real_filter, qos, share, no_local, rap)
        owner.subscriptions[topic_filter] = sub
        self.trie.add(real_filter, sub)
        return sub

    # ---- in-process subscribers
    def subscribe_local(self, name: str, topic_filters: list[str], callback: LocalCallback) -> LocalSubscriber:
        """Deliver messages matching `topic_filters` to `callback` (InvalidRequestException for a bad filter)."""
        for topic_filter in topic_filters:
            validate_topic_filter(topic_filter)
            if topic_filter.startswith("$share/"):
                # A member of a share group would take its turn of the group's messages from real clients.
                raise InvalidRequestException(f"{topic_filter}: a shared subscription cannot be watched here")
        subscriber = LocalSubscriber(name, callback)
        for topic_filter in topic_filters:
            self.add_subscription(subscriber, topic_filter, 1)
        return subscriber

    def unsubscribe_local(self, subscriber: LocalSubscriber) -> None:
        subscriber.closed = True
        for sub in subscriber.subscriptions.values():
            self.trie.remove(sub.filter, sub)
        subscriber.subscriptions.clear()

    def _keep_last_message(self, client_id: str, message: Message) -> None:
        kept = self.last_messages
        kept.pop(client_id, None)
        if len(kept) >= LAST_MESSAGES_KEPT:
            del kept[next(iter(kept))]
        kept[client_id] = dataclasses.replace(
            message, payload=message.payload[:LAST_MESSAGE_BYTES], hold=None, encoded=None
        )

    def counters(self) -> dict[str, int]:
        """`stats` plus messages_in, summed from the per-door counts (one count per routed message, not two)."""
        return {**self.stats, "messages_in": sum(q0 + q1 for q0, q1 in self.in_by_door.values())}

    def denied(self, action: str) -> None:
        self.stats["denied"] += 1
        self.denials[action] = self.denials.get(action, 0) + 1


def _no_topic() -> ProtocolViolation:
    return ProtocolViolation("PUBLISH with an empty topic and no topic alias", "MQTT-3.3.2-1", 0x90)
