"""Registry events and JIT helpers against a real SQLite store: off by default, held back with a failed transaction,
and the JITP parameters a certificate supplies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.clock import ManualClock
from gateway.errors import InvalidRequestException
from gateway.identity.certs import parse_certificate
from gateway.registry import Registry
from gateway.registry.cas import check_registration_config
from gateway.registry.jit import template_parameters
from gateway.store import Store


@pytest.fixture
def published(tmp_path: Path) -> tuple[Registry, list[tuple[str, dict[str, object]]]]:
    reg = Registry(Store(tmp_path / "db.sqlite"), ManualClock(), "us-east-1", "123456789012")
    out: list[tuple[str, dict[str, object]]] = []
    reg.events.publish = lambda topic, payload: out.append((topic, json.loads(payload)))
    return reg, out


def test_nothing_is_published_until_enabled(published: tuple[Registry, list[tuple[str, dict[str, object]]]]) -> None:
    reg, out = published
    reg.create_thing("t1")
    reg.create_thing_group("g1")
    assert out == []
    assert reg.events.describe()["eventConfigurations"]["THING"] == {"Enabled": False}
    reg.events.update({"THING": {"Enabled": True}})
    reg.create_thing("t2", None, {"k": "v"})
    reg.add_thing_to_thing_group("g1", "t2")  # THING_GROUP_MEMBERSHIP is still off
    assert [topic for topic, _ in out] == ["$aws/events/thing/t2/created"]
    assert out[0][1]["attributes"] == {"k": "v"} and out[0][1]["versionNumber"] == 1


def test_deferred_events_are_dropped_when_the_block_fails(
    published: tuple[Registry, list[tuple[str, dict[str, object]]]],
) -> None:
    reg, out = published
    reg.events.update({"THING": {"Enabled": True}})
    with pytest.raises(InvalidRequestException), reg.events.deferred(), reg.store.transaction():
        reg.create_thing("ghost")
        raise InvalidRequestException("a later step of the same transaction failed")
    assert out == [] and not reg.thing_exists("ghost")
    with reg.events.deferred():
        reg.create_thing("real")
        assert out == []
    assert [topic for topic, _ in out] == ["$aws/events/thing/real/created"]


def test_unknown_event_type_is_refused(published: tuple[Registry, list[tuple[str, dict[str, object]]]]) -> None:
    reg, _ = published
    with pytest.raises(InvalidRequestException, match="enum value set"):
        reg.events.update({"THINGS": {"Enabled": True}})


def test_template_parameters_come_from_the_subject_and_the_certificate_id() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "dev-1"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Berlin"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "SN-1"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )
    info = parse_certificate(cert.public_bytes(serialization.Encoding.PEM))
    assert template_parameters(info) == {
        "AWS::IoT::Certificate::Id": info.certificate_id,
        "AWS::IoT::Certificate::CommonName": "dev-1",
        "AWS::IoT::Certificate::Country": "DE",
        "AWS::IoT::Certificate::Organization": "Acme",
        "AWS::IoT::Certificate::StateName": "Berlin",
        "AWS::IoT::Certificate::SerialNumber": "SN-1",
    }


@pytest.mark.parametrize(
    "config",
    [
        {"templateBody": "[1, 2]"},
        {"templateBody": "x" * 10241},
        {"templateName": "has space"},
        {"roleArn": "arn:aws:iam::123:role/too-short-account"},
        "not an object",
    ],
)
def test_registration_config_constraints(config: object) -> None:
    with pytest.raises(InvalidRequestException):
        check_registration_config(config)
