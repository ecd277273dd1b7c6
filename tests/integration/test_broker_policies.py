"""Policies enforced on connect, publish, subscribe and receive, with real paho clients over mTLS."""

from __future__ import annotations

import time

from conftest import Creds, GatewayProcess, allow_all_policy
from mqtt_helpers import Device

ARN = "arn:aws:iot:us-east-1:123456789012:"


def device(gw: GatewayProcess, creds: Creds, client_id: str | None = None) -> Device:
    return Device(gw.ports["mqtts"], client_id or creds.thing, creds.cert, creds.key, creds.ca)


def thing_scoped_policy() -> dict[str, object]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": ARN + "client/${iot:Connection.Thing.ThingName}"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": ARN + "topic/things/${iot:Connection.Thing.ThingName}/*",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": ARN + "topicfilter/things/${iot:Connection.Thing.ThingName}/*",
            },
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": ARN + "topic/things/*/admin"},
        ],
    }


def test_allowed_publish_reaches_subscriber(gateway: GatewayProcess, unique: str) -> None:
    pub = device(gateway, gateway.provision(f"pub-{unique}", allow_all_policy())).connect()
    sub = device(gateway, gateway.provision(f"sub-{unique}", allow_all_policy())).connect()
    assert sub.subscribe(f"t/{unique}/#", 1) == [1]
    assert pub.publish(f"t/{unique}/x", b"hello", 1)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == (f"t/{unique}/x", b"hello", 1)
    pub.close()
    sub.close()


def test_thing_name_variable_confines_device_to_its_topics(gateway: GatewayProcess, unique: str) -> None:
    me = gateway.provision(f"dev-{unique}", thing_scoped_policy())
    watcher = device(gateway, gateway.provision(f"w-{unique}", allow_all_policy())).connect()
    watcher.subscribe("things/#", 1)
    dev = device(gateway, me).connect()
    assert dev.subscribe(f"things/dev-{unique}/cmd", 1) == [1]
    assert dev.publish(f"things/dev-{unique}/temp", b"21", 1)
    assert watcher.expect().topic == f"things/dev-{unique}/temp"
    # Someone else's topic: MQTT 3.1.1 on AWS closes the connection.
    dev.publish(f"things/other-{unique}/temp", b"21", 1, timeout=2)
    assert dev.disconnected.wait(5)
    watcher.expect_none()
    dev.client.loop_stop()
    watcher.close()


def test_connect_denied_when_client_id_is_not_the_thing(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", thing_scoped_policy())
    assert not device(gateway, creds, client_id=f"someone-{unique}").try_connect(3)


def test_explicit_deny_beats_allow(gateway: GatewayProcess, unique: str) -> None:
    dev = device(gateway, gateway.provision(f"dev-{unique}", thing_scoped_policy())).connect()
    dev.publish(f"things/dev-{unique}/admin", b"x", 1, timeout=2)
    assert dev.disconnected.wait(5)
    dev.client.loop_stop()


def test_subscribe_denied_closes_connection(gateway: GatewayProcess, unique: str) -> None:
    dev = device(gateway, gateway.provision(f"dev-{unique}", thing_scoped_policy())).connect()
    assert dev.subscribe("secret/#", 1, timeout=2) is None
    assert dev.disconnected.wait(5)
    dev.client.loop_stop()


def test_receive_denied_is_silently_not_delivered(gateway: GatewayProcess, unique: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["iot:Connect", "iot:Subscribe"], "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": ARN + f"topic/r/{unique}/ok"},
        ],
    }
    sub = device(gateway, gateway.provision(f"sub-{unique}", policy)).connect()
    pub = device(gateway, gateway.provision(f"pub-{unique}", allow_all_policy())).connect()
    assert sub.subscribe(f"r/{unique}/+", 1) == [1]
    pub.publish(f"r/{unique}/secret", b"no")
    pub.publish(f"r/{unique}/ok", b"yes")
    assert sub.expect().payload == b"yes"
    sub.expect_none()
    assert not sub.disconnected.is_set()
    sub.close()
    pub.close()


def test_reserved_aws_topic_publish_keeps_connection(gateway: GatewayProcess, unique: str) -> None:
    # amqtt stops serving a client that publishes to a `$` topic; ours must not (design.md §6).
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    dev = device(gateway, creds).connect()
    sub = device(gateway, gateway.provision(f"sub-{unique}", allow_all_policy())).connect()
    sub.subscribe(f"after/{unique}", 1)
    assert dev.publish(f"$aws/things/dev-{unique}/shadow/update", b'{"state":{}}', 1)
    assert dev.publish(f"after/{unique}", b"still here", 1)
    assert sub.expect().payload == b"still here"
    dev.close()
    sub.close()


def test_client_id_takeover_disconnects_first(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    first = device(gateway, creds).connect()
    second = device(gateway, creds).connect()
    assert first.disconnected.wait(5)
    first.client.loop_stop()
    assert second.publish(f"x/{unique}", b"1", 1)
    assert not second.disconnected.is_set()
    second.close()


def test_inactive_certificate_is_refused(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy(), active=False)
    assert not device(gateway, creds).try_connect(3)


def test_revoked_certificate_loses_its_live_connection(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    dev = device(gateway, creds).connect()
    with gateway.registry() as reg:
        reg.update_certificate(creds.certificate_id, "REVOKED")  # type: ignore[attr-defined]
    assert dev.disconnected.wait(5), "revoked certificate kept its connection"
    dev.client.loop_stop()
    assert not device(gateway, creds).try_connect(3)


def test_policy_change_applies_to_live_connection(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    dev = device(gateway, creds).connect()
    assert dev.publish(f"open/{unique}", b"1", 1)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": ARN + f"topic/open/{unique}"},
        ],
    }
    with gateway.registry() as reg:
        name = reg.list_attached_policies(reg.arn("cert", creds.certificate_id))["policies"][0]["policyName"]  # type: ignore[attr-defined]
        import json

        reg.create_policy_version(name, json.dumps(deny), set_as_default=True)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not dev.disconnected.is_set():
        dev.publish(f"open/{unique}", b"2", 1, timeout=1)
        time.sleep(0.2)
    assert dev.disconnected.is_set()
    dev.client.loop_stop()


def test_retain_needs_retain_publish(gateway: GatewayProcess, unique: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"],
                "Resource": "*",
            },
        ],
    }
    dev = device(gateway, gateway.provision(f"dev-{unique}", policy)).connect()
    assert dev.publish(f"plain/{unique}", b"fine", 1)
    dev.publish(f"plain/{unique}", b"kept?", 1, retain=True, timeout=2)
    assert dev.disconnected.wait(5)
    dev.client.loop_stop()


def test_health_reports_ready_with_ports(gateway: GatewayProcess) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/health", timeout=5) as response:
        body = json.loads(response.read())
        assert response.status == 200
    assert body["status"] == "ok"
    assert body["ports"]["mqtts"] == gateway.ports["mqtts"]
