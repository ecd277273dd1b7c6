"""Things, certificates and a least-privilege policy for a fleet, created through the gateway's HTTP API with boto3
(as against AWS IoT), idempotently, with certificates cached under `certs/fleet/<fleet>/`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from devices.spec import DeviceSpec, FleetSpec

THING_VAR = "${iot:Connection.Thing.ThingName}"
SHARED = "_shared"  # file stem of the one certificate every thing uses with --shared-cert
TOKEN_HEADER = "X-Edgesim-Token"  # the same header as gateway/api/auth.py (devices/ does not import gateway/)


@dataclass(frozen=True)
class DeviceFiles:
    cert: Path
    key: Path


def iot_client(endpoint: str, region: str = "us-east-1") -> Any:
    client = boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "edgesim"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "edgesim"),
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=16),
    )
    send_api_token(client)
    return client


def send_api_token(client: Any) -> None:
    """A gateway exposed beyond loopback wants its API token (EDGESIM_API_TOKEN) on every request."""
    token = os.environ.get("EDGESIM_API_TOKEN")
    if token:

        def add_token(request: Any, **_: Any) -> None:
            request.headers[TOKEN_HEADER] = token

        client.meta.events.register("before-send", add_token)


def _resource(kind: str, text: str, device: DeviceSpec) -> str:
    return f"arn:aws:iot:*:*:{kind}/" + text.replace(device.thing_name, THING_VAR)


def fleet_policy(devices: Iterable[DeviceSpec]) -> dict[str, Any]:
    """Least privilege: each device may connect as itself, publish its telemetry and command replies, and use its own
    shadow and command topics; the thing name in every topic becomes `${iot:Connection.Thing.ThingName}`."""
    connect: set[str] = set()
    publish: set[str] = set()
    subscribe: set[str] = set()
    receive: set[str] = set()
    for d in devices:
        connect.add(_resource("client", d.client_id, d))
        publish.add(_resource("topic", d.topic, d))
        shadow = f"$aws/things/{d.thing_name}/shadow/*"
        publish.add(_resource("topic", shadow, d))
        subscribe.add(_resource("topicfilter", shadow, d))
        receive.add(_resource("topic", shadow, d))
        if d.command_topic is not None:
            subscribe.add(_resource("topicfilter", d.command_topic, d))
            receive.add(_resource("topic", d.command_topic.replace("+", "*").replace("#", "*"), d))
        if d.reply_topic is not None:
            publish.add(_resource("topic", d.reply_topic, d))
        if d.jobs is not None:
            jobs = f"$aws/things/{d.thing_name}/jobs/*"
            publish.add(_resource("topic", jobs, d))
            subscribe.add(_resource("topicfilter", jobs, d))
            receive.add(_resource("topic", jobs, d))
    statements = [
        {"Effect": "Allow", "Action": action, "Resource": sorted(resources)}
        for action, resources in (
            ("iot:Connect", connect),
            ("iot:Publish", publish),
            ("iot:Subscribe", subscribe),
            ("iot:Receive", receive),
        )
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def certificate_id(cert_pem: bytes) -> str:
    """AWS IoT's certificateId: the SHA-256 of the DER certificate, in hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _write_private(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(data)
    os.chmod(path, 0o600)


class Provisioner:
    def __init__(self, iot: Any, spec: FleetSpec, certs_dir: Path, shared_cert: bool = False) -> None:
        self.iot = iot
        self.spec = spec
        self.dir = certs_dir / spec.fleet
        self.shared_cert = shared_cert
        self.policy_name = spec.render_policy_name()

    def files(self, device: DeviceSpec) -> DeviceFiles:
        stem = SHARED if self.shared_cert else device.thing_name
        return DeviceFiles(self.dir / f"{stem}.cert.pem", self.dir / f"{stem}.private.key")

    def _ignore_exists(self, call: Callable[..., Any], **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ResourceAlreadyExistsException",):
                raise

    def _known_certificates(self) -> set[str]:
        known: set[str] = set()
        for page in self.iot.get_paginator("list_certificates").paginate(pageSize=250):
            known.update(c["certificateId"] for c in page["certificates"] if c["status"] == "ACTIVE")
        return known

    def _cert_arn(self, files: DeviceFiles, known: set[str]) -> str | None:
        """The ARN of a cached certificate the gateway still knows (and has active), else None."""
        if not (files.cert.exists() and files.key.exists()):
            return None
        cert_id = certificate_id(files.cert.read_bytes())
        if cert_id not in known:
            return None
        return str(self.iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["certificateArn"])

    def _new_cert(self, files: DeviceFiles) -> str:
        created = self.iot.create_keys_and_certificate(setAsActive=True)
        _write_private(files.key, created["keyPair"]["PrivateKey"])
        files.cert.write_text(created["certificatePem"])
        self.iot.attach_policy(policyName=self.policy_name, target=created["certificateArn"])
        return str(created["certificateArn"])

    def _policy(self, devices: list[DeviceSpec]) -> None:
        document = json.dumps(fleet_policy(devices))
        try:
            current = self.iot.get_policy(policyName=self.policy_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self.iot.create_policy(policyName=self.policy_name, policyDocument=document)
            return
        if json.loads(current["policyDocument"]) != json.loads(document):
            versions = self.iot.list_policy_versions(policyName=self.policy_name)["policyVersions"]
            for old in versions:
                if not old["isDefaultVersion"] and len(versions) >= 5:
                    self.iot.delete_policy_version(policyName=self.policy_name, policyVersionId=old["versionId"])
                    break
            self.iot.create_policy_version(policyName=self.policy_name, policyDocument=document, setAsDefault=True)

    def provision(
        self, devices: list[DeviceSpec], progress: Callable[[int], None] | None = None, workers: int = 4
    ) -> dict[str, DeviceFiles]:
        """Create whatever is missing; returns each device's certificate and key files."""
        self._policy(devices)
        for thing_type in sorted({d.thing_type for d in devices if d.thing_type}):
            self._ignore_exists(self.iot.create_thing_type, thingTypeName=thing_type)
        known = self._known_certificates()
        shared_arn: str | None = None
        if self.shared_cert and devices:
            files = self.files(devices[0])
            shared_arn = self._cert_arn(files, known) or self._new_cert(files)

        def one(device: DeviceSpec) -> None:
            kwargs: dict[str, Any] = {"thingName": device.thing_name}
            if device.attributes:
                kwargs["attributePayload"] = {"attributes": device.attributes, "merge": True}
            if device.thing_type:
                kwargs["thingTypeName"] = device.thing_type
            try:
                self.iot.create_thing(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise
                self.iot.update_thing(**kwargs)
            files = self.files(device)
            arn = shared_arn or self._cert_arn(files, known) or self._new_cert(files)
            self.iot.attach_thing_principal(thingName=device.thing_name, principal=arn)
            if progress is not None:
                progress(1)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for _ in pool.map(one, devices):
                pass
        return {d.thing_name: self.files(d) for d in devices}


CLAIM = "_claim"  # file stem of the fleet's claim certificate


def claim_policy(template: str) -> dict[str, Any]:
    """What AWS's guide gives a claim certificate: connect, and the provisioning MQTT API for one template."""
    topics = ["$aws/certificates/create/*", f"$aws/provisioning-templates/{template}/provision/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": [f"arn:aws:iot:*:*:topic/{t}" for t in topics]},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": [f"arn:aws:iot:*:*:topicfilter/{t}" for t in topics]},
        ],
    }  # fmt: skip


class ClaimProvisioner(Provisioner):
    """Fleet provisioning by claim: the gateway side is only the fleet's device policy (for the template to attach),
    a claim policy and one claim certificate; each device then provisions itself over MQTT."""

    def __init__(self, iot: Any, spec: FleetSpec, certs_dir: Path, template: str) -> None:
        super().__init__(iot, spec, certs_dir)
        self.template = template
        self.claim_policy_name = f"{self.policy_name}-claim"[:128]

    def files_for_claim(self) -> DeviceFiles:
        return DeviceFiles(self.dir / f"{CLAIM}.cert.pem", self.dir / f"{CLAIM}.private.key")

    def provision_claim(self, devices: list[DeviceSpec]) -> tuple[DeviceFiles, dict[str, DeviceFiles]]:
        """The claim certificate's files, and where each device keeps (or will keep) its own identity. Cached device
        certificates the gateway no longer has active are dropped, so those devices provision again."""
        self.iot.describe_provisioning_template(templateName=self.template)  # ResourceNotFoundException: say so early
        self._policy(devices)
        self._ignore_exists(self.iot.create_policy, policyName=self.claim_policy_name,
                            policyDocument=json.dumps(claim_policy(self.template)))  # fmt: skip
        known = self._known_certificates()
        claim = self.files_for_claim()
        if self._cert_arn(claim, known) is None:
            created = self.iot.create_keys_and_certificate(setAsActive=True)
            _write_private(claim.key, created["keyPair"]["PrivateKey"])
            claim.cert.write_text(created["certificatePem"])
            self.iot.attach_policy(policyName=self.claim_policy_name, target=created["certificateArn"])
        files = {d.thing_name: self.files(d) for d in devices}
        for own in files.values():
            if own.cert.exists() and certificate_id(own.cert.read_bytes()) not in known:
                own.cert.unlink()
        return claim, files
