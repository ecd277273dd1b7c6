"""HTTPS publish without a client certificate: a custom authorizer named in the request's headers or query string
(AWS IoT serves this on port 443; edgesim on its ALPN port), its answer cached when enableCachingForHttp is set."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import ForbiddenException
from gateway.identity.authn import Credentials
from gateway.identity.authorizer import Authorizer
from gateway.identity.custom_authenticator import CustomAuthorizerAuthenticator


async def authorize(custom: CustomAuthorizerAuthenticator, request: web.Request) -> tuple[Authorizer, str | None]:
    """The request's compiled policies and principal; ForbiddenException when it has no valid credentials."""
    creds = Credentials(
        door="https", source_ip=request.remote, headers=dict(request.headers), query=dict(request.rel_url.query),
        raw_query=request.rel_url.raw_query_string, method=request.method, path=request.rel_url.raw_path,
    )  # fmt: skip
    if not custom.claims(creds):
        raise ForbiddenException("A client certificate or custom authorizer credentials are required")
    identity = await custom.authenticate(creds)
    if identity.refusal is not None or identity.context is None:
        raise ForbiddenException(f"Not authorized: {identity.refusal or 'not authenticated'}")
    return Authorizer.compile(identity.documents, identity.context), identity.principal
