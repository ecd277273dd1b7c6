"""The Registry: every registry operation plus what the broker asks of it when a device connects."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.identity.authorizer import ConnectionContext
from gateway.identity.certs import CertInfo, check_validity, parse_certificate
from gateway.identity.policy_doc import PolicyDocument
from gateway.registry.base import RegistryChange
from gateway.registry.security import SecurityRegistry

if TYPE_CHECKING:
    from gateway.registry.jit import JustInTime

__all__ = ["ConnectionGrant", "Registry", "RegistryChange"]


@dataclass(frozen=True)
class ConnectionGrant:
    """What a certificate may do on one connection, or why it may not connect at all."""

    refusal: str | None
    context: ConnectionContext | None = None
    documents: tuple[PolicyDocument, ...] = ()
    policy_names: tuple[str, ...] = ()
    unregistered: bool = False  # the certificate is not in the registry at all (JITR/JITP may register it)


class Registry(SecurityRegistry):
    _parsed: dict[bytes, CertInfo]
    jit: JustInTime | None = None  # auto-registration of unknown certificates, set by the gateway

    def _parse_presented(self, cert: bytes) -> CertInfo:
        """Parse a presented certificate once: reconnecting devices present the same bytes again."""
        cache: dict[bytes, CertInfo] = self.__dict__.setdefault("_parsed", {})
        info = cache.get(cert)
        if info is None:
            if len(cache) >= 4096:
                cache.clear()
            info = cache[cert] = parse_certificate(cert)
        return info

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """Memoise registry lookups until the next registry change (the generation counter moves on every one)."""
        cache: dict[tuple[Any, ...], tuple[int, Any]] = self.__dict__.setdefault("_lookups", {})
        hit = cache.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        if len(cache) >= 8192:
            cache.clear()
        value = compute()
        cache[key] = (self.generation, value)
        return value

    def _certificate_facts(self, info: CertInfo) -> tuple[str | None, str | None, frozenset[str], tuple[str, ...]]:
        """(refusal, the exclusively attached thing, every attached thing, names of policies on the certificate).

        A set, not a list: a fleet sharing one certificate attaches it to thousands of things, and each connect asks
        whether its client id is one of them."""
        row = self.certificate_row(info.certificate_id)
        if row is None:
            return f"certificate {info.certificate_id} is not registered", None, frozenset(), ()
        if row["status"] != "ACTIVE":
            return f"certificate {info.certificate_id} is {row['status']}", None, frozenset(), ()
        if row["ca_id"]:
            ca = self.store.one("SELECT status FROM ca_certificates WHERE id=?", (row["ca_id"],))
            if ca is None or ca["status"] != "ACTIVE":
                return f"the CA of certificate {info.certificate_id} is not ACTIVE", None, frozenset(), ()
        principal = self.arn("cert", info.certificate_id)
        attached = self.principal_attachments(principal)
        exclusive = next((name for name, excl in attached if excl), None)
        return None, exclusive, frozenset(name for name, _ in attached), self._policy_names([principal])

    def _thing_facts(self, thing_name: str) -> tuple[bool, str | None, dict[str, str], tuple[str, ...]]:
        """(exists, thing type, attributes, names of policies inherited through its groups)."""
        thing = self.store.one("SELECT type_name, attributes FROM things WHERE name=?", (thing_name,))
        if thing is None:
            return False, None, {}, ()
        groups = self.inherited_group_arns(thing_name)
        return True, thing["type_name"], json.loads(thing["attributes"]), self._policy_names(groups)

    def _policy_names(self, targets: list[str]) -> tuple[str, ...]:
        names: list[str] = []
        for target in targets:
            for r in self.store.query("SELECT policy_name FROM policy_targets WHERE target=?", (target,)):
                if r["policy_name"] not in names:
                    names.append(r["policy_name"])
        return tuple(names)

    def connection_grant(self, cert_pem: bytes, client_id: str, source_ip: str | None) -> ConnectionGrant:
        """Resolve a presented certificate into its principal, thing and policies (reference §2.3).

        Lookups are memoised per registry generation, so a connect storm of one fleet costs dict lookups,
        and any registry change (in this process or another) invalidates them at once.
        """
        info = self._parse_presented(cert_pem)
        refusal, exclusive, attached, cert_policies = self._cached(
            ("cert", info.certificate_id), lambda: self._certificate_facts(info)
        )
        if refusal is not None:
            return ConnectionGrant(refusal, unregistered=self.certificate_row(info.certificate_id) is None)
        reason = check_validity(info, datetime.fromtimestamp(self.clock.wall_ms() / 1000, tz=UTC))
        if reason:
            return ConnectionGrant(reason)
        thing_name = exclusive if exclusive is not None else client_id if client_id in attached else None
        thing_type = None
        attributes: dict[str, str] = {}
        names = cert_policies
        if thing_name is not None:
            resolved: str = thing_name
            exists, thing_type, attributes, group_policies = self._cached(
                ("thing", resolved), lambda: self._thing_facts(resolved)
            )
            if exists:
                names = tuple(dict.fromkeys((*cert_policies, *group_policies)))
            else:
                thing_name = None
        context = ConnectionContext(
            client_id=client_id,
            region=self.region,
            account=self.account,
            thing_name=thing_name,
            thing_type_name=thing_type,
            thing_attributes=attributes,
            cert_id=info.certificate_id,
            cert_subject=info.subject,
            cert_issuer=info.issuer,
            cert_subject_alt_names=info.subject_alt_names,
            source_ip=source_ip,
        )
        documents = self._cached(("policies", names), lambda: tuple(self.policy_document(n) for n in names))
        return ConnectionGrant(None, context, documents, names)
