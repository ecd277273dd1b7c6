"""Greengrass client devices: connectivity info and associations through boto3, discovery as the SDK's discovery
client makes it (mutual TLS), then the associated device on the edge core's local broker with its own IoT Core
certificate and the CA discovery handed it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from awscrt import io
from awsiot.greengrass_discovery import DiscoveryClient, DiscoveryException
from conftest import GatewayProcess
from mqtt_helpers import Device
from test_api_iot import client
from test_edge import EdgeProcess, gateway_in

DISCOVER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"], "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": "greengrass:Discover",
            "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}",
        },
    ],
}


class BareCore(EdgeProcess):
    """The example core without its components: only the brokers, bridge and client device auth are needed here."""

    def write_config(self) -> Path:
        path = super().write_config()
        config = yaml.safe_load(path.read_text())
        config["components"] = []
        path.write_text(yaml.safe_dump(config))
        return path


def discover(gw: GatewayProcess, thing: str, cert: Path, key: Path) -> Any:
    """What a device runs (the SDK's basic discovery sample), pointed at the gateway's HTTPS port."""
    tls = io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
    tls.override_default_trust_store_from_path(None, str(gw.ca_file))
    bootstrap = io.ClientBootstrap(io.EventLoopGroup(1), io.DefaultHostResolver(io.EventLoopGroup(1)))
    discovery = DiscoveryClient(bootstrap, io.SocketOptions(), io.ClientTlsContext(tls), "us-east-1", "127.0.0.1")
    discovery.port = gw.ports["https"]
    return discovery.discover(thing).result(timeout=20)


def test_connectivity_info_and_associations_through_boto3(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    try:
        gg, ggv2, iot = client(gw, "greengrass"), client(gw, "greengrassv2"), client(gw, "iot")
        info = [{"Id": "lan", "HostAddress": "192.0.2.10", "PortNumber": 8883, "Metadata": "wired"}]
        assert gg.update_connectivity_info(ThingName="core-1", ConnectivityInfo=info)["Version"]
        assert gg.get_connectivity_info(ThingName="core-1")["ConnectivityInfo"] == info
        v2 = [{"id": "wifi", "hostAddress": "192.0.2.11", "portNumber": 8883, "metadata": ""}]
        assert ggv2.update_connectivity_info(thingName="core-2", connectivityInfo=v2)["version"]
        assert ggv2.get_connectivity_info(thingName="core-2")["connectivityInfo"] == v2
        for name in ("sensor-a", "sensor-b"):
            iot.create_thing(thingName=name)
        result = ggv2.batch_associate_client_device_with_core_device(
            coreDeviceThingName="core-1",
            entries=[{"thingName": "sensor-a"}, {"thingName": "sensor-b"}, {"thingName": "ghost"}],
        )
        assert [(e["thingName"], e["code"]) for e in result["errorEntries"]] == [("ghost", "ResourceNotFoundException")]
        listed = ggv2.list_client_devices_associated_with_core_device(coreDeviceThingName="core-1")
        assert [d["thingName"] for d in listed["associatedClientDevices"]] == ["sensor-a", "sensor-b"]
        assert all(d["associationTimestamp"].year >= 2024 for d in listed["associatedClientDevices"])
        ggv2.batch_disassociate_client_device_from_core_device(
            coreDeviceThingName="core-1", entries=[{"thingName": "sensor-a"}]
        )
        listed = ggv2.list_client_devices_associated_with_core_device(coreDeviceThingName="core-1")
        assert [d["thingName"] for d in listed["associatedClientDevices"]] == ["sensor-b"]
        # Discovery wants the thing's own certificate and greengrass:Discover.
        creds = gw.provision("sensor-b", DISCOVER_POLICY)
        found = discover(gw, "sensor-b", creds.cert, creds.key)
        assert [g.gg_group_id for g in found.gg_groups] == ["greengrassV2-coreDevice-core-1"]
        core = found.gg_groups[0].cores[0]
        assert core.thing_arn.endswith(":thing/core-1")
        assert [(c.host_address, c.port) for c in core.connectivity] == [("192.0.2.10", 8883)]
        with pytest.raises(DiscoveryException) as refused:
            discover(gw, "sensor-a", creds.cert, creds.key)  # not this certificate's thing
        assert refused.value.http_response_code == 403
        # greengrass:Discover granted only through a thing group's policy does not count (AWS: group policies do
        # not reach Greengrass operations).
        plain = gw.provision("sensor-c", {"Version": "2012-10-17", "Statement": [DISCOVER_POLICY["Statement"][0]]})
        group = iot.create_thing_group(thingGroupName="discoverers")["thingGroupArn"]
        iot.create_policy(policyName="group-discover", policyDocument=json.dumps(DISCOVER_POLICY))
        iot.attach_policy(policyName="group-discover", target=group)
        iot.add_thing_to_thing_group(thingGroupName="discoverers", thingName="sensor-c")
        with pytest.raises(DiscoveryException) as group_only:
            discover(gw, "sensor-c", plain.cert, plain.key)
        assert group_only.value.http_response_code == 403
    finally:
        gw.stop()


def test_associated_device_connects_to_the_core_with_its_own_certificate(tmp_path: Path) -> None:
    gw = gateway_in(tmp_path / "gw")
    edge = BareCore(tmp_path, gw, extra_args=["--local-tls-port", "0"])
    try:
        creds = gw.provision("field-sensor", DISCOVER_POLICY)
        client(gw, "greengrassv2").batch_associate_client_device_with_core_device(
            coreDeviceThingName=edge.name, entries=[{"thingName": "field-sensor"}]
        )
        edge.start()
        # The core publishes its listener and CA, then imports its associated devices' certificates.
        deadline = time.monotonic() + 20
        while True:
            found = discover(gw, "field-sensor", creds.cert, creds.key)
            group = found.gg_groups[0] if found.gg_groups else None
            if group is not None and group.certificate_authorities and group.cores[0].connectivity:
                break
            assert time.monotonic() < deadline, "the core never published its connectivity and CA"
            time.sleep(0.2)
        endpoint = group.cores[0].connectivity[0]
        assert endpoint.port == edge.ports["local_mqtts"]
        core_ca = tmp_path / "core-ca.pem"
        core_ca.write_text(group.certificate_authorities[0])
        device = None
        while device is None:
            candidate = Device(endpoint.port, "field-sensor", creds.cert, creds.key, core_ca)
            if candidate.try_connect():
                device = candidate
            else:
                assert time.monotonic() < deadline + 10, "the core never accepted the associated device"
                time.sleep(0.3)
        try:
            assert device.subscribe("local/echo") == [1]
            assert device.publish("local/echo", json.dumps({"ok": True}))
            assert json.loads(device.expect().payload) == {"ok": True}
        finally:
            device.close()
        # A device of the same cloud that is not associated with this core stays out.
        stranger = gw.provision("stranger", DISCOVER_POLICY)
        assert not Device(endpoint.port, "stranger", stranger.cert, stranger.key, core_ca).try_connect(1.5)
        # Disassociated in the cloud: the core's next sync takes its certificate away.
        client(gw, "greengrassv2").batch_disassociate_client_device_from_core_device(
            coreDeviceThingName=edge.name, entries=[{"thingName": "field-sensor"}]
        )
        deadline = time.monotonic() + 15
        while True:
            attempt = Device(endpoint.port, "field-sensor", creds.cert, creds.key, core_ca)
            if not attempt.try_connect(1.5):
                break
            attempt.close()
            assert time.monotonic() < deadline, "the core still accepts a disassociated device"
            time.sleep(0.3)
    finally:
        edge.stop()
        gw.stop()
