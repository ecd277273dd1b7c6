"""boto3 `iot` provisioning template operations and RegisterThing, over gateway.provisioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.api.targets import REST_HANDLERS
from gateway.errors import InvalidRequestException
from gateway.identity.provisioning_template import evaluate, parse_template
from gateway.provisioning.claims import create_provisioning_claim
from gateway.registry.provisioning_apply import apply_plan, as_register_thing_output

if TYPE_CHECKING:
    from gateway.api.parts import ProvisioningParts


def _register_thing(gw: ProvisioningParts, p: dict[str, Any]) -> dict[str, Any]:
    params = p.get("parameters") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise InvalidRequestException("parameters must be a map of strings")
    plan = evaluate(parse_template(p["templateBody"]), params)
    return as_register_thing_output(apply_plan(gw.registry, plan))


HANDLERS: dict[str, Callable[[ProvisioningParts, dict[str, Any]], Any]] = {
    "CreateProvisioningTemplate": lambda gw, p: gw.provisioning_templates.create(p),
    "DescribeProvisioningTemplate": lambda gw, p: gw.provisioning_templates.describe(p["templateName"]),
    "ListProvisioningTemplates": lambda gw, p: gw.provisioning_templates.list(p.get("maxResults"), p.get("nextToken")),
    "UpdateProvisioningTemplate": lambda gw, p: gw.provisioning_templates.update(p),
    "DeleteProvisioningTemplate": lambda gw, p: gw.provisioning_templates.delete(p["templateName"]),
    "CreateProvisioningTemplateVersion": lambda gw, p: gw.provisioning_templates.create_version(p),
    "ListProvisioningTemplateVersions": lambda gw, p: gw.provisioning_templates.list_versions(
        p["templateName"], p.get("maxResults"), p.get("nextToken")
    ),
    "DescribeProvisioningTemplateVersion": lambda gw, p: gw.provisioning_templates.describe_version(
        p["templateName"], p["versionId"]
    ),
    "DeleteProvisioningTemplateVersion": lambda gw, p: gw.provisioning_templates.delete_version(
        p["templateName"], p["versionId"]
    ),
    "RegisterThing": _register_thing,
    "CreateProvisioningClaim": lambda gw, p: create_provisioning_claim(
        gw.registry, gw.provisioning_templates, p["templateName"]
    ),
}

for _name, _handler in HANDLERS.items():
    REST_HANDLERS[("iot", _name)] = _handler
