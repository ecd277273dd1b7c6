"""Fleet provisioning by claim, as device firmware does it: connect with the shared claim certificate, ask the
provisioning MQTT API for a certificate of its own (CreateKeysAndCertificate), register the thing with a
provisioning template (RegisterThing), and store the new certificate and key for every later connection."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devices.provision import DeviceFiles
from devices.spec import DeviceSpec
from devices.template import compile_template
from mqttwire.client import AsyncMqttClient, Message, MqttError

CREATE = "$aws/certificates/create/json"
TIMEOUT_S = 15.0
_PARAMETER_VARIABLES = frozenset({"fleet", "type", "i", "n", "ordinal", "thing_name"})


class ClaimRefused(Exception):
    """The gateway refused a provisioning step (its /rejected answer, or a refused subscription)."""


@dataclass(frozen=True)
class ClaimOptions:
    """What a fleet's devices need to provision themselves; plain data, so it crosses to worker processes."""

    template: str
    claim_cert: Path
    claim_key: Path
    parameters: dict[str, str] = field(default_factory=lambda: {"ThingName": "{thing_name}"})  # template texts

    def render(self, spec: DeviceSpec) -> dict[str, str]:
        env = {**spec.variables(), "n": spec.count}
        return {k: compile_template(v, _PARAMETER_VARIABLES).render(env) for k, v in self.parameters.items()}


@dataclass(frozen=True)
class DeviceClaim:
    """One device's side: the claim connection's TLS context, where its own identity goes, and how to build the
    TLS context for that identity once it exists."""

    options: ClaimOptions
    claim_context: ssl.SSLContext
    files: DeviceFiles
    context_for: Callable[[DeviceFiles], ssl.SSLContext]


def store_identity(cert_path: Path, key_path: Path, cert_pem: str, key_pem: str) -> None:
    """Write the key (0600) and then the certificate: a certificate on disk always has its key."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key_pem)
    partial = cert_path.with_name(cert_path.name + ".partial")
    partial.write_text(cert_pem)
    partial.replace(cert_path)


async def provision_by_claim(
    client_id: str,
    host: str,
    port: int,
    claim_context: ssl.SSLContext,
    template: str,
    parameters: dict[str, str],
    protocol: int = 4,
) -> tuple[str, str, str]:
    """Run the claim flow on its own connection; returns (certificate PEM, private key PEM, thing name)."""
    provision = f"$aws/provisioning-templates/{template}/provision/json"
    answers: dict[str, asyncio.Future[tuple[bool, dict[str, object]]]] = {}

    def on_message(message: Message) -> None:
        for request, waiter in answers.items():
            if message.topic in (request + "/accepted", request + "/rejected") and not waiter.done():
                try:
                    body = json.loads(message.payload)
                except ValueError:
                    body = {}
                waiter.set_result((message.topic.endswith("/accepted"), body if isinstance(body, dict) else {}))

    async def call(topic: str, payload: dict[str, object]) -> dict[str, object]:
        waiter: asyncio.Future[tuple[bool, dict[str, object]]] = asyncio.get_running_loop().create_future()
        answers[topic] = waiter
        await client.publish(topic, json.dumps(payload).encode(), 1)
        accepted, body = await asyncio.wait_for(waiter, TIMEOUT_S)
        if not accepted:
            raise ClaimRefused(f"{topic}: {body.get('errorCode')}: {body.get('errorMessage')}")
        return body

    client = AsyncMqttClient(client_id, host, port, ssl_context=claim_context, on_message=on_message,
                             protocol=protocol, clean_start=True)  # fmt: skip
    await client.connect()
    try:
        filters = [(f"{t}/{kind}", 1) for t in (CREATE, provision) for kind in ("accepted", "rejected")]
        if any(code >= 0x80 for code in await client.subscribe(filters)):
            raise ClaimRefused("the claim certificate's policy refused the provisioning topics")
        keys = await call(CREATE, {})
        done = await call(provision, {
            "certificateOwnershipToken": keys.get("certificateOwnershipToken"), "parameters": parameters,
        })  # fmt: skip
    finally:
        if client.connected:
            try:
                await client.disconnect()
            except MqttError:
                client.abort()
    return str(keys["certificatePem"]), str(keys["privateKey"]), str(done.get("thingName", ""))
