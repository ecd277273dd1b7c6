"""The HTTPS publish door: `POST /topics/{topic}?qos=1` with a client certificate, policy checked (reference §1.6)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from gateway.api import greengrass, https_custom_auth, mqtt5_http
from gateway.api.guard import BODY_TIMEOUT_KEY, read_body
from gateway.api.wire import rest_json_error
from gateway.errors import AwsError, ForbiddenException, InternalFailureException, InvalidRequestException
from gateway.identity.authorizer import Authorizer

if TYPE_CHECKING:
    from gateway.api.parts import HttpsPublishParts

log = logging.getLogger("edgesim.https")


class HttpsPublish:
    """Thing variables never resolve here: HTTP publishes have no client id (reference §2.3)."""

    def __init__(self, gateway: HttpsPublishParts) -> None:
        self.gateway = gateway
        self._authorizers: dict[bytes, tuple[int, Authorizer]] = {}
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ctx: ssl.SSLContext) -> int:
        app = web.Application(client_max_size=self.gateway.config.mqtt.max_payload_bytes + 1)
        app.router.add_post("/topics/{topic:.+}", self._publish)
        # Greengrass discovery answers on the same mutual-TLS port as HTTPS publish (8443 on AWS).
        app.router.add_get(
            "/greengrass/discover/thing/{thing}", functools.partial(greengrass.discover, gw=self.gateway)
        )
        app[BODY_TIMEOUT_KEY] = self.gateway.config.http.body_timeout_s
        # The keep-alive timeout is the deadline for a request head (see gateway/api/server.py).
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.gateway.config.http.header_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # aiohttp has no public accessor for the bound port
        bound = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("listening: https publish on %s:%d (client certificate required)", host, bound)
        return bound

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """This door's HTTP protocol, for the ALPN port's `x-amzn-http-ca` connections."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _has_certificate(request: web.Request) -> bool:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        return bool(ssl_object and ssl_object.getpeercert(binary_form=True))

    def _authorizer(self, request: web.Request) -> Authorizer:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise ForbiddenException("A client certificate is required")
        generation = self.gateway.registry.generation
        cached = self._authorizers.get(der)
        if cached is not None and cached[0] == generation:
            return cached[1]
        peer = transport.get_extra_info("peername") if transport else None
        grant = self.gateway.registry.connection_grant(der, "", peer[0] if peer else None)
        if grant.refusal is not None or grant.context is None:
            raise ForbiddenException(grant.refusal or "certificate refused")
        authorizer = Authorizer.compile(grant.documents, grant.context)
        if len(self._authorizers) > 4096:
            self._authorizers.clear()
        self._authorizers[der] = (generation, authorizer)
        return authorizer

    async def _publish(self, request: web.Request) -> web.Response:
        try:
            gw = self.gateway
            topic = unquote(request.rel_url.raw_path.split("/topics/", 1)[1])
            query = request.rel_url.query
            qos_text = query.get("qos", "0")
            if qos_text not in ("0", "1"):
                raise InvalidRequestException("qos must be 0 or 1")
            retain = query.get("retain", "false").lower() == "true"
            props = mqtt5_http.from_request(query, request.headers)
            if self._has_certificate(request):
                authorizer = self._authorizer(request)
                principal = authorizer.context.cert_id
            else:
                authorizer, principal = await https_custom_auth.authorize(gw.auth.custom, request)
            payload = await read_body(request)
            message = gw.broker.intake.admit(
                topic, payload, int(qos_text), retain, props, door="https", principal=principal,
                authorizer=authorizer, acknowledged=True,
            )  # fmt: skip
            if message.hold is not None:
                await message.hold.settled()  # the 200 means the rule actions it started have committed
                if message.hold.failed:
                    raise InternalFailureException("The message could not be stored; publish it again")
            return web.json_response({"message": "OK", "traceId": str(uuid.uuid4())})
        except AwsError as error:
            return rest_json_error(error)
