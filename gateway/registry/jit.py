"""Just-in-time registration (JITR) and provisioning (JITP), as the AWS IoT developer guide describes them.

A device connects with a certificate nobody registered, signed by a registered CA that is ACTIVE and allows
auto-registration. Then, on that first connect:
- JITR (the CA has no registration config): the certificate is registered as PENDING_ACTIVATION and
  `$aws/events/certificates/registered/<caCertificateId>` is published; something (typically a rule with a Lambda)
  activates it and attaches a policy, and the device gets in on a later connect.
- JITP (the CA has a registration config with a template): the certificate is registered as PENDING_ACTIVATION and
  the template is evaluated with the parameters the certificate's subject gives (AWS::IoT::Certificate::CommonName,
  Country, Id, ...); the thing, policy and certificate status it names are created in one transaction.
Either way this first connection is refused, as on AWS: the device reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.errors import AwsError, InvalidRequestException, ResourceAlreadyExistsException, ResourceNotFoundException
from gateway.identity.certs import CertInfo, check_validity, parse_certificate, verify_signed_by
from gateway.identity.provisioning_template import Template, evaluate, parse_template
from gateway.registry.provisioning_apply import apply_plan

if TYPE_CHECKING:
    from gateway.registry import Registry

log = logging.getLogger("edgesim.jit")

# Subject attribute (gateway.identity.certs names) -> the JITP template parameter AWS fills from it.
SUBJECT_PARAMETERS = {
    "Country": "AWS::IoT::Certificate::Country",
    "Organization": "AWS::IoT::Certificate::Organization",
    "OrganizationalUnit": "AWS::IoT::Certificate::OrganizationalUnit",
    "DistinguishedNameQualifier": "AWS::IoT::Certificate::DistinguishedNameQualifier",
    "State": "AWS::IoT::Certificate::StateName",
    "CommonName": "AWS::IoT::Certificate::CommonName",
    "SerialNumber": "AWS::IoT::Certificate::SerialNumber",
}

# A provisioning template by name -> the parsed default version and the template's settings (its type).
TemplateLookup = Callable[[str], tuple[Template, dict[str, Any]]]


def template_parameters(info: CertInfo) -> dict[str, str]:
    """The JITP parameters a certificate supplies: its subject's attributes and its certificate id."""
    params = {"AWS::IoT::Certificate::Id": info.certificate_id}
    for attribute, name in SUBJECT_PARAMETERS.items():
        values = info.subject.get(attribute)
        if values:
            params[name] = values[0]
    return params


class JustInTime:
    def __init__(self, registry: Registry, templates: TemplateLookup | None = None) -> None:
        self.registry = registry
        self.templates = templates
        self.stats = {"registered": 0, "provisioned": 0, "provisioning_failed": 0}

    def _auto_registering_ca(self, cert: bytes) -> tuple[str, str] | None:
        """(id, PEM) of the ACTIVE, auto-registering CA that signed the certificate, if there is one."""
        rows = self.registry.store.query(
            "SELECT id, pem FROM ca_certificates WHERE status='ACTIVE' AND auto_registration=1"
        )
        for row in rows:
            if verify_signed_by(cert, row["pem"].encode()):
                return str(row["id"]), str(row["pem"])
        return None

    def on_unknown_certificate(self, cert: bytes) -> None:
        """A connecting device presented a certificate the registry does not know (the caller refuses the connect)."""
        try:
            info = parse_certificate(cert)
        except AwsError:
            return
        now = datetime.fromtimestamp(self.registry.clock.wall_ms() / 1000, tz=UTC)
        if check_validity(info, now) is not None:
            return
        found = self._auto_registering_ca(cert)
        if found is None:
            return
        ca_id, ca_pem = found
        registered_ms = self.registry.clock.wall_ms()
        try:
            self.registry.register_certificate(info.pem, ca_pem, status="PENDING_ACTIVATION")
        except ResourceAlreadyExistsException:
            return  # a concurrent connect of the same device got here first
        except AwsError as exc:
            log.warning("auto-registration of certificate %s failed: %s", info.certificate_id, exc.message)
            return
        self.stats["registered"] += 1
        config = self.registry.registration_config(ca_id) or {}
        if not config.get("templateBody") and not config.get("templateName"):
            log.info("JITR: registered certificate %s from CA %s as PENDING_ACTIVATION", info.certificate_id, ca_id)
            self.registry.events.certificate_registered(info.certificate_id, ca_id, registered_ms)
            return
        try:
            template = self._template(config)
            plan = evaluate(template, template_parameters(info))
            apply_plan(self.registry, plan, info.certificate_id)
        except AwsError as exc:
            self.stats["provisioning_failed"] += 1
            log.warning(
                "JITP from CA %s failed for certificate %s (it stays PENDING_ACTIVATION): %s",
                ca_id,
                info.certificate_id,
                exc.message,
            )
            return
        self.stats["provisioned"] += 1
        log.info("JITP: provisioned certificate %s from CA %s", info.certificate_id, ca_id)

    def _template(self, config: dict[str, str]) -> Template:
        """The CA's template: its own templateBody, else the JITP provisioning template it names."""
        if config.get("templateBody"):
            return parse_template(config["templateBody"])
        name = config["templateName"]
        if self.templates is None:
            raise ResourceNotFoundException(f"The provisioning template {name} does not exist")
        template, settings = self.templates(name)
        if settings.get("type") != "JITP":
            raise InvalidRequestException(f"The provisioning template {name} is not of type JITP")
        return template
