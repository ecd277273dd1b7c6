"""The doors into the broker: MQTT over mTLS, MQTT over secure WebSocket, and the optional plain port."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import functools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from gateway.broker.connection import Connection
from gateway.broker.core import Broker
from gateway.broker.tls import HANDSHAKE_TIMEOUT_S, TlsServerProtocol
from gateway.identity.authn import Credentials
from gateway.netguard import CappedAccept, descriptor_budget, soft_descriptor_limit

log = logging.getLogger("edgesim.broker")

# Python 3.11's asyncio gives every TLS connection a zero-filled read buffer of SSLProtocol.max_size (256 KiB):
# most of a Python broker's memory per idle device, and a measurable cost per connect. The MQTT door terminates
# TLS itself (gateway/broker/tls.py); the WebSocket and HTTPS doors still use asyncio's TLS. TLS records are at
# most 16 KiB, so two records' worth reads as fast. One seam, checked by tests/unit/test_tls_seam.py.
TLS_READ_BUFFER_BYTES = 32 * 1024
if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER_BYTES:
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES


def server_ssl_context(cert_path: str, key_path: str, trusted_pems: list[str]) -> ssl.SSLContext:
    """TLS 1.2+, client certificate required (amqtt only asks for one), trusting our CA and registered CAs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Certificates registered without a CA are trust anchors of their own (AWS's RegisterCertificateWithoutCA).
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # No TLS 1.3 session tickets: devices reconnect with full handshakes anyway (paho, the Device SDK and our fleet
    # do not resume), and issuing two tickets per handshake cost ~25 % of the gateway's connect rate.
    ctx.num_tickets = 0
    for pem in trusted_pems:
        ctx.load_verify_locations(cadata=pem)
    return ctx


class _WebSocketTransport(asyncio.Transport):
    """Lets a Connection write to a WebSocket as if it were a stream transport."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        super().__init__()
        self._ws = ws
        self._request = request
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._buffered = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._request.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._buffered += len(data)
            self._queue.put_nowait(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)

    def pause_reading(self) -> None:
        pass  # the reader loop checks the connection's quota flag instead

    def resume_reading(self) -> None:
        pass

    async def pump(self) -> None:
        while (item := await self._queue.get()) is not None:
            self._buffered -= len(item)
            await self._ws.send_bytes(item)
        await self._ws.close()


def upgrade_credentials(request: web.Request) -> Credentials:
    """What a WebSocket upgrade presents: its client certificate, if any, its headers and its query string."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return Credentials(
        door="wss", source_ip=request.remote, cert_der=ssl_object.getpeercert(binary_form=True) if ssl_object else None,
        server_name=getattr(ssl_object, "server_hostname", None), headers=dict(request.headers),
        query=dict(request.rel_url.query), raw_query=request.rel_url.raw_query_string, method=request.method,
        path=request.rel_url.raw_path,
    )  # fmt: skip


def _mqtt_rank(protocol: asyncio.BaseProtocol) -> int | None:
    """A connection still in its TLS handshake or before its CONNECT may close for a new one; a device never."""
    app = protocol._app if isinstance(protocol, TlsServerProtocol) else protocol
    return 0 if app is None or not getattr(app, "connected", True) else None


@dataclass
class Listeners:
    broker: Broker
    accepts: list[CappedAccept] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    async def start_mqtt(
        self, name: str, host: str, port: int, ctx: ssl.SSLContext | None, max_connections: int | None = None
    ) -> int:
        connection = functools.partial(Connection, self.broker, name)
        factory: Callable[[], asyncio.Protocol] = (
            connection
            if ctx is None
            else functools.partial(
                TlsServerProtocol, ctx, connection, min(HANDSHAKE_TIMEOUT_S, self.broker.connect_timeout)
            )
        )
        limit = max_connections or descriptor_budget(soft_descriptor_limit())
        accept = CappedAccept(factory, limit, name, _mqtt_rank)
        self.accepts.append(accept)
        bound = await accept.start(host, port)
        self.ports[name] = bound
        log.info(
            "listening: %s on %s:%d (%s)",
            name,
            host,
            bound,
            "TLS, client certificate required" if ctx else "plain, anonymous dev policy",
        )
        return bound

    async def start_websocket(self, host: str, port: int, ctx: ssl.SSLContext) -> int:
        app = web.Application()
        app.router.add_get("/mqtt", self._websocket)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ctx)
        await site.start()
        self.runners.append(runner)
        server = site._server  # aiohttp keeps the bound socket here; there is no public accessor
        bound = int(server.sockets[0].getsockname()[1]) if server and server.sockets else port  # type: ignore[union-attr,attr-defined]
        self.ports["wss"] = bound
        log.info("listening: wss on %s:%d path /mqtt (client certificate required)", host, bound)
        return bound

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        identity = None
        if self.broker.connect_auth is not None:
            identity = await self.broker.connect_auth.upgrade(upgrade_credentials(request))
            if identity is not None and identity.refusal is not None:
                log.warning("refused WebSocket upgrade from %s: %s", request.remote, identity.refusal)
                return web.json_response({"message": "Forbidden"}, status=403)
        ws = web.WebSocketResponse(protocols=("mqtt",), max_msg_size=self.broker.max_packet_bytes + 8)
        await ws.prepare(request)
        transport = _WebSocketTransport(ws, request)
        conn = Connection(self.broker, "wss")
        conn.identity = identity
        conn.connection_made(transport)
        pump = asyncio.create_task(transport.pump(), name="wss-writer")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.data_received(msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                if conn.closed:
                    break
        finally:
            conn.connection_lost(None)
            transport.close()
            await pump
        return ws

    async def stop(self) -> None:
        for accept in self.accepts:
            accept.close()
        for runner in self.runners:
            await runner.cleanup()
