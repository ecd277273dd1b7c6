"""The Registry: every registry operation plus what the broker asks of it when a device connects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.identity.authorizer import ConnectionContext
from gateway.identity.certs import CertInfo, check_validity, parse_certificate
from gateway.identity.policy_doc import PolicyDocument
from gateway.registry.base import RegistryChange
from gateway.registry.security import SecurityRegistry

__all__ = ["ConnectionGrant", "Registry", "RegistryChange"]


@dataclass(frozen=True)
class ConnectionGrant:
    """What a certificate may do on one connection, or why it may not connect at all."""

    refusal: str | None
    context: ConnectionContext | None = None
    documents: tuple[PolicyDocument, ...] = ()


class Registry(SecurityRegistry):
    _parsed: dict[bytes, CertInfo]

    def _parse_presented(self, cert: bytes) -> CertInfo:
        """Parse a presented certificate once: reconnecting devices present the same bytes again."""
        cache: dict[bytes, CertInfo] = self.__dict__.setdefault("_parsed", {})
        info = cache.get(cert)
        if info is None:
            if len(cache) >= 4096:
                cache.clear()
            info = cache[cert] = parse_certificate(cert)
        return info

    def connection_grant(self, cert_pem: bytes, client_id: str, source_ip: str | None) -> ConnectionGrant:
        """Resolve a presented certificate into its principal, thing and policies (reference §2.3)."""
        info = self._parse_presented(cert_pem)
        row = self.certificate_row(info.certificate_id)
        if row is None:
            return ConnectionGrant(f"certificate {info.certificate_id} is not registered")
        if row["status"] != "ACTIVE":
            return ConnectionGrant(f"certificate {info.certificate_id} is {row['status']}")
        reason = check_validity(info, datetime.fromtimestamp(self.clock.wall_ms() / 1000, tz=UTC))
        if reason:
            return ConnectionGrant(reason)
        if row["ca_id"]:
            ca = self.store.one("SELECT status FROM ca_certificates WHERE id=?", (row["ca_id"],))
            if ca is None or ca["status"] != "ACTIVE":
                return ConnectionGrant(f"the CA of certificate {info.certificate_id} is not ACTIVE")
        principal = self.arn("cert", info.certificate_id)
        attached = self.principal_attachments(principal)
        thing_name = None
        exclusive = [name for name, excl in attached if excl]
        if exclusive:
            thing_name = exclusive[0]
        elif any(name == client_id for name, _ in attached):
            thing_name = client_id
        thing_type = None
        attributes: dict[str, str] = {}
        targets = [principal]
        if thing_name is not None:
            thing = self.store.one("SELECT type_name, attributes FROM things WHERE name=?", (thing_name,))
            if thing is not None:
                thing_type = thing["type_name"]
                attributes = json.loads(thing["attributes"])
                targets += self.inherited_group_arns(thing_name)
            else:
                thing_name = None
        names: list[str] = []
        for target in targets:
            for r in self.store.query("SELECT policy_name FROM policy_targets WHERE target=?", (target,)):
                if r["policy_name"] not in names:
                    names.append(r["policy_name"])
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
        return ConnectionGrant(None, context, tuple(self.policy_document(n) for n in names))
