"""Provisioning templates, as AWS IoT evaluates them (fleet provisioning, JITP, RegisterThing).

Pure: `parse_template` checks a template body's shape (CreateProvisioningTemplate rejects a bad one),
`evaluate` turns a template and the request's parameters into a `ProvisioningPlan` (the resources to
create), with no side effects. Every problem with untrusted input surfaces as `TemplateError`, whose
`error_code` is what the MQTT API's /rejected payload carries (AWS says `InvalidParameters`, e.g.
"Cannot resolve reference value: SerialNumber").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRequestException

THING = "AWS::IoT::Thing"
CERTIFICATE = "AWS::IoT::Certificate"
POLICY = "AWS::IoT::Policy"
RESOURCE_TYPES = frozenset({THING, CERTIFICATE, POLICY})
TOP_LEVEL = frozenset({"Parameters", "Mappings", "Conditions", "Resources", "DeviceConfiguration"})
PARAMETER_TYPES = frozenset({"String"})
CERT_STATUSES = frozenset({"ACTIVE", "INACTIVE", "REVOKED", "PENDING_ACTIVATION", "PENDING_TRANSFER"})
OVERRIDES = {
    "AttributePayload": frozenset({"MERGE", "REPLACE", "FAIL", "DO_NOTHING"}),
    "ThingTypeName": frozenset({"REPLACE", "FAIL", "DO_NOTHING"}),
    "ThingGroups": frozenset({"REPLACE", "FAIL", "DO_NOTHING"}),
}
MAX_BODY = 10240
MAX_DEPTH = 32
_SUB = re.compile(r"\$\{(!?)([^}]*)\}")


class TemplateError(InvalidRequestException):
    """A template or its parameters cannot be evaluated; carries the MQTT API's errorCode."""

    def __init__(self, message: str, error_code: str = "InvalidParameters") -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class ThingPlan:
    logical_id: str
    thing_name: str
    attributes: dict[str, str] = field(default_factory=dict)
    thing_groups: tuple[str, ...] = ()
    thing_type_name: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CertificatePlan:
    logical_id: str
    certificate_id: str | None
    csr: str | None
    status: str


@dataclass(frozen=True)
class PolicyPlan:
    logical_id: str
    policy_name: str
    policy_document: str | None  # None: attach an existing policy by name


@dataclass(frozen=True)
class ProvisioningPlan:
    thing: ThingPlan | None
    certificate: CertificatePlan | None
    policies: tuple[PolicyPlan, ...]
    device_configuration: dict[str, str]


@dataclass(frozen=True)
class Template:
    parameters: dict[str, dict[str, Any]]
    mappings: dict[str, Any]
    conditions: dict[str, Any]
    resources: dict[str, dict[str, Any]]
    device_configuration: dict[str, Any]


def _invalid(message: str) -> TemplateError:
    return TemplateError(f"The provisioning template is invalid: {message}", "InvalidRequest")


def parse_template(body: str | Mapping[str, Any]) -> Template:
    """Check a template body's shape; raises TemplateError (InvalidRequestException over HTTP)."""
    if isinstance(body, str):
        if len(body) > MAX_BODY:
            raise _invalid(f"template body longer than {MAX_BODY} characters")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _invalid("template body is not valid JSON") from exc
    else:
        doc = body
    if not isinstance(doc, Mapping):
        raise _invalid("template body must be a JSON object")
    unknown = set(doc) - TOP_LEVEL
    if unknown:
        raise _invalid(f"unknown top-level key {sorted(unknown)[0]}")
    params = _obj(doc.get("Parameters", {}), "Parameters")
    for name, raw_spec in params.items():
        spec = _obj(raw_spec, f"Parameters.{name}")
        if not isinstance(spec.get("Type", "String"), str) or spec.get("Type", "String") not in PARAMETER_TYPES:
            raise _invalid(f"parameter {name} has unsupported Type {spec.get('Type')!r}")
        if "Default" in spec and not isinstance(spec["Default"], str):
            raise _invalid(f"parameter {name} Default must be a string")
    resources = _obj(doc.get("Resources", {}), "Resources")
    counts: dict[str, int] = {}
    conditions = _obj(doc.get("Conditions", {}), "Conditions")
    for logical_id, raw_res in resources.items():
        res = _obj(raw_res, f"Resources.{logical_id}")
        rtype = res.get("Type")
        if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
            raise _invalid(f"resource {logical_id} has unsupported Type {rtype!r}")
        counts[rtype] = counts.get(rtype, 0) + 1
        _obj(res.get("Properties", {}), f"Resources.{logical_id}.Properties")
        cond = res.get("Condition")
        if cond is not None and (not isinstance(cond, str) or cond not in conditions):
            raise _invalid(f"resource {logical_id} names an undefined condition {cond!r}")
    for rtype in (THING, CERTIFICATE):
        if counts.get(rtype, 0) > 1:
            raise _invalid(f"a template may contain only one {rtype}")
    return Template(
        parameters={k: dict(v) for k, v in params.items()},
        mappings=_obj(doc.get("Mappings", {}), "Mappings"),
        conditions=conditions,
        resources={k: dict(v) for k, v in resources.items()},
        device_configuration=_obj(doc.get("DeviceConfiguration", {}), "DeviceConfiguration"),
    )


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{where} must be a JSON object")
    return dict(value)


class _Evaluator:
    def __init__(self, template: Template, parameters: Mapping[str, str]) -> None:
        self.t = template
        self.values: dict[str, str] = {}
        for name, spec in template.parameters.items():
            if name in parameters:
                self.values[name] = parameters[name]
            elif "Default" in spec:
                self.values[name] = spec["Default"]
        # Values for undeclared names are still visible to Ref (AWS passes AWS::IoT::Certificate::Id etc.).
        for name, value in parameters.items():
            self.values.setdefault(name, value)
        self.condition_cache: dict[str, bool] = {}
        self.condition_stack: list[str] = []

    def ref(self, name: Any) -> str:
        if not isinstance(name, str):
            raise TemplateError("Ref must name a parameter")
        if name not in self.values:
            raise TemplateError(f"Cannot resolve reference value: {name}")
        return self.values[name]

    def condition(self, name: Any, depth: int) -> bool:
        if not isinstance(name, str) or name not in self.t.conditions:
            raise TemplateError(f"Condition {name!r} is not defined")
        if name in self.condition_cache:
            return self.condition_cache[name]
        if name in self.condition_stack:
            raise TemplateError(f"Condition {name} refers to itself")
        self.condition_stack.append(name)
        value: bool = self.boolean(self.t.conditions[name], depth + 1)
        self.condition_stack.pop()
        self.condition_cache[name] = value
        return value

    def boolean(self, node: Any, depth: int) -> bool:
        if depth > MAX_DEPTH:
            raise TemplateError("Template nesting is too deep")
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, str) and node.lower() in ("true", "false"):
            return node.lower() == "true"
        if isinstance(node, Mapping) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Condition":
                return self.condition(arg, depth)
            if fn == "Fn::Equals":
                a, b = self._args(fn, arg, 2)
                return bool(self.value(a, depth + 1) == self.value(b, depth + 1))
            if fn == "Fn::Not":
                (a,) = self._args(fn, arg, 1)
                return not self.boolean(a, depth + 1)
            if fn in ("Fn::And", "Fn::Or"):
                if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                    raise TemplateError(f"{fn} takes between 2 and 10 conditions")
                results = [self.boolean(a, depth + 1) for a in arg]
                return all(results) if fn == "Fn::And" else any(results)
        raise TemplateError("A condition must be Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition")

    @staticmethod
    def _args(fn: str, arg: Any, n: int) -> list[Any]:
        if not isinstance(arg, list) or len(arg) != n:
            raise TemplateError(f"{fn} takes a list of {n} arguments")
        return arg

    def string(self, node: Any, depth: int, what: str) -> str:
        value = self.value(node, depth)
        if not isinstance(value, str):
            raise TemplateError(f"{what} must resolve to a string")
        return value

    def value(self, node: Any, depth: int) -> Any:
        """Resolve intrinsic functions in node: a string, list or object of them."""
        if depth > MAX_DEPTH:
            raise TemplateError("Template nesting is too deep")
        if isinstance(node, list):
            return [self.value(v, depth + 1) for v in node]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn in _FUNCTIONS:
                return _FUNCTIONS[fn](self, arg, depth + 1)
            if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
                return "true" if self.boolean(node, depth) else "false"
            if fn.startswith("Fn::"):
                raise TemplateError(f"Unsupported intrinsic function {fn}")
        return {k: self.value(v, depth + 1) for k, v in node.items()}

    def join(self, arg: Any, depth: int) -> str:
        delim, items = self._args("Fn::Join", arg, 2)
        if not isinstance(delim, str):
            raise TemplateError("Fn::Join delimiter must be a string")
        resolved = self.value(items, depth)
        if not isinstance(resolved, list) or not all(isinstance(i, str) for i in resolved):
            raise TemplateError("Fn::Join takes a list of strings")
        return delim.join(resolved)

    def select(self, arg: Any, depth: int) -> Any:
        index, items = self._args("Fn::Select", arg, 2)
        index = self.value(index, depth)
        resolved = self.value(items, depth)
        try:
            i = int(index)
        except (TypeError, ValueError, OverflowError):
            raise TemplateError("Fn::Select index must be a number") from None
        if not isinstance(resolved, list) or not 0 <= i < len(resolved):
            raise TemplateError("Fn::Select index is out of range")
        return resolved[i]

    def split(self, arg: Any, depth: int) -> list[str]:
        delim, source = self._args("Fn::Split", arg, 2)
        text = self.string(source, depth, "Fn::Split source")
        if not isinstance(delim, str) or not delim:
            raise TemplateError("Fn::Split delimiter must be a non-empty string")
        return text.split(delim)

    def find_in_map(self, arg: Any, depth: int) -> Any:
        keys = [self.string(k, depth, "Fn::FindInMap key") for k in self._args("Fn::FindInMap", arg, 3)]
        node: Any = self.t.mappings
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                raise TemplateError(f"Fn::FindInMap cannot find key {key} in mappings")
            node = node[key]
        return node

    def sub(self, arg: Any, depth: int) -> str:
        local: dict[str, str] = {}
        if isinstance(arg, list):
            text, variables = self._args("Fn::Sub", arg, 2)
            if not isinstance(variables, Mapping):
                raise TemplateError("Fn::Sub variables must be an object")
            local = {str(k): self.string(v, depth, "Fn::Sub variable") for k, v in variables.items()}
        else:
            text = arg
        if not isinstance(text, str):
            raise TemplateError("Fn::Sub takes a string")

        def repl(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            name = m.group(2)
            return local[name] if name in local else self.ref(name)

        return _SUB.sub(repl, text)

    def if_(self, arg: Any, depth: int) -> Any:
        cond, yes, no = self._args("Fn::If", arg, 3)
        return self.value(yes if self.condition(cond, depth) else no, depth)


_FUNCTIONS = {
    "Fn::Join": _Evaluator.join,
    "Fn::Select": _Evaluator.select,
    "Fn::Split": _Evaluator.split,
    "Fn::FindInMap": _Evaluator.find_in_map,
    "Fn::Sub": _Evaluator.sub,
    "Fn::If": _Evaluator.if_,
}


def evaluate(template: Template, parameters: Mapping[str, str]) -> ProvisioningPlan:
    """The resources a provisioning request creates; raises TemplateError, never anything else."""
    try:
        return _evaluate(template, parameters)
    except RecursionError:
        raise TemplateError("Template nesting is too deep") from None


def _evaluate(template: Template, parameters: Mapping[str, str]) -> ProvisioningPlan:
    ev = _Evaluator(template, parameters)
    thing: ThingPlan | None = None
    cert: CertificatePlan | None = None
    policies: list[PolicyPlan] = []
    for logical_id, res in template.resources.items():
        if "Condition" in res and not ev.condition(res["Condition"], 0):
            continue
        props = ev.value(res.get("Properties", {}), 0)
        if not isinstance(props, dict):
            raise TemplateError(f"Properties of {logical_id} must be an object")
        if res["Type"] == THING:
            thing = _thing(logical_id, props, res.get("OverrideSettings", {}))
        elif res["Type"] == CERTIFICATE:
            cert = _certificate(logical_id, props)
        else:
            policies.append(_policy(logical_id, props))
    config = ev.value(template.device_configuration, 0)
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        raise TemplateError("DeviceConfiguration values must resolve to strings")
    return ProvisioningPlan(thing, cert, tuple(policies), config)


def _opt_str(props: Mapping[str, Any], key: str, logical_id: str) -> str | None:
    value = props.get(key)
    if value is not None and not isinstance(value, str):
        raise TemplateError(f"{logical_id}.{key} must resolve to a string")
    return value


def _thing(logical_id: str, props: dict[str, Any], overrides: Any) -> ThingPlan:
    name = _opt_str(props, "ThingName", logical_id)
    if not name:
        raise TemplateError(f"{logical_id}: ThingName is required")
    attrs = props.get("AttributePayload", {})
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        raise TemplateError(f"{logical_id}.AttributePayload must be an object of strings")
    groups = props.get("ThingGroups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise TemplateError(f"{logical_id}.ThingGroups must be a list of strings")
    if not isinstance(overrides, Mapping):
        raise TemplateError(f"{logical_id}.OverrideSettings must be an object")
    for key, val in overrides.items():
        if key not in OVERRIDES or not isinstance(val, str) or val not in OVERRIDES[key]:
            raise TemplateError(f"{logical_id}.OverrideSettings.{key} cannot be {val!r}")
    return ThingPlan(
        logical_id, name, dict(attrs), tuple(groups), _opt_str(props, "ThingTypeName", logical_id), dict(overrides)
    )


def _certificate(logical_id: str, props: dict[str, Any]) -> CertificatePlan:
    cert_id = _opt_str(props, "CertificateId", logical_id)
    csr = _opt_str(props, "CertificateSigningRequest", logical_id)
    if (cert_id is None) == (csr is None):
        raise TemplateError(f"{logical_id}: give exactly one of CertificateId and CertificateSigningRequest")
    status = (_opt_str(props, "Status", logical_id) or "ACTIVE").upper()
    if status not in CERT_STATUSES:
        raise TemplateError(f"{logical_id}.Status cannot be {status}")
    return CertificatePlan(logical_id, cert_id, csr, status)


def _policy(logical_id: str, props: dict[str, Any]) -> PolicyPlan:
    name = _opt_str(props, "PolicyName", logical_id)
    document = props.get("PolicyDocument")
    if isinstance(document, dict):
        document = json.dumps(document)
    if document is not None and not isinstance(document, str):
        raise TemplateError(f"{logical_id}.PolicyDocument must be a string or an object")
    if name is None and document is None:
        raise TemplateError(f"{logical_id}: give PolicyName or PolicyDocument")
    if name is None:
        # AWS names a policy given only by its document after the document's hash.
        name = hashlib.sha256(str(document).encode()).hexdigest()
    return PolicyPlan(logical_id, name, document)
