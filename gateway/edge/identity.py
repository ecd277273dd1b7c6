"""The core is a thing of its own: its thing, certificate and policy are created through the gateway's API (as
against AWS IoT) and reused on the next start while the gateway still knows the certificate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from gateway.edge.aws_clients import iot_client
from gateway.identity.certs import certificate_id
from gateway.identity.keystore import write_private, write_public


@dataclass(frozen=True)
class CoreCredentials:
    thing_name: str
    cert: Path
    key: Path


def core_policy(thing_name: str) -> dict[str, Any]:
    """A core relays for its devices and components: it may use any topic, but connect only as itself."""
    arn = "arn:aws:iot:*:*:"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}client/{thing_name}"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": f"{arn}topic/*"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{arn}topicfilter/*"},
        ],
    }


def provision_core(endpoint: str, thing_name: str, certs_dir: Path) -> CoreCredentials:
    """Create what is missing: the thing, the policy `edgesim-core-<thing>`, a certificate cached in `certs_dir`."""
    iot = iot_client(endpoint)
    cert, key = certs_dir / f"{thing_name}.cert.pem", certs_dir / f"{thing_name}.private.key"
    policy = f"edgesim-core-{thing_name}"
    _ignore_exists(iot.create_thing, thingName=thing_name)
    _ignore_exists(iot.create_policy, policyName=policy, policyDocument=json.dumps(core_policy(thing_name)))
    arn = _known_certificate(iot, cert, key)
    if arn is None:
        created = iot.create_keys_and_certificate(setAsActive=True)
        write_private(key, created["keyPair"]["PrivateKey"].encode())
        write_public(cert, created["certificatePem"].encode())
        arn = str(created["certificateArn"])
    iot.attach_policy(policyName=policy, target=arn)
    iot.attach_thing_principal(thingName=thing_name, principal=arn)
    return CoreCredentials(thing_name, cert, key)


def _known_certificate(iot: Any, cert: Path, key: Path) -> str | None:
    if not (cert.exists() and key.exists()):
        return None
    try:
        described = iot.describe_certificate(certificateId=certificate_id(cert.read_bytes()))
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    description = described["certificateDescription"]
    return str(description["certificateArn"]) if description["status"] == "ACTIVE" else None


def _ignore_exists(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
