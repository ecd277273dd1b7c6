"""One TLS port multiplexed by ALPN, as AWS IoT serves port 443: `x-amzn-mqtt-ca` is MQTT with a client certificate,
`mqtt` is MQTT with custom authentication (no certificate), `x-amzn-http-ca` is HTTPS publish with a certificate,
`http/1.1` HTTPS publish with a certificate or custom-authorizer headers.

The handshake asks for a certificate without requiring one (OpenSSL has chosen the protocol before it knows whether a
certificate will come); the protocol's own rule is enforced right after it, before any byte of MQTT or HTTP is read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any

from gateway.broker.connection import Connection
from gateway.broker.listeners import Listeners, _mqtt_rank, server_ssl_context
from gateway.broker.tls import HANDSHAKE_TIMEOUT_S, TlsServerProtocol
from gateway.netguard import CappedAccept

log = logging.getLogger("edgesim.broker")

MQTT_CERT = "x-amzn-mqtt-ca"
MQTT_CUSTOM_AUTH = "mqtt"
HTTP_CERT = "x-amzn-http-ca"
HTTP = "http/1.1"  # HTTPS publish with custom-authorizer headers (or a certificate)
ALPN_PROTOCOLS = (MQTT_CERT, MQTT_CUSTOM_AUTH, HTTP_CERT, HTTP)


def alpn_ssl_context(cert_path: str, key_path: str, trusted_pems: list[str], *, alpn: bool = True) -> ssl.SSLContext:
    """Like the mTLS context, but a certificate is asked for, not required (and ALPN picks the protocol)."""
    ctx = server_ssl_context(cert_path, key_path, trusted_pems)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return ctx


class AlpnConnection(Connection):
    """An MQTT connection on the multiplexed port; an HTTP one is handed to `http_handler` instead."""

    __slots__ = ("_http", "_http_factory")

    def __init__(self, broker: Any, door: str, http_handler: Callable[[], asyncio.Protocol] | None) -> None:
        super().__init__(broker, door)
        self._http: asyncio.Protocol | None = None
        self._http_factory = http_handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        has_cert = bool(ssl_object.getpeercert(binary_form=True)) if ssl_object is not None else False
        if alpn in (HTTP_CERT, HTTP):
            if (alpn == HTTP_CERT and not has_cert) or self._http_factory is None:
                transport.close()
                self.closed = True
                return
            self._http = self._http_factory()
            self._http.connection_made(transport)
            return
        if alpn != MQTT_CUSTOM_AUTH and not has_cert:
            # x-amzn-mqtt-ca (or no ALPN at all): mutual TLS, as on the plain mTLS port.
            peer = transport.get_extra_info("peername")
            log.debug("ALPN %s without a client certificate from %s: closed", alpn, peer)
            transport.close()
            self.closed = True
            return
        super().connection_made(transport)
        if alpn == MQTT_CUSTOM_AUTH:
            self.cert_der = None  # custom authentication: a certificate, if one came, is not the identity

    def pause_writing(self) -> None:
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._http is not None:
            self._http.resume_writing()

    def data_received(self, data: bytes | memoryview) -> None:
        if self._http is not None:
            self._http.data_received(bytes(data))
        elif not self.closed:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._http is not None:
            self._http.connection_lost(exc)
        elif self.transport is not None:
            super().connection_lost(exc)


async def start_alpn(listeners: Listeners, host: str, port: int, ctx: ssl.SSLContext,
                     http: Callable[[], asyncio.Protocol] | None, max_connections: int) -> int:  # fmt: skip
    """Open the multiplexed port; the bound port number comes back."""
    broker = listeners.broker
    connection = functools.partial(AlpnConnection, broker, "alpn", http)
    factory = functools.partial(TlsServerProtocol, ctx, connection, min(HANDSHAKE_TIMEOUT_S, broker.connect_timeout))
    accept = CappedAccept(factory, max_connections, "alpn", _mqtt_rank)
    listeners.accepts.append(accept)
    bound = await accept.start(host, port)
    listeners.ports["alpn"] = bound
    log.info("listening: alpn on %s:%d (TLS; ALPN %s)", host, bound, ", ".join(ALPN_PROTOCOLS))
    return bound
