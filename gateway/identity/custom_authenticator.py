"""The custom-authorizer authenticator: find the authorizer a connection names (or the default one), check the
token's signature, invoke the authorizer function in edgesim's Lambda service, and turn its answer into an
`Authentication`. A function that fails, times out or answers something malformed refuses that one connection."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.errors import EdgesimError
from gateway.identity import custom_auth
from gateway.identity.authn import Authentication, Credentials
from gateway.identity.authorizer import ConnectionContext
from gateway.identity.authorizers import Authorizers

log = logging.getLogger("edgesim.identity")

# (function name or ARN, event JSON) -> (answer payload, function error or None)
Invoke = Callable[[str, bytes], Awaitable[tuple[bytes, str | None]]]
KIND = "custom-authorizer"
_HTTP_CACHE_SIZE = 4096


class AuthorizerFailed(EdgesimError):
    """The function raised, timed out or answered something AWS IoT does not accept (InvalidResponseException)."""


@dataclass(frozen=True)
class Outcome:
    """One evaluation: the refusal, or the function's validated answer (and the event it was asked with)."""

    refusal: str | None
    answer: custom_auth.Answer | None = None
    authorizer: str | None = None
    failed: bool = False  # the function raised, timed out or answered something malformed


class CustomAuthorizerAuthenticator:
    kind = KIND

    def __init__(self, authorizers: Authorizers, invoke: Invoke, clock: Clock, region: str, account: str,
                 timeout_s: float = custom_auth.FUNCTION_TIMEOUT_S) -> None:  # fmt: skip
        self.authorizers = authorizers
        self.invoke = invoke
        self.clock = clock
        self.region = region
        self.account = account
        self.timeout_s = timeout_s
        self.invocations = 0
        self.failures = 0
        # enableCachingForHttp: (authorizer, token) -> (expiry ms, answer), for the HTTPS publish door only.
        self._http_cache: dict[tuple[str, str, int], tuple[int, custom_auth.Answer]] = {}

    def claims(self, creds: Credentials) -> bool:
        """Custom authentication applies when the connection names an authorizer, or presents no certificate on a
        door that serves custom authentication (ALPN `mqtt`, WebSocket, HTTPS) while a default authorizer is set."""
        if custom_auth.names_authorizer(creds) is not None:
            return True
        if creds.cert_der is not None:
            return False
        custom_door = creds.alpn == "mqtt" or creds.door in ("wss", "https")
        return custom_door and self.authorizers.default_name() is not None

    async def authenticate(self, creds: Credentials) -> Authentication:
        outcome = await self.evaluate(creds)
        if outcome.refusal is not None or outcome.answer is None:
            return Authentication.refused(KIND, outcome.refusal or "not authenticated")
        answer = outcome.answer
        context = ConnectionContext(client_id=creds.client_id, region=self.region, account=self.account,
                                    source_ip=creds.source_ip)  # fmt: skip
        return Authentication(KIND, principal=answer.principal_id, context=context, documents=answer.documents,
                              disconnect_after_s=answer.disconnect_after_s,
                              refresh_after_s=answer.refresh_after_s)  # fmt: skip

    async def evaluate(self, creds: Credentials, *, verify_only: bool = False) -> Outcome:
        name = custom_auth.names_authorizer(creds) or self.authorizers.default_name()
        if name is None:
            return Outcome("no custom authorizer named and no default authorizer set")
        spec = self.authorizers.get(name)
        if spec is None:
            return Outcome(f"custom authorizer {name} does not exist", authorizer=name)
        if spec["status"] != "ACTIVE":
            return Outcome(f"custom authorizer {name} is INACTIVE", authorizer=name)
        found = custom_auth.presented(creds, spec.get("tokenKeyName"))
        verified = False
        if not spec.get("signingDisabled"):
            # The function is never invoked for a token that is missing or not signed by the authorizer's key.
            if found.token is None or found.signature is None:
                wanted = spec.get("tokenKeyName")
                return Outcome(f"custom authorizer {name} wants a signed token ({wanted})", None, name)
            if not custom_auth.signature_valid(found.token, found.signature, spec.get("tokenSigningPublicKeys") or {}):
                return Outcome(f"the token signature for custom authorizer {name} is not valid", None, name)
            verified = True
        cache_key = None
        if creds.door == "https" and spec.get("enableCachingForHttp") and found.token is not None:
            cache_key = (name, found.token, self.authorizers.generation)
            cached = self._http_cache.get(cache_key)
            if cached is not None and cached[0] > self.clock.wall_ms():
                return Outcome(None if cached[1].is_authenticated else "not authenticated", cached[1], name)
        try:
            answer = await self.call(spec["authorizerFunctionArn"], custom_auth.event(creds, found, verified))
        except AuthorizerFailed as exc:
            return Outcome(f"custom authorizer {name} failed: {exc}", None, name, failed=True)
        if cache_key is not None:
            if len(self._http_cache) >= _HTTP_CACHE_SIZE:
                self._http_cache.clear()
            self._http_cache[cache_key] = (self.clock.wall_ms() + 1000 * answer.refresh_after_s, answer)
        if not answer.is_authenticated:
            return Outcome(f"custom authorizer {name} did not authenticate the connection", answer, name)
        return Outcome(None, answer, name)

    async def call(self, function: str, event: dict[str, Any]) -> custom_auth.Answer:
        """Invoke the function (5 seconds at most) and validate its answer; AuthorizerFailed otherwise."""
        self.invocations += 1
        try:
            # Shielded: the Lambda service ends its own invocation; the connection just stops waiting for it.
            invocation = asyncio.ensure_future(self.invoke(function, json.dumps(event).encode()))
            invocation.add_done_callback(_consume)
            payload, error = await asyncio.wait_for(asyncio.shield(invocation), self.timeout_s)
        except TimeoutError:
            self.failures += 1
            raise AuthorizerFailed(f"the function did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:  # a missing function, a Lambda error: this connection only
            self.failures += 1
            raise AuthorizerFailed(f"the function could not be invoked: {exc}") from None
        if error is not None:
            self.failures += 1
            raise AuthorizerFailed(f"the function raised ({error}): {payload[:200]!r}")
        try:
            return custom_auth.parse_answer(payload)
        except custom_auth.InvalidAnswer as exc:
            self.failures += 1
            raise AuthorizerFailed(f"the function's answer is not valid: {exc}") from None


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so an invocation nobody waits for any more logs no warning
