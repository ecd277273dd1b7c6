"""CreateProvisioningClaim: a temporary claim certificate for one fleet provisioning template (the "trusted user"
flow: an app fetches it and hands it to the device, which then provisions itself over MQTT)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from gateway.errors import InvalidRequestException
from gateway.identity import ca as ca_mod
from gateway.identity.certs import parse_certificate
from gateway.provisioning.templates import ProvisioningTemplates
from gateway.registry import Registry

CLAIM_VALIDITY_S = 300  # AWS: a provisioning claim certificate is good for five minutes


def claim_policy_document(region: str, account: str, template: str) -> str:
    """Connect, and the provisioning MQTT API for this one template."""
    arn = f"arn:aws:iot:{region}:{account}"
    topics = ["$aws/certificates/create/*", "$aws/certificates/create-from-csr/*",
              f"$aws/provisioning-templates/{template}/provision/*"]  # fmt: skip
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
             "Resource": [f"{arn}:topic/{t}" for t in topics]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [f"{arn}:topicfilter/{t}" for t in topics]},
        ],
    })  # fmt: skip


def create_provisioning_claim(registry: Registry, templates: ProvisioningTemplates, name: str) -> dict[str, Any]:
    _, settings = templates.template(name)  # ResourceNotFoundException for an unknown template
    if settings["type"] != "FLEET_PROVISIONING":
        raise InvalidRequestException(f"The provisioning template {name} is not a fleet provisioning template")
    local = registry.local_ca
    if local is None or local.key_pem is None:
        raise InvalidRequestException("This gateway has no local CA key; run `edgesim certs init` first")
    now = datetime.fromtimestamp(registry.clock.wall_ms() / 1000, UTC)
    issued = ca_mod.issue_device_cert(local, now=now, valid_days=CLAIM_VALIDITY_S / 86400)
    info = parse_certificate(issued.cert_pem)
    policy = f"edgesim-provisioning-claim-{name}"
    with registry.store.transaction():
        out = registry.register_certificate_without_ca(issued.cert_pem.decode(), "ACTIVE")
        registry.ensure_policy(policy, claim_policy_document(registry.region, registry.account, name))
        registry.attach_policy(policy, out["certificateArn"])
    return {
        "certificateId": info.certificate_id,
        "certificatePem": issued.cert_pem.decode(),
        "keyPair": {"PublicKey": issued.public_key_pem.decode(), "PrivateKey": (issued.key_pem or b"").decode()},
        "expiration": registry.clock.wall_ms() / 1000 + CLAIM_VALIDITY_S,
    }
