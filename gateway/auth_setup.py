"""Connect-time authentication beyond certificates, put together for one gateway: the custom authorizers and
their control plane, the authenticators, the broker's hook, and the multiplexed ALPN port."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.broker.connect_auth import ConnectAuth
from gateway.identity.authn import CertificateAuthenticator
from gateway.identity.authorizers import Authorizers
from gateway.identity.custom_authenticator import CustomAuthorizerAuthenticator
from gateway.identity.policy_doc import PolicyDocument
from gateway.identity.sigv4_ws import SigV4Authenticator

if TYPE_CHECKING:
    from gateway.app import Gateway


@dataclass
class AuthServices:
    authorizers: Authorizers
    certificate: CertificateAuthenticator
    custom: CustomAuthorizerAuthenticator
    sigv4: SigV4Authenticator
    hook: ConnectAuth


def install(gw: Gateway) -> AuthServices:
    """Build the authenticators and hang the hook on the broker (the Lambda service must be running)."""
    cfg = gw.config
    authorizers = Authorizers(gw.store, gw.clock, cfg.region, cfg.account)

    async def invoke(function: str, payload: bytes) -> tuple[bytes, str | None]:
        result = await gw.lambdas.invoke(function, payload)
        return result.payload, result.function_error

    def key_policies(access_key: str) -> tuple[PolicyDocument, ...]:
        names = gw.registry.list_attached_policies(access_key).get("policies", [])
        return tuple(gw.registry.policy_document(p["policyName"]) for p in names)

    custom = CustomAuthorizerAuthenticator(authorizers, invoke, gw.clock, cfg.region, cfg.account)
    sigv4 = SigV4Authenticator(
        lambda: cfg.sigv4_credentials,
        key_policies,
        lambda: datetime.fromtimestamp(gw.clock.wall_ms() / 1000, tz=UTC),
        cfg.region,
        cfg.account,
    )
    hook = ConnectAuth(gw.broker, custom, sigv4)
    gw.broker.connect_auth = hook
    hook.start()
    return AuthServices(authorizers, CertificateAuthenticator(gw.registry), custom, sigv4, hook)
