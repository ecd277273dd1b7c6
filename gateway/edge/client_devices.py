"""Greengrass client device auth for the core's mutual-TLS listener: devices associated with this core in the cloud
(BatchAssociateClientDeviceWithCoreDevice) connect with their own IoT Core certificates.

The core publishes where it listens (UpdateConnectivityInfo, as Greengrass's IP detector does) and its local CA (so
discovery hands both to devices), then keeps a local copy of its associated devices' certificates: each sync imports
the certificates attached to associated things, with their cloud status, and takes away those of things no longer
associated. The local broker then authorizes them like any registered certificate, offline too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from gateway.edge.aws_clients import iot_client, send_api_token
from gateway.errors import AwsError
from gateway.registry import Registry

log = logging.getLogger("edgesim.edge")

SYNC_S = 5.0


@dataclass
class ClientDeviceAuth:
    core: str
    endpoint: str
    registry: Registry
    policy: str
    ca_pem: str
    host: str
    port: int
    imported: dict[str, set[str]] = field(default_factory=dict)  # thing -> local certificate ARNs attached to it
    published: bool = False
    seeded: bool = False

    def _greengrass(self, service: str) -> Any:
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.registry.region,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "edgesim"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "edgesim"),
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        send_api_token(client)
        return client

    def publish_identity(self) -> None:
        """Where devices reach this core, and the CA its listener's certificate comes from."""
        self._greengrass("greengrass").update_connectivity_info(
            ThingName=self.core,
            ConnectivityInfo=[{"Id": "local-mqtts", "HostAddress": self.host, "PortNumber": self.port, "Metadata": ""}],
        )
        body = json.dumps({"coreDeviceCertificateAuthorities": [self.ca_pem]}).encode()
        request = urllib.request.Request(
            f"{self.endpoint.rstrip('/')}/edgesim/greengrass/coreDevices/{self.core}/certificateAuthorities",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        if token := os.environ.get("EDGESIM_API_TOKEN"):
            request.add_header("X-Edgesim-Token", token)
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.published = True

    def associated(self) -> list[str]:
        gg = self._greengrass("greengrassv2")
        things: list[str] = []
        token: str | None = None
        while True:
            kwargs = {"nextToken": token} if token else {}
            page = gg.list_client_devices_associated_with_core_device(coreDeviceThingName=self.core, **kwargs)
            things += [d["thingName"] for d in page.get("associatedClientDevices", [])]
            token = page.get("nextToken")
            if not token:
                return things

    def fetch(self) -> dict[str, list[dict[str, Any]]]:
        """From the cloud (blocking; run in a thread): associated things and their certificates' descriptions."""
        if not self.published:
            self.publish_identity()
        iot = iot_client(self.endpoint, self.registry.region)
        found: dict[str, list[dict[str, Any]]] = {}
        for thing in self.associated():
            found[thing] = [
                iot.describe_certificate(certificateId=principal.rsplit("/", 1)[-1])["certificateDescription"]
                for principal in iot.list_thing_principals(thingName=thing).get("principals", [])
                if ":cert/" in principal
            ]
        return found

    def apply(self, found: dict[str, list[dict[str, Any]]]) -> None:
        """Mirror what `fetch` found into the local registry (on the event loop, which owns the registry)."""
        if not self.seeded:
            self.imported, self.seeded = self._previously_imported(), True
        wanted = {thing: {self._import(thing, d) for d in descriptions} for thing, descriptions in found.items()}
        still_used = set().union(*wanted.values()) if wanted else set()
        for thing, arns in self.imported.items():
            for arn in arns - wanted.get(thing, set()):
                self.registry.detach_thing_principal(thing, arn)
                if arn not in still_used:  # no associated thing left for it: it may not connect at all
                    self.registry.detach_policy(self.policy, arn)
                    self.registry.update_certificate(arn.rsplit("/", 1)[-1], "INACTIVE")
        self.imported = wanted

    def _previously_imported(self) -> dict[str, set[str]]:
        """What an earlier run imported: certificates registered here without a CA (the core's own devices' come
        from its CA), by the things they are attached to; so a disassociation while the core was down still counts."""
        out: dict[str, set[str]] = {}
        for row in self.registry.store.query("SELECT id FROM certificates WHERE ca_id IS NULL AND status='ACTIVE'"):
            arn = self.registry.arn("cert", row["id"])
            for attached in self.registry.store.query(
                "SELECT thing_name FROM thing_principals WHERE principal=?", (arn,)
            ):
                out.setdefault(attached["thing_name"], set()).add(arn)
        return out

    def _import(self, thing: str, description: dict[str, Any]) -> str:
        """The cloud certificate in the local registry, attached to `thing` with the local devices' policy."""
        cert_id = description["certificateId"]
        status = "ACTIVE" if description["status"] == "ACTIVE" else "INACTIVE"
        row = self.registry.certificate_row(cert_id)
        if row is None:
            created = self.registry.register_certificate_without_ca(description["certificatePem"], status)
            arn = str(created["certificateArn"])
        else:
            arn = self.registry.arn("cert", cert_id)
            if row["status"] != status:
                self.registry.update_certificate(cert_id, status)
        if not self.registry.thing_exists(thing):
            self.registry.create_thing(thing)
        self.registry.attach_policy(self.policy, arn)
        self.registry.attach_thing_principal(thing, arn)
        return arn

    async def run(self) -> None:
        while True:
            try:
                self.apply(await asyncio.to_thread(self.fetch))
            except (AwsError, OSError, ValueError) as exc:
                log.info("client device sync with the cloud failed (%s); keeping the last known devices", exc)
            except Exception as exc:  # botocore's errors: the cloud may be down, which is normal at the edge
                log.info("client device sync with the cloud failed (%s); keeping the last known devices", exc)
            await asyncio.sleep(SYNC_S)
