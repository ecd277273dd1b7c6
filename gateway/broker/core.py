"""The broker: sessions by client id, the subscription trie, retained messages, wills and message routing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from gateway.broker import codec
from gateway.broker.codec import ProtocolError
from gateway.broker.connection import Connection
from gateway.broker.local import LocalCallback, LocalSubscriber
from gateway.broker.retained import RetainedStore
from gateway.broker.router import Route, classify
from gateway.broker.sessions import SESSION_EXPIRY_MS, ParkedSession, SessionStore, publish_topic, split_publish
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import InvalidRequestException
from gateway.identity.authorizer import Authorizer, ConnectionContext
from gateway.identity.policy_doc import PolicyDocument
from gateway.messages import AckHold, Message
from gateway.registry import Registry, RegistryChange
from gateway.topics import TopicTrie, validate_topic_filter, validate_topic_name

log = logging.getLogger("edgesim.broker")

MessageHook = Callable[[Message], None]
LAST_MESSAGES_KEPT = 20_000  # disconnected clients whose last message the dashboard can still show
LAST_MESSAGE_BYTES = 4096


class Subscription:
    __slots__ = ("conn", "filter", "qos", "share")

    def __init__(
        self, conn: Connection | ParkedSession | LocalSubscriber, topic_filter: str, qos: int, share: str | None
    ) -> None:
        self.conn = conn
        self.filter = topic_filter
        self.qos = qos
        self.share = share


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
        limits = config.mqtt
        self.max_payload = limits.max_payload_bytes
        # Room for the topic, packet id and length fields on top of the payload limit.
        self.max_packet_bytes = limits.max_payload_bytes + limits.max_topic_bytes + 1024
        self.publishes_per_second = limits.publishes_per_second
        self.inflight_window = limits.inflight_qos1
        # A subscriber's QoS 1 queue past pending_high pauses whoever publishes to it; pending_limit is a hard cap.
        self.pending_high = 1000
        self.pending_limit = 20000
        self._sender: Connection | None = None
        self.outgoing_limit = limits.outgoing_queue_bytes
        self.connect_timeout = 10.0
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, Connection] = {}
        self.connections: set[Connection] = set()
        self.trie: TopicTrie[Subscription] = TopicTrie()
        self.shadow_handler: MessageHook | None = None
        self.message_hooks: list[MessageHook] = []
        self._dirty: list[Connection] = []
        self._valid_topics: set[str] = set()
        self._share_turn: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.stats = {
            "messages_out": 0,
            "dropped_qos0": 0,
            "dropped_qos1": 0,
            "denied": 0,
            "connects": 0,
        }
        self.in_by_door: dict[str, list[int]] = {}  # door -> [QoS 0 count, QoS 1 count]: messages routed
        self.out_qos1 = 0
        self.denials: dict[str, int] = {}  # policy action -> refusals
        # Client id -> its last PUBLISH (payload cut short), kept when it disconnects; the oldest go past the cap.
        self.last_messages: dict[str, Message] = {}
        self._local_failures = 0
        self._routing: Message | None = None
        registry.subscribe(self._on_registry_change)

    # ---- lifecycle
    def start(self) -> None:
        if self.session_store is not None:
            now = self.clock.wall_ms()
            for client_id, subscriptions in self.session_store.load(now).items():
                parked = self._new_parked(client_id, now)
                parked.queued = self.session_store.queued(client_id)
                for topic_filter, qos in subscriptions.items():
                    self._add_subscription(parked, topic_filter, qos)
        self._sweeper = self.loop.create_task(self._sweep_keepalives(), name="broker-keepalive-sweeper")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close("gateway shutting down")

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
            if conn.will is not None and not conn.clean_disconnect:
                self._publish_will(conn)
            self._lifecycle("disconnected", conn)

    # ---- persistent sessions (clean_session=0, certificate-authenticated clients)
    def _new_parked(self, client_id: str, now_ms: int) -> ParkedSession:
        assert self.session_store is not None
        parked = ParkedSession(
            client_id, self.session_store, self.registry, now_ms + SESSION_EXPIRY_MS, hold_for=self.current_hold
        )
        self.parked[client_id] = parked
        return parked

    def _park(self, conn: Connection) -> None:
        """The client went away: keep its subscriptions, and queue what it has not acknowledged, in order."""
        assert self.session_store is not None
        now = self.clock.wall_ms()
        parked = self._new_parked(conn.client_id, now)
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
        self.session_store.save(conn.client_id, self._qos_by_filter(parked.subscriptions), parked.expires_ms)

    def _resume(self, conn: Connection, parked: ParkedSession) -> None:
        """The client is back: its subscriptions move to the connection (as its policy still allows), then the
        messages queued meanwhile follow, oldest first."""
        assert self.session_store is not None and conn.authorizer is not None
        for key, sub in parked.subscriptions.items():
            if conn.authorizer.can_subscribe(key):
                sub.conn = conn
                conn.subscriptions[key] = sub
            else:
                self.trie.remove(sub.filter, sub)
        self._save_session(conn)
        conn.resume_after = 0
        self._drain_session(conn)

    def _drain_session(self, conn: Connection) -> None:
        """Queued messages go to a returning client oldest first, at most `resume_messages_per_second` a second
        (AWS: 10) alongside live traffic; each stays in the store until the client acknowledges it."""
        if conn.closed or self.sessions.get(conn.client_id) is not conn or self.session_store is None:
            return
        rate = self.config.mqtt.resume_messages_per_second
        batch = self.session_store.peek(conn.client_id, conn.resume_after, rate or None)
        assert conn.authorizer is not None
        refused: list[int] = []
        for seq, head, tail in batch:
            conn.resume_after = seq
            if conn.authorizer.can_receive(publish_topic(head)):
                conn.deliver_qos1(head, tail, None, seq)
            else:
                refused.append(seq)
        if refused:
            self.session_store.delete_messages(refused)
        if rate and len(batch) == rate:
            self.loop.call_later(1.0, self._drain_session, conn)

    def _discard_parked(self, client_id: str) -> None:
        parked = self.parked.pop(client_id, None)
        if parked is not None:
            for sub in parked.subscriptions.values():
                self.trie.remove(sub.filter, sub)
        if self.session_store is not None:
            self.session_store.delete(client_id)

    def _save_session(self, conn: Connection) -> None:
        if conn.persistent and self.session_store is not None:
            self.session_store.save(conn.client_id, self._qos_by_filter(conn.subscriptions), None)

    @staticmethod
    def _qos_by_filter(subscriptions: dict[str, Subscription]) -> dict[str, int]:
        return {key: sub.qos for key, sub in subscriptions.items()}

    def _expire_parked(self) -> None:
        now = self.clock.wall_ms()
        for client_id in [c for c, parked in self.parked.items() if parked.expires_ms <= now]:
            log.info("persistent session of %s expired", client_id)
            self._discard_parked(client_id)

    def mark_dirty(self, conn: Connection) -> None:
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    async def _sweep_keepalives(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            if self.parked and rounds % 60 == 0:
                self._expire_parked()
            now = self.loop.time()
            for conn in list(self.connections):
                # [MQTT-3.1.2-24]: 1.5 x keep-alive without any packet from the client.
                if conn.keep_alive and now - conn.last_rx > conn.keep_alive * (1.5 if conn.connected else 1.0):
                    conn.disconnect_reason = "MQTT_KEEP_ALIVE_TIMEOUT"
                    conn.close("keep-alive timeout" if conn.connected else "no CONNECT in time")

    # ---- CONNECT
    def on_connect(self, conn: Connection, body: bytes) -> bool:
        request = codec.decode_connect(body)
        if request.protocol_level != 4:
            conn.send(codec.encode_connack(False, codec.CONNACK_BAD_PROTOCOL))
            conn.close(f"unsupported MQTT protocol level {request.protocol_level}")
            return False
        client_id = request.client_id
        if not client_id:
            if not request.clean_session:
                conn.send(codec.encode_connack(False, codec.CONNACK_ID_REJECTED))
                conn.close("empty client id with clean session off [MQTT-3.1.3-8]")
                return False
            client_id = f"edgesim-{uuid.uuid4().hex[:16]}"
        if len(client_id.encode()) > self.config.mqtt.max_client_id_bytes or client_id.startswith("$"):
            conn.send(codec.encode_connack(False, codec.CONNACK_ID_REJECTED))
            conn.close(f"client id {client_id!r} rejected")
            return False
        conn.client_id = client_id
        refusal = self._authorize_connection(conn)
        if refusal is None and request.will_topic is not None:
            refusal = self._check_will(conn, request)
        if refusal is not None:
            self._denied("iot:Connect")
            log.warning("refused CONNECT from %s (%s): %s", client_id, conn.peer_ip, refusal)
            if self.config.v3_auth_failure_connack:
                conn.send(codec.encode_connack(False, codec.CONNACK_NOT_AUTHORIZED))
            conn.close(refusal)
            return False
        conn.will = request if request.will_topic is not None else None
        ka = request.keep_alive
        # AWS clamps keep-alive into [30, 1200] seconds; 0 means the maximum (reference §1.4).
        conn.keep_alive = 1200.0 if ka == 0 else float(min(max(ka, self.config.mqtt.min_keep_alive_s), 1200))
        previous = self.sessions.get(client_id)
        if previous is not None:
            previous.disconnect_reason = "DUPLICATE_CLIENTID"
            previous.close(f"client id {client_id} connected again (session taken over)")
            # connection_lost runs later; drop it from the table now so it does not remove the new session.
            self.connection_closed(previous)
        self.sessions[client_id] = conn
        conn.connected = True
        conn.connected_ms = self.clock.wall_ms()
        self.stats["connects"] += 1
        # Persistent sessions are for certificate-authenticated clients (reference §1.2); a clean session ends any.
        conn.persistent = not request.clean_session and conn.cert_der is not None and self.session_store is not None
        parked = self.parked.pop(client_id, None) if conn.persistent else None
        if not conn.persistent and self.session_store is not None:
            self._discard_parked(client_id)
        conn.send(codec.encode_connack(parked is not None, codec.CONNACK_ACCEPTED))
        if parked is not None:
            self._resume(conn, parked)
        else:
            self._save_session(conn)
        self._lifecycle("connected", conn)
        return True

    def _authorize_connection(self, conn: Connection) -> str | None:
        if conn.cert_der is None:
            if self.dev_policy is None:
                return "no client certificate"
            ctx = ConnectionContext(
                client_id=conn.client_id, region=self.config.region, account=self.config.account, source_ip=conn.peer_ip
            )
            conn.authorizer = Authorizer.compile([self.dev_policy], ctx)
        else:
            grant = self.registry.connection_grant(conn.cert_der, conn.client_id, conn.peer_ip)
            if grant.refusal is not None or grant.context is None:
                return grant.refusal or "certificate refused"
            conn.principal = grant.context.cert_id
            conn.authorizer = Authorizer.compile(grant.documents, grant.context)
        conn.generation = self.registry.generation
        if not conn.authorizer.can_connect():
            return f"iot:Connect denied for client/{conn.client_id}"
        return None

    def _check_will(self, conn: Connection, request: codec.ConnectRequest) -> str | None:
        topic = request.will_topic or ""
        try:
            validate_topic_name(topic, max_bytes=self.config.mqtt.max_topic_bytes)
        except InvalidRequestException as exc:
            return f"invalid will topic: {exc.message}"
        if request.will_qos > 1:
            return "will QoS 2 is not supported"
        assert conn.authorizer is not None
        if not conn.authorizer.can_publish(topic) or (
            request.will_retain and not conn.authorizer.can_retain_publish(topic)
        ):
            return f"iot:Publish denied for the will topic {topic}"
        return None

    def _refresh(self, conn: Connection) -> bool:
        """Recompile a connection's authorizer after a registry change; False if it must go."""
        if self._authorize_connection(conn) is not None:
            conn.close("authorization revoked")
            return False
        return True

    def _on_registry_change(self, change: RegistryChange) -> None:
        if change.kind in ("certificate", "ca"):
            # A deactivated or revoked certificate loses its connections at once, not on its next packet.
            for conn in list(self.sessions.values()):
                if conn.cert_der is not None and (change.kind == "ca" or conn.principal == change.key):
                    self._refresh(conn)

    # ---- PUBLISH
    def on_publish(self, conn: Connection, first: int, buf: bytearray, start: int, end: int) -> None:
        if not conn.connected:
            raise ProtocolError("PUBLISH before CONNECT")
        qos = (first >> 1) & 0x03
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
        if qos == 2:
            raise ProtocolError("QoS 2 is not supported by AWS IoT")
        tlen = (buf[start] << 8) | buf[start + 1]
        tend = start + 2 + tlen
        topic = buf[start + 2 : tend].decode("utf-8")
        pid = 0
        if qos:
            pid = (buf[tend] << 8) | buf[tend + 1]
            tend += 2
        if end - tend > self.max_payload:
            raise ProtocolError(f"payload of {end - tend} bytes exceeds {self.max_payload} (PAYLOAD_LIMIT_EXCEEDED)")
        payload = bytes(buf[tend:end])
        retain = bool(first & 0x01)
        if topic not in self._valid_topics:
            self._check_topic(topic)
        if conn.generation != self.registry.generation and not self._refresh(conn):
            return
        authorizer = conn.authorizer
        assert authorizer is not None
        if not authorizer.can_publish(topic):
            self._denied("iot:Publish")
            raise ProtocolError(f"iot:Publish denied on topic/{topic}")
        if retain and not authorizer.can_retain_publish(topic):
            self._denied("iot:RetainPublish")
            raise ProtocolError(f"iot:RetainPublish denied on topic/{topic}")
        message = Message(topic, payload, qos, retain, conn.client_id, conn.principal, self.clock.wall_ms(), conn.door)
        conn.last_message = message
        message.acknowledged = qos == 1
        self._sender = conn
        try:
            self.route(message)
        finally:
            self._sender = None

        if qos:
            hold = message.hold
            if hold is not None and (hold.pending or hold.failed):
                conn.acks.append((pid, hold))
                if hold.pending:
                    hold.on_release = lambda: self._send_acks(conn)
                else:
                    self._send_acks(conn)
            elif conn.acks:
                conn.acks.append((pid, None))
            else:
                conn.send(codec.encode_puback(pid))

    def _send_acks(self, conn: Connection) -> None:
        """PUBACK every message at the head of the queue whose durable work is done, keeping PUBLISH order."""
        acks = conn.acks
        while acks and (acks[0][1] is None or acks[0][1].pending == 0):
            pid, hold = acks.popleft()
            if hold is not None and hold.failed:
                # Never acknowledged, as it was not stored: the client resends it (DUP) once it has reconnected.
                conn.close(f"message {pid} could not be stored")
                return
            conn.send(codec.encode_puback(pid))

    def _check_topic(self, topic: str) -> None:
        """Validate a topic name once; the same topics repeat, so valid ones are remembered (bounded)."""
        try:
            validate_topic_name(
                topic, max_bytes=self.config.mqtt.max_topic_bytes, max_slashes=self.config.mqtt.max_topic_slashes
            )
        except InvalidRequestException as exc:
            raise ProtocolError(exc.message) from exc
        if len(self._valid_topics) >= 65536:
            self._valid_topics.clear()
        self._valid_topics.add(topic)

    def route(self, message: Message) -> None:
        """The one way in for messages from every door."""
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
            self.retained.put(topic, message.payload, message.qos, message.received_ms)
        for hook in self.message_hooks:
            hook(message)
        outer, self._routing = self._routing, message
        self.deliver(topic, message.payload, message.qos)
        self._routing = outer

    def current_hold(self) -> AckHold | None:
        """Durable work for the message being routed (a copy queued for an offline session): its acknowledgement,
        when it has one, waits for that."""
        message = self._routing
        if message is None or not message.acknowledged:
            return None
        if message.hold is None:
            message.hold = AckHold()
        return message.hold

    def deliver(self, topic: str, payload: bytes, qos: int) -> None:
        subs = self.trie.match(topic)
        if not subs:
            return
        targets: dict[Connection | ParkedSession | LocalSubscriber, int] = {}
        for sub in subs:
            if sub.share is not None:
                continue
            granted = sub.qos if sub.qos < qos else qos
            if targets.get(sub.conn, -1) < granted:
                targets[sub.conn] = granted
        if len(targets) < len(subs):
            self._pick_shared(subs, qos, targets)
        packet0: bytes | None = None
        parts1: tuple[bytes, bytes] | None = None
        for conn, granted in targets.items():
            if conn.closed:
                continue
            if isinstance(conn, LocalSubscriber):
                sender = self._sender
                try:
                    conn.callback(topic, payload, granted, sender.client_id if sender is not None else None)
                except Exception:  # an in-process view must never cost a client its delivery
                    self._local_failures += 1
                    if self._local_failures <= 10 or self._local_failures % 10_000 == 0:
                        log.exception("local subscriber %s failed on %s (%d failures so far)", conn.client_id, topic,
                                      self._local_failures)  # fmt: skip
                continue
            authorizer = conn.authorizer
            if isinstance(conn, Connection) and conn.generation != self.registry.generation and not self._refresh(conn):
                continue
            if authorizer is None or not authorizer.can_receive(topic):
                continue
            if granted == 0:
                if conn.backlog() > self.outgoing_limit:
                    conn.dropped_qos0 += 1
                    self.stats["dropped_qos0"] += 1
                    continue
                if packet0 is None:
                    packet0 = codec.encode_publish(topic, payload)
                conn.send(packet0)
            else:
                if parts1 is None:
                    parts1 = codec.publish_parts(topic, payload, 1, False)
                if not conn.deliver_qos1(parts1[0], parts1[1], self._sender):
                    self.stats["dropped_qos1"] += 1
                    continue
                self.out_qos1 += 1
            self.stats["messages_out"] += 1

    def _pick_shared(
        self, subs: list[Subscription], qos: int, targets: dict[Connection | ParkedSession | LocalSubscriber, int]
    ) -> None:
        groups: dict[str, list[Subscription]] = {}
        for sub in subs:
            if sub.share is not None:
                groups.setdefault(sub.share + "\x00" + sub.filter, []).append(sub)
        for key, members in groups.items():
            turn = self._share_turn.get(key, 0)
            self._share_turn[key] = turn + 1
            sub = members[turn % len(members)]
            granted = min(sub.qos, qos)
            if targets.get(sub.conn, -1) < granted:
                targets[sub.conn] = granted

    # ---- SUBSCRIBE / UNSUBSCRIBE
    def on_subscribe(self, conn: Connection, packet_id: int, filters: list[tuple[str, int]]) -> None:
        codes: list[int] = []
        authorizer = conn.authorizer
        if conn.generation != self.registry.generation and not self._refresh(conn):
            return
        assert authorizer is not None
        if any(q == 2 for _, q in filters):
            # AWS IoT answers a v3.1.1 SUBSCRIBE asking QoS 2 with no SUBACK at all (reference §1.1, W5).
            log.info("%s asked for QoS 2; no SUBACK, as AWS IoT does", conn.client_id)
            return
        retained_out: list[tuple[str, int]] = []
        accepted: list[str] = []
        for topic_filter, qos in filters:
            try:
                validate_topic_filter(
                    topic_filter,
                    max_bytes=self.config.mqtt.max_topic_bytes,
                    max_slashes=self.config.mqtt.max_topic_slashes,
                )
            except InvalidRequestException:
                codes.append(0x80)
                continue
            if not authorizer.can_subscribe(topic_filter):
                self._denied("iot:Subscribe")
                # MQTT 3.1.1 on AWS: an unauthorized SUBSCRIBE closes the connection (reference §1.5, W4).
                conn.close(f"iot:Subscribe denied on topicfilter/{topic_filter}")
                return
            if (
                topic_filter not in conn.subscriptions
                and len(conn.subscriptions) >= self.config.mqtt.subscriptions_per_connection
            ):
                codes.append(0x80)
                continue
            sub = self._add_subscription(conn, topic_filter, qos)
            accepted.append(topic_filter)
            codes.append(qos)
            if sub.share is None and "+" not in sub.filter and "#" not in sub.filter:
                retained_out.append((sub.filter, qos))
        conn.send(codec.encode_suback(packet_id, codes))
        self._save_session(conn)
        if accepted:
            self._lifecycle("subscribed", conn, accepted)
        # AWS delivers stored retained messages only to subscriptions whose filter equals the topic.
        for topic, qos in retained_out:
            stored = self.retained.get(topic)
            if stored is not None and authorizer.can_receive(topic):
                granted = min(qos, stored[1])
                if granted:
                    head, tail = codec.publish_parts(topic, stored[0], 1, True)
                    conn.deliver_qos1(head, tail, None)
                else:
                    conn.send(codec.encode_publish(topic, stored[0], 0, True))

    def _add_subscription(
        self, owner: Connection | ParkedSession | LocalSubscriber, topic_filter: str, qos: int
    ) -> Subscription:
        """Subscribe (or change the QoS of) `topic_filter`, `$share/<name>/<filter>` included."""
        old = owner.subscriptions.get(topic_filter)
        if old is not None:
            old.qos = qos
            return old
        share: str | None = None
        real_filter = topic_filter
        if topic_filter.startswith("$share/"):
            _, share, real_filter = topic_filter.split("/", 2)
        sub = Subscription(owner, real_filter, qos, share)
        owner.subscriptions[topic_filter] = sub
        self.trie.add(real_filter, sub)
        return sub

    def on_unsubscribe(self, conn: Connection, packet_id: int, filters: list[str]) -> None:
        removed: list[str] = []
        for topic_filter in filters:
            sub = conn.subscriptions.pop(topic_filter, None)
            if sub is not None:
                self.trie.remove(sub.filter, sub)
                removed.append(topic_filter)
        conn.send(codec.encode_unsuback(packet_id))
        self._save_session(conn)
        if removed:
            self._lifecycle("unsubscribed", conn, removed)

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
            self._add_subscription(subscriber, topic_filter, 1)
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
        kept[client_id] = dataclasses.replace(message, payload=message.payload[:LAST_MESSAGE_BYTES], hold=None)

    def counters(self) -> dict[str, int]:
        """`stats` plus messages_in, summed from the per-door counts (one count per routed message, not two)."""
        return {**self.stats, "messages_in": sum(q0 + q1 for q0, q1 in self.in_by_door.values())}

    def _denied(self, action: str) -> None:
        self.stats["denied"] += 1
        self.denials[action] = self.denials.get(action, 0) + 1

    # ---- wills and lifecycle events
    def _publish_will(self, conn: Connection) -> None:
        will = conn.will
        if will is None or will.will_topic is None:
            return
        self.route(
            Message(
                will.will_topic,
                will.will_payload,
                will.will_qos,
                will.will_retain,
                conn.client_id,
                conn.principal,
                self.clock.wall_ms(),
                "will",
            )
        )

    def _lifecycle(self, event: str, conn: Connection, topics: list[str] | None = None) -> None:
        """AWS's lifecycle events (reference §1.3), built only when someone subscribes to them."""
        kind = "presence" if topics is None else "subscriptions"
        topic = f"$aws/events/{kind}/{event}/{conn.client_id}"
        if not self.trie.match(topic):
            return
        body: dict[str, Any] = {
            "clientId": conn.client_id,
            "timestamp": self.clock.wall_ms(),
            "eventType": event,
            "sessionIdentifier": str(id(conn)),
            "principalIdentifier": conn.principal or "anonymous",
        }
        if topics is not None:
            body["topics"] = topics
        else:
            body["ipAddress"] = conn.peer_ip or ""
            body["versionNumber"] = 0
        if event == "disconnected":
            body["clientInitiatedDisconnect"] = conn.clean_disconnect
            body["disconnectReason"] = (
                "CLIENT_INITIATED_DISCONNECT" if conn.clean_disconnect else conn.disconnect_reason or "CONNECTION_LOST"
            )
        self.deliver(topic, json.dumps(body).encode(), 1)
