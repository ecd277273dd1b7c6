"""Starts and stops the HTTP API server (127.0.0.1 by default)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.auth import SignatureCheck, token_middleware
from gateway.api.guard import (
    BODY_TIMEOUT_KEY,
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MAX_BODY_BYTES,
    http_rank,
    quiet_malformed_requests,
)
from gateway.netguard import CappedAccept

log = logging.getLogger("edgesim.api")


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _front_middleware(
    front: Callable[[web.Request], Awaitable[web.StreamResponse | None]],
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def claim(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await front(request)
        return response if response is not None else await handler(request)

    return claim


class ApiServer:
    def __init__(
        self,
        host: str,
        port: int,
        status: Callable[[], dict[str, Any]],
        fallback: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
        views: dict[str, Callable[[], Any]] | None = None,
        metrics: Callable[[], bytes] | None = None,
        routes: Callable[[web.Application], None] | None = None,
        token: str | None = None,
        check_signature: SignatureCheck | None = None,
        front: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None,
        max_connections: int = 1024,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self._status = status
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app[BODY_TIMEOUT_KEY] = body_timeout_s
        if token:
            self.app.middlewares.append(token_middleware(token, check_signature))  # type: ignore[arg-type]
        if front is not None:
            # S3 and query-protocol calls, claimed before the dashboard's routes (`aws s3 ls` is a GET /).
            self.app.middlewares.append(_front_middleware(front))  # type: ignore[arg-type]
        self.app.router.add_get("/health", self._health)
        if routes is not None:
            routes(self.app)  # the dashboard, before the catch-all below
        # edgesim's own read-only views (metrics), under a prefix no AWS API uses.
        for path, view in (views or {}).items():
            self.app.router.add_get(f"/edgesim/{path}", self._view(view))
        if metrics is not None:
            self.app.router.add_get("/metrics", self._metrics(metrics))
        if fallback is not None:
            # Every other request is an AWS API call, told apart by its signature, target header and path.
            self.app.router.add_route("*", "/{tail:.*}", fallback)
        self._runner: web.AppRunner | None = None
        self._listener: CappedAccept | None = None
        self.ready = False

    async def _health(self, request: web.Request) -> web.Response:
        body = {"status": "ok" if self.ready else "starting", **self._status()}
        return web.json_response(body, status=200 if self.ready else 503)

    @staticmethod
    def _metrics(render: Callable[[], bytes]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(body=render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

        return handler

    @staticmethod
    def _view(view: Callable[[], Any]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(view())

        return handler

    async def start(self) -> int:
        quiet_malformed_requests()
        # aiohttp closes a connection that has not sent a whole request head within its keep-alive timeout, counted
        # from the connect or from the end of the previous response: that is the header deadline.
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.header_timeout_s)
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = CappedAccept(self._runner.server, self.max_connections, "http api", http_rank)
        self.port = await self._listener.start(self.host, self.port)
        log.info("listening: http api on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
