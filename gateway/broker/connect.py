"""CONNECT: the client's identity and policy, its will, the session it asks for, and the CONNACK (MQTT 3.1.1 or 5)
with the properties AWS IoT sends (reference §1.1)."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from gateway.broker.exceptions import PublishRefused
from gateway.errors import EdgesimError
from gateway.identity.authorizer import Authorizer, ConnectionContext
from mqttwire import codec, reasons
from mqttwire import properties as mp
from mqttwire.packets import V5, V311, Connack, Connect

if TYPE_CHECKING:
    from gateway.broker.connection import Connection
    from gateway.broker.core import Broker

log = logging.getLogger("edgesim.broker")

TOPIC_ALIAS_MAXIMUM = 8  # AWS IoT's quota for topic aliases a client may set up


class Refused(EdgesimError):
    def __init__(self, why: str, v5_code: int, v3_code: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.v5_code = v5_code
        self.v3_code = v3_code


def handle_connect(broker: Broker, conn: Connection, body: bytes) -> bool:
    """Answer a CONNECT: True once the client is connected, False after a refusal (the connection is closed)."""
    request = codec.decode_connect(body)
    if request.protocol_level not in (V311, V5):
        conn.send(codec.encode(Connack(False, reasons.V3_UNACCEPTABLE_PROTOCOL), V311))
        conn.close(f"unsupported MQTT protocol level {request.protocol_level}")
        return False
    conn.version = request.protocol_level
    if broker.connect_auth is not None and broker.connect_auth.intercept(conn, request, body):
        return False  # authenticating asynchronously (a custom authorizer): this runs again with its answer
    try:
        connack_props = _accept(broker, conn, request)
    except Refused as refusal:
        _refuse(broker, conn, refusal)
        return False
    _take_over(broker, conn)
    resume = not request.clean_start
    parked = broker.parked.pop(conn.client_id, None) if resume else None
    if parked is not None and parked.version != conn.version:
        broker.discard_parked(conn.client_id)  # MQTT 3.1.1 and 5 sessions are not interchangeable (reference §1.2)
        parked = None
    if not resume:
        broker.discard_parked(conn.client_id)
    broker.wills.client_returned(conn.client_id, ended=not resume)
    conn.persistent = conn.session_expiry > 0 and broker.session_store is not None
    conn.session_id = str(uuid.uuid4())
    broker.sessions[conn.client_id] = conn
    conn.connected = True
    conn.connected_ms = broker.clock.wall_ms()
    broker.stats["connects"] += 1
    conn.send(codec.encode(Connack(parked is not None, 0, connack_props), conn.version))
    if parked is not None:
        broker.resume(conn, parked)
    else:
        broker.save_session(conn)
    broker.lifecycle.presence("connected", conn)
    return True


def _accept(broker: Broker, conn: Connection, request: Connect) -> mp.Properties | None:
    """Check everything about the CONNECT; the CONNACK properties (MQTT 5) when it is accepted."""
    limits = broker.config.mqtt
    v5 = conn.version == V5
    props = request.properties or {}
    connack: mp.Properties = {}
    if v5:
        if mp.AUTHENTICATION_METHOD in props:
            raise Refused("enhanced authentication (AUTH) is not supported", reasons.BAD_AUTHENTICATION_METHOD)
        conn.problem_info = props.get(mp.REQUEST_PROBLEM_INFORMATION, 1) == 1
        conn.window = min(broker.inflight_window, props.get(mp.RECEIVE_MAXIMUM, 65535))
        conn.max_out = props.get(mp.MAXIMUM_PACKET_SIZE, 0)
    client_id = request.client_id
    if not client_id:
        if not v5 and not request.clean_start:
            raise Refused("empty client id with clean session off [MQTT-3.1.3-8]", 0, reasons.V3_IDENTIFIER_REJECTED)
        client_id = f"edgesim-{uuid.uuid4().hex[:16]}"
        if v5:
            connack[mp.ASSIGNED_CLIENT_IDENTIFIER] = client_id
    if len(client_id.encode()) > limits.max_client_id_bytes or client_id.startswith("$"):
        raise Refused(f"client id {client_id!r} rejected", reasons.CLIENT_IDENTIFIER_NOT_VALID,
                      reasons.V3_IDENTIFIER_REJECTED)  # fmt: skip
    conn.client_id = client_id
    refusal = authorize_connection(broker, conn)
    if refusal is not None:
        broker.denied("iot:Connect")
        raise Refused(refusal, reasons.NOT_AUTHORIZED)
    _check_anonymous_takeover(broker, conn)
    if request.will is not None:
        _check_will(broker, conn, request)
    conn.will = request.will
    asked = request.keep_alive
    # AWS clamps keep-alive into [30, 1200] seconds; 0 means the maximum (reference §1.4).
    granted = 1200 if asked == 0 else min(max(asked, limits.min_keep_alive_s), 1200)
    conn.keep_alive = float(granted)
    if v5 and granted != asked:
        connack[mp.SERVER_KEEP_ALIVE] = granted
    if v5:
        wanted = props.get(mp.SESSION_EXPIRY_INTERVAL, 0)
        conn.session_expiry = min(wanted, limits.max_session_expiry_s)
        if conn.session_expiry != wanted:
            connack[mp.SESSION_EXPIRY_INTERVAL] = conn.session_expiry
        connack.update(_server_properties(broker))
        return connack
    conn.session_expiry = 0 if request.clean_start else limits.max_session_expiry_s
    return None


def _server_properties(broker: Broker) -> mp.Properties:
    """What AWS IoT's MQTT 5 CONNACK says about the server (reference §1.1)."""
    return {
        mp.MAXIMUM_QOS: 1,
        mp.RETAIN_AVAILABLE: 1,
        mp.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
        mp.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
        mp.SHARED_SUBSCRIPTION_AVAILABLE: 1,
        mp.TOPIC_ALIAS_MAXIMUM: TOPIC_ALIAS_MAXIMUM,
        mp.MAXIMUM_PACKET_SIZE: broker.max_packet_bytes,
        mp.RECEIVE_MAXIMUM: broker.inflight_window,
    }


def _refuse(broker: Broker, conn: Connection, refusal: Refused) -> None:
    log.warning("refused CONNECT from %s (%s): %s", conn.client_id or "?", conn.peer_ip, refusal.why)
    if conn.version == V5:
        props = {mp.REASON_STRING: refusal.why[:200]} if conn.problem_info else None
        conn.send(codec.encode(Connack(False, refusal.v5_code, props), V5))
    elif refusal.v3_code is not None:
        conn.send(codec.encode(Connack(False, refusal.v3_code), V311))
    elif broker.config.v3_auth_failure_connack:
        conn.send(codec.encode(Connack(False, reasons.V3_NOT_AUTHORIZED), V311))
    conn.close(refusal.why)


def authorize_connection(broker: Broker, conn: Connection) -> str | None:
    """Compile the connection's policy; why it may not connect, or None."""
    if conn.identity is not None and broker.connect_auth is not None:
        refusal = broker.connect_auth.authorize(conn)
        conn.generation = broker.registry.generation
        if refusal is None and conn.authorizer is not None and not conn.authorizer.can_connect():
            refusal = f"iot:Connect denied for client/{conn.client_id}"
        return refusal
    if conn.cert_der is None:
        if broker.dev_policy is None or conn.door != "mqtt":  # the dev policy is the plain port's alone
            return "no client certificate"
        ctx = ConnectionContext(
            client_id=conn.client_id,
            region=broker.config.region,
            account=broker.config.account,
            source_ip=conn.peer_ip,
        )
        conn.authorizer = Authorizer.compile([broker.dev_policy], ctx)
    else:
        grant = broker.registry.connection_grant(conn.cert_der, conn.client_id, conn.peer_ip)
        if grant.refusal is not None or grant.context is None:
            if grant.unregistered and not conn.connected and broker.registry.jit is not None:
                broker.registry.jit.on_unknown_certificate(conn.cert_der)  # JITR / JITP: gateway/registry/jit.py
            return grant.refusal or "certificate refused"
        conn.principal = grant.context.cert_id
        conn.authorizer = Authorizer.compile(grant.documents, grant.context)
    conn.generation = broker.registry.generation
    if not conn.authorizer.can_connect():
        return f"iot:Connect denied for client/{conn.client_id}"
    return None


def _check_anonymous_takeover(broker: Broker, conn: Connection) -> None:
    """An anonymous client (the plain port's dev policy) must not take over a certificate-authenticated device's
    client id, connected or parked: on AWS no policy would let it."""
    if conn.cert_der is not None or conn.identity is not None:
        return
    previous = broker.sessions.get(conn.client_id)
    parked = broker.parked.get(conn.client_id)
    if (previous is not None and previous.cert_der is not None) or (parked is not None and parked.principal):
        broker.denied("iot:Connect")
        raise Refused(f"client id {conn.client_id} belongs to a certificate-authenticated device",
                      reasons.NOT_AUTHORIZED)  # fmt: skip


def _check_will(broker: Broker, conn: Connection, request: Connect) -> None:
    will = request.will
    assert will is not None and conn.authorizer is not None
    if will.qos > 1:
        raise Refused("will QoS 2 is not supported", reasons.QOS_NOT_SUPPORTED)
    try:
        broker.intake.check_topic(will.topic)
    except PublishRefused as exc:
        raise Refused(f"invalid will topic: {exc.message}", reasons.TOPIC_NAME_INVALID) from None
    if not conn.authorizer.can_publish(will.topic) or (
        will.retain and not conn.authorizer.can_retain_publish(will.topic)
    ):
        broker.denied("iot:Publish")
        raise Refused(f"iot:Publish denied for the will topic {will.topic}", reasons.NOT_AUTHORIZED)


def _take_over(broker: Broker, conn: Connection) -> None:
    previous = broker.sessions.get(conn.client_id)
    if previous is not None:
        previous.disconnect_reason = "DUPLICATE_CLIENTID"
        previous.close(f"client id {conn.client_id} connected again (session taken over)", reasons.SESSION_TAKEN_OVER)
        # connection_lost runs later; drop it from the table now so it does not remove the new session.
        broker.connection_closed(previous)
