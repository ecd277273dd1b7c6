"""The API token: when the gateway listens beyond loopback, the HTTP API and the dashboard want it (or SigV4)."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.api.guard import read_body
from gateway.errors import AwsError

TOKEN_COOKIE = "edgesim_token"
TOKEN_HEADER = "X-Edgesim-Token"
TOKEN_CHECKED = "edgesim.token_checked"
OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
# Checks a request's SigV4 signature against its body; raises when it is not valid.
SignatureCheck = Callable[[web.Request, bytes], None]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def required_token(host: str, configured: str | None) -> str | None:
    """The token the API wants: the configured one; else a fresh random one when `host` is not loopback."""
    if configured:
        return configured
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    return request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or request.query.get("token")


def token_middleware(token: str, check_signature: SignatureCheck | None) -> Middleware:
    """Every request but /health carries the token (bearer, header, cookie or ?token=), or, when SigV4 checking is
    configured, a valid SigV4 signature (verified here, whatever the route)."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = presented_token(request)
        if given is not None and hmac.compare_digest(given.encode(), expected):
            request[TOKEN_CHECKED] = True
            if request.query.get("token") and request.method == "GET" and request.path == "/":
                # Opened from the printed link: the token goes into a cookie (the page's own requests carry it) and
                # out of the address bar and history.
                response = web.HTTPFound("/")
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
                return response
            return await handler(request)
        if check_signature is not None and request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
            try:
                check_signature(request, await read_body(request))
            except AwsError as exc:
                return web.json_response({"message": exc.message}, status=exc.http_status)
            request[TOKEN_CHECKED] = True
            return await handler(request)
        return web.json_response(
            {
                "message": "this gateway is reachable beyond loopback and wants its API token: "
                "send 'Authorization: Bearer <token>' (or X-Edgesim-Token), or open /?token=<token>"
            },
            status=401,
        )

    return check
