"""Provisioning templates: evaluation as AWS documents it, the applier against a real store, and a fuzz test."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.identity import ca as ca_mod
from gateway.identity.provisioning_template import TemplateError, evaluate, parse_template
from gateway.provisioning import cbor
from gateway.registry import Registry
from gateway.registry.provisioning_apply import apply_plan
from gateway.store import Store

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}

FLEET = {
    "Parameters": {
        "SerialNumber": {"Type": "String"},
        "Site": {"Type": "String", "Default": "berlin"},
        "AWS::IoT::Certificate::Id": {"Type": "String"},
    },
    "Mappings": {"Sites": {"berlin": {"Region": "eu-central-1"}, "oslo": {"Region": "eu-north-1"}}},
    "Conditions": {
        "IsBerlin": {"Fn::Equals": [{"Ref": "Site"}, "berlin"]},
        "NotBerlin": {"Fn::Not": [{"Condition": "IsBerlin"}]},
        "Both": {"Fn::And": [{"Condition": "IsBerlin"}, {"Fn::Or": [True, {"Condition": "NotBerlin"}]}]},
    },
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Fn::Join": ["-", ["sensor", {"Ref": "SerialNumber"}]]},
                "AttributePayload": {
                    "region": {"Fn::FindInMap": ["Sites", {"Ref": "Site"}, "Region"]},
                    "label": {"Fn::Sub": ["${Site}:${SerialNumber}:${n}", {"n": "x"}]},
                    "home": {"Fn::If": ["IsBerlin", "yes", "no"]},
                },
                "ThingGroups": ["fleet"],
            },
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"},
        },
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": json.dumps(POLICY)}},
        "extra": {"Type": "AWS::IoT::Policy", "Condition": "NotBerlin", "Properties": {"PolicyName": "oslo"}},
    },
    "DeviceConfiguration": {
        "site": {"Ref": "Site"},
        "both": {"Fn::If": ["Both", "1", "0"]},
        "lit": {"Fn::Sub": "${!Literal}"},
        "model": {"Fn::Select": [1, {"Fn::Split": ["/", "acme/x100/rev2"]}]},
    },
}


def test_evaluates_every_intrinsic_function() -> None:
    plan = evaluate(parse_template(json.dumps(FLEET)), {"SerialNumber": "42", "AWS::IoT::Certificate::Id": "c" * 64})
    assert plan.thing is not None and plan.thing.thing_name == "sensor-42"
    assert plan.thing.attributes == {"region": "eu-central-1", "label": "berlin:42:x", "home": "yes"}
    assert plan.thing.thing_groups == ("fleet",)
    assert plan.certificate is not None and plan.certificate.certificate_id == "c" * 64
    assert plan.certificate.status == "ACTIVE"
    assert [p.policy_document for p in plan.policies] == [json.dumps(POLICY)]  # "extra" is conditioned away
    assert len(plan.policies[0].policy_name) == 64
    assert plan.device_configuration == {"site": "berlin", "both": "1", "lit": "${Literal}", "model": "x100"}


def test_conditions_switch_resources_and_values() -> None:
    plan = evaluate(parse_template(FLEET), {"SerialNumber": "7", "Site": "oslo", "AWS::IoT::Certificate::Id": "c"})
    assert plan.thing is not None and plan.thing.attributes["home"] == "no"
    assert [p.policy_name for p in plan.policies][1] == "oslo"


def test_missing_parameter_is_aws_error() -> None:
    with pytest.raises(TemplateError) as err:
        evaluate(parse_template(FLEET), {"AWS::IoT::Certificate::Id": "c"})
    assert err.value.error_code == "InvalidParameters"
    assert err.value.message == "Cannot resolve reference value: SerialNumber"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"Resources": {"x": {"Type": "AWS::S3::Bucket"}}}),
        json.dumps({"Resources": {"a": {"Type": "AWS::IoT::Thing"}, "b": {"Type": "AWS::IoT::Thing"}}}),
        json.dumps({"Parameters": {"p": {"Type": "Blob"}}}),
        json.dumps({"Resources": {"a": {"Type": "AWS::IoT::Thing", "Condition": "nope"}}}),
        json.dumps({"Whatever": {}}),
        json.dumps({"Parameters": {"p": {"Type": ["String"]}}}),  # a list where a name goes: not hashable
        json.dumps({"Resources": {"x": {"Type": {"AWS::IoT::Thing": 1}}}}),
    ],
)
def test_invalid_templates_are_refused_at_creation(body: str) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template(body)
    assert err.value.code == "InvalidRequestException"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(Store(tmp_path / "db.sqlite"), ManualClock(), "us-east-1", "123456789012")
    reg.local_ca = ca_mod.create_root_ca(now=datetime.now(UTC))
    reg.ensure_ca_registered(reg.local_ca.cert_pem.decode())
    return reg


def test_applier_creates_thing_certificate_policy(registry: Registry) -> None:
    registry.create_thing_group("fleet")
    cert = registry.create_keys_and_certificate()
    params = {"SerialNumber": "1", "AWS::IoT::Certificate::Id": cert["certificateId"]}
    result = apply_plan(registry, evaluate(parse_template(FLEET), params), cert["certificateId"])
    assert result.thing_name == "sensor-1"
    assert registry.describe_certificate(cert["certificateId"])["certificateDescription"]["status"] == "ACTIVE"
    assert registry.list_thing_principals("sensor-1")["principals"] == [cert["certificateArn"]]
    assert [g["groupName"] for g in registry.list_thing_groups_for_thing("sensor-1")["thingGroups"]] == ["fleet"]
    attached = registry.list_attached_policies(cert["certificateArn"])["policies"]
    assert [p["policyName"] for p in attached] == [result.resource_arns["policy"].rsplit("/", 1)[1]]
    # Provisioning the same device again reuses what exists.
    assert apply_plan(registry, evaluate(parse_template(FLEET), params), cert["certificateId"]).thing_name == "sensor-1"


def test_applier_failure_leaves_nothing_behind(registry: Registry) -> None:
    cert = registry.create_keys_and_certificate()  # no "fleet" group: adding the thing to it fails
    params = {"SerialNumber": "2", "AWS::IoT::Certificate::Id": cert["certificateId"]}
    with pytest.raises(TemplateError):
        apply_plan(registry, evaluate(parse_template(FLEET), params), cert["certificateId"])
    assert not registry.thing_exists("sensor-2")
    assert registry.describe_certificate(cert["certificateId"])["certificateDescription"]["status"] == "INACTIVE"


def test_override_settings(registry: Registry) -> None:
    registry.create_thing("dev", None, {"a": "1", "b": "2"})
    body: dict[str, Any] = {
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": "dev", "AttributePayload": {"a": "9"}},
                "OverrideSettings": {"AttributePayload": "MERGE"},
            }
        }
    }
    apply_plan(registry, evaluate(parse_template(body), {}))
    assert registry.describe_thing("dev")["attributes"] == {"a": "9", "b": "2"}
    body["Resources"]["thing"]["OverrideSettings"] = {"AttributePayload": "FAIL"}
    body["Resources"]["thing"]["Properties"]["AttributePayload"] = {"a": "0"}
    with pytest.raises(TemplateError):
        apply_plan(registry, evaluate(parse_template(body), {}))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["Ref", "p", "c", "-"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Ref",
                    "Fn::Join",
                    "Fn::Select",
                    "Fn::Split",
                    "Fn::FindInMap",
                    "Fn::Sub",
                    "Fn::If",
                    "Fn::Equals",
                    "Fn::Not",
                    "Fn::And",
                    "Fn::Or",
                    "Condition",
                    "Fn::Bogus",
                    "ThingName",
                    "p",
                    "c",
                ]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_json,
    condition=_json,
    kind=st.sampled_from(["AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy"]),
    params=st.dictionaries(st.sampled_from(["p", "q", "c"]), st.text(max_size=5), max_size=3),
)
def test_fuzz_only_typed_errors(value: Any, condition: Any, kind: str, params: dict[str, str]) -> None:
    body = {
        "Parameters": {"p": {"Type": "String"}},
        "Mappings": {"m": {"p": {"c": "v"}}},
        "Conditions": {"c": condition, "loop": {"Condition": "loop"}},
        "Resources": {
            "r": {
                "Type": kind,
                "Condition": "c",
                "Properties": {
                    "ThingName": value,
                    "CertificateId": value,
                    "PolicyName": value,
                    "AttributePayload": value,
                },
            },
        },
        "DeviceConfiguration": {"x": value},
    }
    with contextlib.suppress(TemplateError):
        evaluate(parse_template(json.dumps(body)), params)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
def test_fuzz_raw_bodies(body: str) -> None:
    with contextlib.suppress(TemplateError):
        evaluate(parse_template(body), {})


def test_deep_nesting_is_a_typed_error() -> None:
    node: Any = "x"
    for _ in range(2000):
        node = {"Fn::Join": ["", [node]]}
    with pytest.raises(TemplateError):
        evaluate(parse_template({"DeviceConfiguration": {"k": node}}), {})
    with pytest.raises(TemplateError):
        parse_template("[" * 100000 + "]" * 100000)


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(_cbor_values)
def test_cbor_round_trips(value: Any) -> None:
    assert cbor.loads(cbor.dumps(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_cbor_garbage_is_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(cbor.CborError):
        cbor.loads(data)


def test_cbor_known_encoding() -> None:
    # RFC 8949 appendix A: {"a": 1, "b": [2, 3]}
    assert cbor.dumps({"a": 1, "b": [2, 3]}) == bytes.fromhex("a26161016162820203")
    assert cbor.loads(bytes.fromhex("a26161016162820203")) == {"a": 1, "b": [2, 3]}
