"""Connect-time authentication: one interface, three ways a device proves who it is to AWS IoT (an X.509
certificate, SigV4, a custom authorizer's token). Each turns the credentials a door saw into an `Authentication`:
who the principal is and which policy documents govern the connection, or why it is refused."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.identity.authorizer import ConnectionContext
from gateway.identity.policy_doc import PolicyDocument


def _no_headers() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class Credentials:
    """What one connection presented, whatever its door: the TLS facts, MQTT CONNECT fields, HTTP headers and query."""

    door: str  # "mqtts", "alpn", "wss", "https"
    source_ip: str | None = None
    client_id: str = ""
    cert_der: bytes | None = None
    alpn: str | None = None
    server_name: str | None = None
    username: str | None = None
    password: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    query: Mapping[str, str] = field(default_factory=_no_headers)
    raw_query: str = ""
    method: str = "GET"
    path: str = "/mqtt"


@dataclass
class Authentication:
    """The outcome: a principal and its policies, or a refusal. `reload` recomputes it after a registry change
    (the policies attached to an access key can change while it is connected)."""

    kind: str  # "certificate", "sigv4", "custom-authorizer"
    refusal: str | None = None
    principal: str | None = None
    context: ConnectionContext | None = None
    documents: tuple[PolicyDocument, ...] = ()
    disconnect_after_s: int | None = None
    refresh_after_s: int | None = None
    reload: Callable[[str, str | None], Authentication] | None = None  # (client id, source ip) -> fresh outcome

    @classmethod
    def refused(cls, kind: str, why: str) -> Authentication:
        return cls(kind, refusal=why)


class Authenticator(Protocol):
    """One way of proving identity. `claims` is cheap and synchronous: does this connection use this way?"""

    kind: str

    def claims(self, creds: Credentials) -> bool: ...

    async def authenticate(self, creds: Credentials) -> Authentication: ...


class GrantSource(Protocol):
    """The registry's answer for a presented certificate (gateway.registry.Registry.connection_grant)."""

    def connection_grant(self, cert_pem: bytes, client_id: str, source_ip: str | None) -> _Grant: ...


class _Grant(Protocol):
    @property
    def refusal(self) -> str | None: ...

    @property
    def context(self) -> ConnectionContext | None: ...

    @property
    def documents(self) -> tuple[PolicyDocument, ...]: ...


class CertificateAuthenticator:
    """mTLS: the certificate the TLS handshake verified, resolved through the registry. The MQTT door keeps its
    synchronous fast path (gateway/broker/connect.py); this serves the doors that authenticate up front."""

    kind = "certificate"

    def __init__(self, registry: GrantSource) -> None:
        self.registry = registry

    def claims(self, creds: Credentials) -> bool:
        return creds.cert_der is not None

    def grant(self, creds: Credentials) -> Authentication:
        assert creds.cert_der is not None
        grant = self.registry.connection_grant(creds.cert_der, creds.client_id, creds.source_ip)
        if grant.refusal is not None or grant.context is None:
            return Authentication.refused(self.kind, grant.refusal or "certificate refused")
        return Authentication(self.kind, principal=grant.context.cert_id, context=grant.context,
                              documents=tuple(grant.documents))  # fmt: skip

    async def authenticate(self, creds: Credentials) -> Authentication:
        return self.grant(creds)
