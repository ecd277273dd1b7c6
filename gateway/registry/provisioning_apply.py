"""Carry out a provisioning plan (gateway.identity.provisioning_template) against the registry, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import AwsError, InvalidRequestException
from gateway.identity.provisioning_template import ProvisioningPlan, TemplateError, ThingPlan
from gateway.registry.security import SecurityRegistry


@dataclass(frozen=True)
class ProvisioningResult:
    thing_name: str | None
    certificate_id: str | None
    certificate_pem: str | None  # set when the plan signed a CSR
    resource_arns: dict[str, str]
    device_configuration: dict[str, str]


def apply_plan(
    registry: SecurityRegistry, plan: ProvisioningPlan, certificate_id: str | None = None
) -> ProvisioningResult:
    """Create or update what the plan names, all in one transaction; a failure leaves nothing behind.

    `certificate_id` is the certificate the request is about (fleet provisioning's ownership token, the JITP
    device's certificate): the plan's policies and thing are attached to it.
    """
    arns: dict[str, str] = {}
    pem: str | None = None
    try:
        # Registry events wait for the commit, and are dropped with a rollback (the changes never happened).
        with registry.events.deferred(), registry.store.transaction():
            cert_id = certificate_id
            if plan.certificate is not None:
                if plan.certificate.csr is not None:
                    out = registry.create_certificate_from_csr(plan.certificate.csr)
                    cert_id, pem = out["certificateId"], out["certificatePem"]
                else:
                    cert_id = plan.certificate.certificate_id
                assert cert_id is not None
                registry.update_certificate(cert_id, plan.certificate.status)
                arns["certificate"] = registry.arn("cert", cert_id)
            cert_arn = registry.arn("cert", cert_id) if cert_id else None
            for policy in plan.policies:
                if policy.policy_document is not None:
                    registry.ensure_policy(policy.policy_name, policy.policy_document)
                if cert_arn is not None:
                    registry.attach_policy(policy.policy_name, cert_arn)
                arns["policy"] = registry.arn("policy", policy.policy_name)
            thing_name = None
            if plan.thing is not None:
                thing_name = plan.thing.thing_name
                _provision_thing(registry, plan.thing)
                if cert_arn is not None:
                    registry.attach_thing_principal(thing_name, cert_arn)
                arns["thing"] = registry.arn("thing", thing_name)
    except TemplateError:
        raise
    except AwsError as exc:
        # What the registry refused (a missing policy or group, a bad name) reaches the device as one error.
        raise TemplateError(exc.message, "InvalidParameters") from exc
    return ProvisioningResult(thing_name, cert_id, pem, arns, dict(plan.device_configuration))


def _provision_thing(registry: SecurityRegistry, thing: ThingPlan) -> None:
    over = thing.overrides
    if not registry.thing_exists(thing.thing_name):
        registry.create_thing(thing.thing_name, thing.thing_type_name, thing.attributes or None)
        for group in thing.thing_groups:
            registry.add_thing_to_thing_group(group, thing.thing_name)
        return
    current = registry.describe_thing(thing.thing_name)
    attrs_mode = over.get("AttributePayload", "DO_NOTHING")
    if thing.attributes and current.get("attributes", {}) != thing.attributes:
        if attrs_mode == "FAIL":
            raise InvalidRequestException(f"Thing {thing.thing_name} exists with different attributes")
        if attrs_mode in ("MERGE", "REPLACE"):
            registry.update_thing(thing.thing_name, attributes=thing.attributes, merge=attrs_mode == "MERGE")
    type_mode = over.get("ThingTypeName", "DO_NOTHING")
    if thing.thing_type_name and current.get("thingTypeName") != thing.thing_type_name:
        if type_mode == "FAIL":
            raise InvalidRequestException(f"Thing {thing.thing_name} exists with a different thing type")
        if type_mode == "REPLACE":
            registry.update_thing(thing.thing_name, thing_type_name=thing.thing_type_name)
    groups_mode = over.get("ThingGroups", "DO_NOTHING")
    existing = {g["groupName"] for g in registry.list_thing_groups_for_thing(thing.thing_name)["thingGroups"]}
    wanted = set(thing.thing_groups)
    if wanted and wanted != existing:
        if groups_mode == "FAIL":
            raise InvalidRequestException(f"Thing {thing.thing_name} exists in different thing groups")
        if groups_mode == "REPLACE":
            for group in existing - wanted:
                registry.remove_thing_from_thing_group(group, thing.thing_name)
            for group in wanted - existing:
                registry.add_thing_to_thing_group(group, thing.thing_name)


def as_register_thing_output(result: ProvisioningResult) -> dict[str, Any]:
    """The shape of the RegisterThing HTTP answer."""
    out: dict[str, Any] = {"resourceArns": result.resource_arns}
    if result.certificate_pem is not None:
        out["certificatePem"] = result.certificate_pem
    return out
