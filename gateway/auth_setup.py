"""Connect-time authentication beyond certificates, put together for one gateway: the custom authorizers and
their control plane, the authenticators, the broker's hook, and the multiplexed ALPN port."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from gateway.broker.connect_auth import ConnectAuth
from gateway.identity.authn import CertificateAuthenticator
from gateway.identity.authorizers import Authorizers
from gateway.identity.custom_authenticator import CustomAuthorizerAuthenticator
from gateway.identity.policy_doc import PolicyDocument
from gateway.identity.sigv4_ws import SigV4Authenticator

if TYPE_CHECKING:
    from gateway.broker.core import Broker
    from gateway.clock import Clock
    from gateway.config import Config
    from gateway.registry import Registry
    from gateway.sinks.lambda_.service import LambdaService
    from gateway.store import Store


class AuthHost(Protocol):
    """What the authenticators are built from (the Gateway satisfies it)."""

    config: Config
    store: Store
    clock: Clock
    registry: Registry
    broker: Broker
    lambdas: LambdaService


@dataclass
class AuthServices:
    authorizers: Authorizers
    certificate: CertificateAuthenticator
    custom: CustomAuthorizerAuthenticator
    sigv4: SigV4Authenticator
    hook: ConnectAuth


def install(gw: AuthHost) -> AuthServices:
    """Build the authenticators and hang the hook on the broker (the Lambda service must be running)."""
    cfg = gw.config
    authorizers = Authorizers(gw.store, gw.clock, cfg.region, cfg.account)

    async def invoke(function: str, payload: bytes) -> tuple[bytes, str | None]:
        result = await gw.lambdas.invoke(function, payload)
        return result.payload, result.function_error

    def temporary() -> dict[str, tuple[str, str]]:
        front = getattr(gw, "front", None)  # STS answers on the API port, which starts after this
        return front.sts.temporary_credentials(gw.clock.wall_ms()) if front is not None else {}

    def key_policies(access_key: str) -> tuple[PolicyDocument, ...]:
        """Policies attached to the access key; for AssumeRole credentials, also those attached to the role's ARN."""
        targets = [access_key]
        front = getattr(gw, "front", None)
        session = front.sts.sessions.get(access_key) if front is not None else None
        if session is not None:  # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION
            role = session.arn.split("/")[1]
            targets.append(f"arn:aws:iam::{session.account}:role/{role}")
        names = dict.fromkeys(
            p["policyName"] for t in targets for p in gw.registry.list_attached_policies(t).get("policies", [])
        )
        return tuple(gw.registry.policy_document(name) for name in names)

    custom = CustomAuthorizerAuthenticator(authorizers, invoke, gw.clock, cfg.region, cfg.account)
    sigv4 = SigV4Authenticator(
        lambda: {**cfg.sigv4_credentials, **{key: pair[0] for key, pair in temporary().items()}},
        key_policies,
        lambda: datetime.fromtimestamp(gw.clock.wall_ms() / 1000, tz=UTC),
        cfg.region,
        cfg.account,
        lambda: {key: pair[1] for key, pair in temporary().items()},
    )
    hook = ConnectAuth(gw.broker, custom, sigv4)
    gw.broker.connect_auth = hook
    hook.start()
    return AuthServices(authorizers, CertificateAuthenticator(gw.registry), custom, sigv4, hook)
