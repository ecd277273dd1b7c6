"""Connect-time authentication beyond the certificate, for the broker: a CONNECT that carries custom-authorizer
credentials is parked (reading paused) while the authorizer function runs, then answered; a connection that
authenticated some other way (SigV4 on its WebSocket upgrade) is compiled from that identity. The authorizer's
disconnectAfterInSeconds and refreshAfterInSeconds are kept by one sweeper for all such connections."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.identity.authn import Authentication, Credentials
from gateway.identity.authorizer import Authorizer
from gateway.identity.custom_auth import names_authorizer
from gateway.identity.custom_authenticator import CustomAuthorizerAuthenticator
from gateway.identity.sigv4_ws import SigV4Authenticator
from mqttwire import reasons
from mqttwire.packets import Connect

if TYPE_CHECKING:
    from gateway.broker.connection import Connection
    from gateway.broker.core import Broker

log = logging.getLogger("edgesim.broker")

# AWS serves custom authentication on 443 with ALPN `mqtt` and on WebSockets, never on 8883.
CUSTOM_AUTH_DOORS = frozenset({"alpn", "wss"})


@dataclass
class _Timers:
    creds: Credentials
    disconnect_at: float
    refresh_at: float


def credentials(conn: Connection, request: Connect) -> Credentials:
    ssl_object = conn.transport.get_extra_info("ssl_object") if conn.transport is not None else None
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    server_name = getattr(ssl_object, "server_hostname", None) if ssl_object is not None else None
    return Credentials(
        door=conn.door, source_ip=conn.peer_ip, client_id=request.client_id, cert_der=conn.cert_der, alpn=alpn,
        server_name=server_name, username=request.username, password=request.password,
    )  # fmt: skip


class ConnectAuth:
    def __init__(self, broker: Broker, custom: CustomAuthorizerAuthenticator, sigv4: SigV4Authenticator) -> None:
        self.broker = broker
        self.custom = custom
        self.sigv4 = sigv4
        self._timed: dict[Connection, _Timers] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.stats = {"custom_auth_connects": 0, "custom_auth_refusals": 0, "custom_auth_refreshes": 0}

    def start(self) -> None:
        self._sweeper = self.broker.loop.create_task(self._sweep_forever(), name="custom-auth-sweeper")

    async def stop(self) -> None:
        for task in (self._sweeper, *self._tasks):
            if task is not None:
                task.cancel()

    # ---- the WebSocket upgrade
    async def upgrade(self, creds: Credentials) -> Authentication | None:
        """Authenticate a WebSocket upgrade that is SigV4-signed or names a custom authorizer in its headers or query
        string; None when it presents neither (a certificate, or credentials in the CONNECT to come)."""
        if creds.cert_der is not None:
            return None
        if self.sigv4.claims(creds):
            return self.sigv4.grant(creds)
        if names_authorizer(creds) is not None:
            try:
                return await self.custom.authenticate(creds)
            except Exception:
                log.exception("custom authentication of a WebSocket upgrade from %s failed", creds.source_ip)
                return Authentication.refused(self.custom.kind, "custom authentication failed")
        return None

    # ---- CONNECT
    def intercept(self, conn: Connection, request: Connect, body: bytes) -> bool:
        """True when this CONNECT is being authenticated asynchronously (handle_connect runs again afterwards)."""
        if conn.identity is not None or conn.cert_der is not None or conn.door not in CUSTOM_AUTH_DOORS:
            return False  # the mTLS path pays this line only
        creds = credentials(conn, request)
        if not self.custom.claims(creds):
            return False
        conn.block_reading()
        self._spawn(self._authenticate(conn, creds, body))
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.broker.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _identify(self, conn: Connection, creds: Credentials) -> Authentication:
        try:
            return await self.custom.authenticate(creds)
        except Exception:  # a bug here costs this connection only
            log.exception("custom authentication of %s failed", creds.client_id or conn.peer_ip)
            return Authentication.refused(self.custom.kind, "custom authentication failed")

    async def _authenticate(self, conn: Connection, creds: Credentials, body: bytes) -> None:
        from gateway.broker import connect  # connect.py imports this module's callers; import when first used

        identity = await self._identify(conn, creds)
        if conn.closed:
            return
        conn.identity = identity
        if identity.refusal is not None:
            self.stats["custom_auth_refusals"] += 1
        try:
            accepted = connect.handle_connect(self.broker, conn, body)
        except Exception:  # as in Connection.process: a bug costs this connection only
            log.exception("internal error handling the CONNECT of %s", creds.client_id or conn.peer_ip)
            conn.close("internal error", reasons.IMPLEMENTATION_SPECIFIC_ERROR)
            return
        if accepted:
            self.stats["custom_auth_connects"] += 1
            now = self.broker.loop.time()
            self._timed[conn] = _Timers(
                creds,
                now + identity.disconnect_after_s if identity.disconnect_after_s else math.inf,
                now + identity.refresh_after_s if identity.refresh_after_s else math.inf,
            )
        if not conn.closed:
            conn.unblock_reading()

    def authorize(self, conn: Connection) -> str | None:
        """Compile the connection's policies from its identity; why it may not connect, or None."""
        identity = conn.identity
        assert identity is not None
        if identity.reload is not None and conn.generation != self.broker.registry.generation:
            identity = conn.identity = identity.reload(conn.client_id, conn.peer_ip)
        if identity.refusal is not None or identity.context is None:
            return identity.refusal or "not authenticated"
        context = identity.context
        if context.client_id != conn.client_id:
            context = type(context)(client_id=conn.client_id, region=context.region, account=context.account,
                                    source_ip=conn.peer_ip)  # fmt: skip
        conn.principal = identity.principal
        conn.authorizer = Authorizer.compile(identity.documents, context)
        return None

    # ---- disconnectAfterInSeconds and refreshAfterInSeconds
    def due(self, now: float) -> tuple[list[Connection], list[Connection]]:
        """(connections to disconnect, connections to refresh) at `now`; closed ones are forgotten."""
        ending, refreshing = [], []
        for conn, timers in list(self._timed.items()):
            if conn.closed:
                del self._timed[conn]
            elif now >= timers.disconnect_at:
                del self._timed[conn]
                ending.append(conn)
            elif now >= timers.refresh_at:
                timers.refresh_at = math.inf  # until this refresh answers
                refreshing.append(conn)
        return ending, refreshing

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.sweep(self.broker.loop.time())

    def sweep(self, now: float) -> None:
        ending, refreshing = self.due(now)
        for conn in ending:
            conn.disconnect_reason = "CUSTOMAUTH_TTL_EXPIRATION"
            conn.close("the custom authorizer's disconnectAfterInSeconds has elapsed", reasons.MAXIMUM_CONNECT_TIME)
        for conn in refreshing:
            self._spawn(self._refresh(conn))

    async def _refresh(self, conn: Connection) -> None:
        timers = self._timed.get(conn)
        if timers is None:
            return
        identity = await self._identify(conn, timers.creds)
        if conn.closed:
            return
        self.stats["custom_auth_refreshes"] += 1
        conn.identity = identity
        refusal = self.authorize(conn)
        if refusal is None and conn.authorizer is not None and not conn.authorizer.can_connect():
            refusal = f"iot:Connect denied for client/{conn.client_id}"
        if refusal is not None:
            self._timed.pop(conn, None)
            self.broker.denied("iot:Connect")
            conn.close(f"custom authorizer refresh refused the connection: {refusal}", reasons.NOT_AUTHORIZED)
            return
        if identity.refresh_after_s:
            timers.refresh_at = self.broker.loop.time() + identity.refresh_after_s
