"""Registry operations against a real SQLite store, with AWS's errors and shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.errors import (
    CertificateStateException,
    DeleteConflictException,
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionConflictException,
    VersionsLimitExceededException,
)
from gateway.identity import ca as ca_mod
from gateway.registry import Registry
from gateway.store import Store

ALLOW = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(Store(tmp_path / "db.sqlite"), ManualClock(), "us-east-1", "123456789012")
    reg.local_ca = ca_mod.create_root_ca(now=datetime.now(UTC))
    reg.ensure_ca_registered(reg.local_ca.cert_pem.decode())
    return reg


def test_thing_lifecycle_and_versions(registry: Registry) -> None:
    ref = registry.create_thing("t1", None, {"site": "berlin"})
    assert ref["thingArn"] == "arn:aws:iot:us-east-1:123456789012:thing/t1"
    assert registry.create_thing("t1", None, {"site": "berlin"}) == ref  # idempotent
    with pytest.raises(ResourceAlreadyExistsException):
        registry.create_thing("t1", None, {"site": "paris"})
    registry.update_thing("t1", attributes={"site": "", "floor": "2"}, merge=True)
    described = registry.describe_thing("t1")
    assert (described["attributes"], described["version"], described["defaultClientId"]) == ({"floor": "2"}, 2, "t1")
    with pytest.raises(VersionConflictException):
        registry.update_thing("t1", attributes={}, expected_version=1)
    registry.delete_thing("t1")
    registry.delete_thing("t1")  # AWS: deleting a missing thing succeeds
    with pytest.raises(ResourceNotFoundException):
        registry.describe_thing("t1")


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "semi;colon"])
def test_invalid_thing_names(registry: Registry, name: str) -> None:
    with pytest.raises(InvalidRequestException, match="thingName"):
        registry.create_thing(name)


def test_attribute_limit_without_type(registry: Registry) -> None:
    with pytest.raises(InvalidRequestException, match="at most 3"):
        registry.create_thing("t", None, {"a": "1", "b": "2", "c": "3", "d": "4"})


def test_list_things_filters_and_pages(registry: Registry) -> None:
    for i in range(7):
        registry.create_thing(f"t{i}", None, {"site": "a" if i % 2 else "b"})
    page = registry.list_things(max_results=3)
    names = [t["thingName"] for t in page["things"]]
    while "nextToken" in page:
        page = registry.list_things(max_results=3, next_token=page["nextToken"])
        names += [t["thingName"] for t in page["things"]]
    assert names == [f"t{i}" for i in range(7)]
    assert [t["thingName"] for t in registry.list_things(attribute_name="site", attribute_value="a")["things"]] == [
        "t1",
        "t3",
        "t5",
    ]


def test_group_policies_are_inherited_through_parents(registry: Registry) -> None:
    registry.create_thing_group("root")
    registry.create_thing_group("child", "root")
    registry.create_thing("dev")
    registry.add_thing_to_thing_group("child", "dev")
    registry.create_policy("p", ALLOW)
    registry.attach_policy("p", registry.arn("thinggroup", "root"))
    cert = registry.create_keys_and_certificate(set_as_active=True)
    registry.attach_thing_principal("dev", cert["certificateArn"])
    grant = registry.connection_grant(cert["certificatePem"].encode(), "dev", None)
    assert grant.refusal is None and len(grant.documents) == 1
    assert grant.context is not None and grant.context.thing_name == "dev"
    other = registry.connection_grant(cert["certificatePem"].encode(), "not-the-thing", None)
    assert other.context is not None and other.context.thing_name is None and other.documents == ()
    registry.create_thing_group("elsewhere", "root")
    with pytest.raises(InvalidRequestException, match="same hierarchy"):
        registry.add_thing_to_thing_group("elsewhere", "dev")


def test_certificate_states_and_delete_rules(registry: Registry) -> None:
    cert = registry.create_keys_and_certificate(set_as_active=True)
    cid = cert["certificateId"]
    assert len(cid) == 64 and cert["keyPair"]["PrivateKey"].startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(CertificateStateException):
        registry.delete_certificate(cid)
    registry.create_policy("p", ALLOW)
    registry.attach_policy("p", cert["certificateArn"])
    registry.update_certificate(cid, "INACTIVE")
    with pytest.raises(DeleteConflictException):
        registry.delete_certificate(cid)
    registry.update_certificate(cid, "REVOKED")
    with pytest.raises(CertificateStateException):
        registry.update_certificate(cid, "ACTIVE")
    grant = registry.connection_grant(cert["certificatePem"].encode(), "x", None)
    assert grant.refusal is not None and "REVOKED" in grant.refusal
    registry.delete_certificate(cid, force_delete=True)
    with pytest.raises(ResourceNotFoundException):
        registry.describe_certificate(cid)


def test_policy_versions(registry: Registry) -> None:
    registry.create_policy("p", ALLOW)
    for _ in range(4):
        registry.create_policy_version("p", ALLOW)
    with pytest.raises(VersionsLimitExceededException):
        registry.create_policy_version("p", ALLOW)
    registry.set_default_policy_version("p", "3")
    assert registry.get_policy("p")["defaultVersionId"] == "3"
    with pytest.raises(DeleteConflictException):
        registry.delete_policy_version("p", "3")
    with pytest.raises(DeleteConflictException):
        registry.delete_policy("p")


def test_registry_survives_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    Registry(store, ManualClock(), "us-east-1", "1").create_thing("keep", None, {"a": "b"})
    store.close()
    again = Registry(Store(tmp_path / "db.sqlite"), ManualClock(), "us-east-1", "1")
    assert again.describe_thing("keep")["attributes"] == {"a": "b"}
