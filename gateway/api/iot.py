"""The `iot` control plane: one handler per AWS operation, over the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequestException
from gateway.registry import Registry

Params = dict[str, Any]
Handler = Callable[[Registry, Params], Any]


def _attrs(params: Params) -> dict[str, str] | None:
    payload = params.get("attributePayload")
    return None if payload is None else dict(payload.get("attributes") or {})


def _page(params: Params, token_key: str = "nextToken", size_key: str = "maxResults") -> dict[str, Any]:
    return {"max_results": params.get(size_key), "next_token": params.get(token_key)}


def _group_props(params: Params) -> tuple[str | None, dict[str, str] | None]:
    props = params.get("thingGroupProperties") or {}
    return props.get("thingGroupDescription"), (props.get("attributePayload") or {}).get("attributes")


HANDLERS: dict[str, Handler] = {
    # things
    "CreateThing": lambda r, p: r.create_thing(p["thingName"], p.get("thingTypeName"), _attrs(p)),
    "DescribeThing": lambda r, p: r.describe_thing(p["thingName"]),
    "ListThings": lambda r, p: r.list_things(
        **_page(p),
        attribute_name=p.get("attributeName"),
        attribute_value=p.get("attributeValue"),
        thing_type_name=p.get("thingTypeName"),
        use_prefix_attribute_value=bool(p.get("usePrefixAttributeValue")),
    ),
    "UpdateThing": lambda r, p: r.update_thing(
        p["thingName"],
        p.get("thingTypeName"),
        _attrs(p),
        bool((p.get("attributePayload") or {}).get("merge")),
        p.get("expectedVersion"),
        bool(p.get("removeThingType")),
    ),
    "DeleteThing": lambda r, p: r.delete_thing(p["thingName"], p.get("expectedVersion")),
    # thing types
    "CreateThingType": lambda r, p: r.create_thing_type(
        p["thingTypeName"],
        (p.get("thingTypeProperties") or {}).get("thingTypeDescription"),
        (p.get("thingTypeProperties") or {}).get("searchableAttributes"),
    ),
    "DescribeThingType": lambda r, p: r.describe_thing_type(p["thingTypeName"]),
    "ListThingTypes": lambda r, p: r.list_thing_types(**_page(p), thing_type_name=p.get("thingTypeName")),
    "DeprecateThingType": lambda r, p: r.deprecate_thing_type(p["thingTypeName"], bool(p.get("undoDeprecate"))),
    "DeleteThingType": lambda r, p: r.delete_thing_type(p["thingTypeName"]),
    # thing groups
    "CreateThingGroup": lambda r, p: r.create_thing_group(
        p["thingGroupName"], p.get("parentGroupName"), *_group_props(p)
    ),
    "DescribeThingGroup": lambda r, p: r.describe_thing_group(p["thingGroupName"]),
    "ListThingGroups": lambda r, p: r.list_thing_groups(**_page(p), parent_group=p.get("parentGroup")),
    "DeleteThingGroup": lambda r, p: r.delete_thing_group(p["thingGroupName"]),
    "AddThingToThingGroup": lambda r, p: r.add_thing_to_thing_group(_group_name(r, p), _thing_name(p)),
    "RemoveThingFromThingGroup": lambda r, p: r.remove_thing_from_thing_group(_group_name(r, p), _thing_name(p)),
    "ListThingsInThingGroup": lambda r, p: r.list_things_in_thing_group(
        p["thingGroupName"], bool(p.get("recursive")), **_page(p)
    ),
    "ListThingGroupsForThing": lambda r, p: r.list_thing_groups_for_thing(p["thingName"]),
    # certificates
    "CreateKeysAndCertificate": lambda r, p: r.create_keys_and_certificate(bool(p.get("setAsActive"))),
    "CreateCertificateFromCsr": lambda r, p: r.create_certificate_from_csr(
        p["certificateSigningRequest"], bool(p.get("setAsActive"))
    ),
    "RegisterCertificate": lambda r, p: r.register_certificate(
        p["certificatePem"], p.get("caCertificatePem"), p.get("status"), bool(p.get("setAsActive"))
    ),
    "RegisterCertificateWithoutCA": lambda r, p: r.register_certificate_without_ca(
        p["certificatePem"], p.get("status") or "INACTIVE"
    ),
    "RegisterCACertificate": lambda r, p: r.register_ca_certificate(
        p["caCertificate"],
        bool(p.get("setAsActive")),
        bool(p.get("allowAutoRegistration")),
        p.get("verificationCertificate"),
        p.get("registrationConfig"),
        p.get("certificateMode"),
    ),
    "GetRegistrationCode": lambda r, p: r.get_registration_code(),
    "DeleteRegistrationCode": lambda r, p: r.delete_registration_code(),
    "UpdateCertificate": lambda r, p: r.update_certificate(p["certificateId"], p["newStatus"]),
    "UpdateCACertificate": lambda r, p: r.update_ca_certificate(
        p["certificateId"],
        p.get("newStatus"),
        p.get("newAutoRegistrationStatus"),
        p.get("registrationConfig"),
        bool(p.get("removeAutoRegistration")),
    ),
    "DescribeCertificate": lambda r, p: r.describe_certificate(p["certificateId"]),
    "DescribeCACertificate": lambda r, p: r.describe_ca_certificate(p["certificateId"]),
    "ListCertificates": lambda r, p: r.list_certificates(p.get("pageSize"), p.get("marker")),
    "ListCACertificates": lambda r, p: r.list_ca_certificates(p.get("pageSize"), p.get("marker")),
    "ListCertificatesByCA": lambda r, p: r.list_certificates(p.get("pageSize"), p.get("marker"), p["caCertificateId"]),
    "DeleteCertificate": lambda r, p: r.delete_certificate(p["certificateId"], bool(p.get("forceDelete"))),
    "DeleteCACertificate": lambda r, p: r.delete_ca_certificate(p["certificateId"]),
    # policies
    "CreatePolicy": lambda r, p: r.create_policy(p["policyName"], p["policyDocument"]),
    "GetPolicy": lambda r, p: r.get_policy(p["policyName"]),
    "GetPolicyVersion": lambda r, p: r.get_policy_version(p["policyName"], p["policyVersionId"]),
    "ListPolicies": lambda r, p: r.list_policies(p.get("pageSize"), p.get("marker")),
    "ListPolicyVersions": lambda r, p: r.list_policy_versions(p["policyName"]),
    "CreatePolicyVersion": lambda r, p: r.create_policy_version(
        p["policyName"], p["policyDocument"], bool(p.get("setAsDefault"))
    ),
    "SetDefaultPolicyVersion": lambda r, p: r.set_default_policy_version(p["policyName"], p["policyVersionId"]),
    "DeletePolicyVersion": lambda r, p: r.delete_policy_version(p["policyName"], p["policyVersionId"]),
    "DeletePolicy": lambda r, p: r.delete_policy(p["policyName"]),
    "AttachPolicy": lambda r, p: r.attach_policy(p["policyName"], p["target"]),
    "DetachPolicy": lambda r, p: r.detach_policy(p["policyName"], p["target"]),
    "AttachPrincipalPolicy": lambda r, p: r.attach_policy(p["policyName"], p["principal"]),
    "DetachPrincipalPolicy": lambda r, p: r.detach_policy(p["policyName"], p["principal"]),
    "ListAttachedPolicies": lambda r, p: r.list_attached_policies(p["target"], bool(p.get("recursive"))),
    "ListPrincipalPolicies": lambda r, p: r.list_attached_policies(p["principal"]),
    "ListTargetsForPolicy": lambda r, p: r.list_targets_for_policy(p["policyName"]),
    # registry events
    "UpdateEventConfigurations": lambda r, p: r.events.update(p.get("eventConfigurations")),
    "DescribeEventConfigurations": lambda r, p: r.events.describe(),
    # principals
    "AttachThingPrincipal": lambda r, p: r.attach_thing_principal(
        p["thingName"], p["principal"], p.get("thingPrincipalType")
    ),
    "DetachThingPrincipal": lambda r, p: r.detach_thing_principal(p["thingName"], p["principal"]),
    "ListThingPrincipals": lambda r, p: r.list_thing_principals(p["thingName"]),
    "ListPrincipalThings": lambda r, p: r.list_principal_things(p["principal"]),
}


def _group_name(registry: Registry, params: Params) -> str:
    if params.get("thingGroupName"):
        return str(params["thingGroupName"])
    arn = params.get("thingGroupArn") or ""
    if "thinggroup/" in arn:
        return str(arn.split("thinggroup/", 1)[1])
    raise InvalidRequestException("thingGroupName or thingGroupArn is required")


def _thing_name(params: Params) -> str:
    if params.get("thingName"):
        return str(params["thingName"])
    arn = params.get("thingArn") or ""
    if ":thing/" in arn:
        return str(arn.split(":thing/", 1)[1])
    raise InvalidRequestException("thingName or thingArn is required")
