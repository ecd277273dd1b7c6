"""The Device Shadow service over MQTT (paho, AWS IoT Device SDK v2) and over REST (boto3 iot-data)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client

ARN = "arn:aws:iot:us-east-1:123456789012:"


def shadow_policy() -> dict[str, object]:
    """The usual least-privilege shadow policy, confined by the thing name."""
    thing = "${iot:Connection.Thing.ThingName}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": ARN + f"client/{thing}"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": ARN + f"topic/$aws/things/{thing}/shadow/*"},
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": ARN + f"topicfilter/$aws/things/{thing}/shadow/*",
            },
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": ARN + f"topic/$aws/things/{thing}/shadow/*"},
        ],
    }


def shadow_device(gw: GatewayProcess, thing: str) -> Device:
    creds = gw.provision(thing, shadow_policy())
    dev = Device(gw.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
    assert dev.subscribe(f"$aws/things/{thing}/shadow/#", 1) == [1]
    return dev


def next_on(dev: Device, suffix: str) -> dict[str, Any]:
    while True:
        message = dev.expect()
        if message.topic.endswith(suffix):
            return json.loads(message.payload)  # type: ignore[no-any-return]


def test_update_get_delete_over_mqtt(gateway: GatewayProcess, unique: str) -> None:
    thing = f"lamp-{unique}"
    dev = shadow_device(gateway, thing)
    base = f"$aws/things/{thing}/shadow"
    dev.publish(f"{base}/update", json.dumps({"state": {"desired": {"color": "red"}}, "clientToken": "t1"}))
    accepted = next_on(dev, "/update/accepted")
    assert (accepted["state"], accepted["version"], accepted["clientToken"]) == ({"desired": {"color": "red"}}, 1, "t1")
    assert "timestamp" in accepted["metadata"]["desired"]["color"]
    delta = next_on(dev, "/update/delta")
    assert (delta["state"], delta["clientToken"]) == ({"color": "red"}, "t1")
    documents = next_on(dev, "/update/documents")
    assert "previous" not in documents and documents["current"]["version"] == 1
    # Reporting the desired value empties the delta: no delta message.
    dev.publish(f"{base}/update", json.dumps({"state": {"reported": {"color": "red"}}}))
    assert next_on(dev, "/update/accepted")["version"] == 2
    assert next_on(dev, "/update/documents")["previous"]["version"] == 1
    dev.publish(f"{base}/get", json.dumps({"clientToken": "g"}))
    got = next_on(dev, "/get/accepted")
    assert got["state"] == {"desired": {"color": "red"}, "reported": {"color": "red"}}
    assert got["clientToken"] == "g"
    # Optimistic locking.
    dev.publish(
        f"{base}/update", json.dumps({"state": {"desired": {"color": "blue"}}, "version": 1, "clientToken": "old"})
    )
    rejected = next_on(dev, "/update/rejected")
    assert (rejected["code"], rejected["message"], rejected["clientToken"]) == (409, "Version conflict", "old")
    dev.publish(f"{base}/update", b"not json")
    assert next_on(dev, "/update/rejected")["code"] == 400
    dev.publish(f"{base}/delete", b"")
    assert next_on(dev, "/delete/accepted")["version"] == 2
    dev.publish(f"{base}/get", b"")
    assert next_on(dev, "/get/rejected")["code"] == 404
    dev.close()


def test_named_shadow_and_rest_update_emits_mqtt_delta(gateway: GatewayProcess, unique: str) -> None:
    thing = f"pump-{unique}"
    dev = shadow_device(gateway, thing)
    data = client(gateway, "iot-data")
    body = data.update_thing_shadow(
        thingName=thing, shadowName="config", payload=json.dumps({"state": {"desired": {"speed": 3}}})
    )
    assert json.loads(body["payload"].read())["version"] == 1
    delta = next_on(dev, "/shadow/name/config/update/delta")
    assert delta["state"] == {"speed": 3}
    listed = data.list_named_shadows_for_thing(thingName=thing)
    assert listed["results"] == ["config"]
    got = json.loads(data.get_thing_shadow(thingName=thing, shadowName="config")["payload"].read())
    assert got["state"]["delta"] == {"speed": 3}
    dev.close()


def test_empty_objects_are_values_and_null_state_clears(gateway: GatewayProcess, unique: str) -> None:
    thing = f"empty-{unique}"
    dev = shadow_device(gateway, thing)
    base = f"$aws/things/{thing}/shadow"
    dev.publish(f"{base}/update", json.dumps({"state": {"desired": {"a": 1, "b": {"c": 3}, "d": {}}}}))
    assert next_on(dev, "/update/accepted")["state"] == {"desired": {"a": 1, "b": {"c": 3}, "d": {}}}
    assert next_on(dev, "/update/delta")["state"] == {"a": 1, "b": {"c": 3}, "d": {}}
    data = client(gateway, "iot-data")
    data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"desired": {"b": {"c": {}}}}}))
    assert next_on(dev, "/update/delta")["state"] == {"a": 1, "b": {"c": {}}, "d": {}}
    got = json.loads(data.get_thing_shadow(thingName=thing)["payload"].read())
    assert got["state"]["desired"] == {"a": 1, "b": {"c": {}}, "d": {}} == got["state"]["delta"]
    # {"state": null} clears everything, over MQTT as over REST; the shadow stays, at the next version.
    dev.publish(f"{base}/update", json.dumps({"state": None, "clientToken": "clear"}))
    accepted = next_on(dev, "/update/accepted")
    assert (accepted["state"], accepted["version"], accepted["clientToken"]) == (None, 3, "clear")
    got = json.loads(data.get_thing_shadow(thingName=thing)["payload"].read())
    assert (got["state"], got["version"]) == ({}, 3)
    data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"x":1}}}')
    body = json.loads(data.update_thing_shadow(thingName=thing, payload=b'{"state":null}')["payload"].read())
    assert (body["state"], body["version"]) == (None, 5)
    dev.close()


def test_rest_errors_map_to_boto3_exceptions(gateway: GatewayProcess, unique: str) -> None:
    data = client(gateway, "iot-data")
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_thing_shadow(thingName=f"nothing-{unique}")
    data.update_thing_shadow(thingName=f"v-{unique}", payload=b'{"state":{"reported":{"a":1}}}')
    with pytest.raises(data.exceptions.ConflictException):
        data.update_thing_shadow(thingName=f"v-{unique}", payload=b'{"state":{"reported":{"a":2}},"version":7}')
    with pytest.raises(data.exceptions.InvalidRequestException):
        data.update_thing_shadow(thingName=f"v-{unique}", payload=b"{oops")
    with pytest.raises(data.exceptions.RequestEntityTooLargeException):
        data.update_thing_shadow(
            thingName=f"v-{unique}", payload=json.dumps({"state": {"reported": {"big": "x" * 9000}}}).encode()
        )
    # Nothing partially applied: still version 1 with a == 1.
    got = json.loads(data.get_thing_shadow(thingName=f"v-{unique}")["payload"].read())
    assert (got["version"], got["state"]["reported"]) == (1, {"a": 1})


def test_iot_data_publish_and_retained(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"sub-{unique}", allow_all_policy())
    sub = Device(gateway.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca).connect()
    sub.subscribe(f"http/{unique}/#", 1)
    data = client(gateway, "iot-data")
    data.publish(topic=f"http/{unique}/a b", qos=1, payload=b"from boto3")
    message = sub.expect()
    assert (message.topic, message.payload) == (f"http/{unique}/a b", b"from boto3")
    data.publish(topic=f"http/{unique}/kept", qos=1, retain=True, payload=b"stay")
    got = data.get_retained_message(topic=f"http/{unique}/kept")
    assert (got["payload"], got["qos"]) == (b"stay", 1)
    topics = [t["topic"] for t in data.list_retained_messages()["retainedTopics"]]
    assert f"http/{unique}/kept" in topics
    data.delete_connection(clientId=creds.thing)
    assert sub.disconnected.wait(5)
    sub.client.loop_stop()
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.delete_connection(clientId=f"nobody-{unique}")


def test_shadow_survives_restart(tmp_path: Any, unique: str) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        data = client(gw, "iot-data")
        data.update_thing_shadow(thingName=f"keep-{unique}", payload=b'{"state":{"reported":{"on":true}}}')
        gw.stop()
        gw.start()
        data = client(gw, "iot-data")
        got = json.loads(data.get_thing_shadow(thingName=f"keep-{unique}")["payload"].read())
        assert (got["version"], got["state"]["reported"]) == (1, {"on": True})
    finally:
        gw.stop()


def test_device_sdk_v2_shadow_client(gateway: GatewayProcess, unique: str) -> None:
    from concurrent.futures import Future

    from awscrt import mqtt as crt_mqtt
    from awsiot import iotshadow, mqtt_connection_builder

    thing = f"sdk-{unique}"
    creds = gateway.provision(thing, shadow_policy())
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint="127.0.0.1",
        port=gateway.ports["mqtts"],
        cert_filepath=str(creds.cert),
        pri_key_filepath=str(creds.key),
        ca_filepath=str(creds.ca),
        client_id=thing,
        clean_session=True,
        keep_alive_secs=30,
    )
    connection.connect().result(10)
    try:
        shadow = iotshadow.IotShadowClient(connection)
        deltas: Future[Any] = Future()
        accepted: Future[Any] = Future()
        got: Future[Any] = Future()
        subscribe_futures = [
            shadow.subscribe_to_shadow_delta_updated_events(
                iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing),
                crt_mqtt.QoS.AT_LEAST_ONCE,
                lambda e: deltas.done() or deltas.set_result(e),
            )[0],
            shadow.subscribe_to_update_shadow_accepted(
                iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing),
                crt_mqtt.QoS.AT_LEAST_ONCE,
                lambda r: accepted.done() or accepted.set_result(r),
            )[0],
            shadow.subscribe_to_get_shadow_accepted(
                iotshadow.GetShadowSubscriptionRequest(thing_name=thing),
                crt_mqtt.QoS.AT_LEAST_ONCE,
                lambda r: got.done() or got.set_result(r),
            )[0],
        ]
        for future in subscribe_futures:
            future.result(10)
        token = str(uuid.uuid4())
        shadow.publish_update_shadow(
            iotshadow.UpdateShadowRequest(
                thing_name=thing, client_token=token, state=iotshadow.ShadowState(desired={"fan": "on"})
            ),
            crt_mqtt.QoS.AT_LEAST_ONCE,
        ).result(10)
        response = accepted.result(10)
        assert (response.client_token, response.version, response.state.desired) == (token, 1, {"fan": "on"})
        assert deltas.result(10).state == {"fan": "on"}
        shadow.publish_get_shadow(
            iotshadow.GetShadowRequest(thing_name=thing, client_token="get-1"), crt_mqtt.QoS.AT_LEAST_ONCE
        ).result(10)
        document = got.result(10)
        assert document.state.delta == {"fan": "on"} and document.client_token == "get-1"
    finally:
        connection.disconnect().result(10)


def _https_post(gw: GatewayProcess, creds: Any, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    request = urllib.request.Request(f"https://localhost:{gw.ports['https']}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_https_publish_door_checks_policy(gateway: GatewayProcess, unique: str) -> None:
    sub_creds = gateway.provision(f"hs-{unique}", allow_all_policy())
    sub = Device(gateway.ports["mqtts"], sub_creds.thing, sub_creds.cert, sub_creds.key, sub_creds.ca).connect()
    sub.subscribe(f"https/{unique}/#", 1)
    poster = gateway.provision(
        f"hp-{unique}",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": ARN + f"topic/https/{unique}/ok"}],
        },
    )
    status, body = _https_post(gateway, poster, f"/topics/https%2F{unique}%2Fok?qos=1", b'{"t":1}')
    assert (status, body["message"]) == (200, "OK")
    assert sub.expect().payload == b'{"t":1}'
    status, body = _https_post(gateway, poster, f"/topics/https%2F{unique}%2Fnot-allowed?qos=1", b"x")
    assert status == 403
    sub.expect_none()
    sub.close()


def test_policy_confines_device_to_its_own_shadow(gateway: GatewayProcess, unique: str) -> None:
    dev = shadow_device(gateway, f"mine-{unique}")
    dev.publish(f"$aws/things/other-{unique}/shadow/update", b'{"state":{"desired":{"x":1}}}', timeout=2)
    assert dev.disconnected.wait(5)
    dev.client.loop_stop()
    data = client(gateway, "iot-data")
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_thing_shadow(thingName=f"other-{unique}")


def test_more_than_ten_requests_in_flight_get_429(gateway: GatewayProcess, unique: str) -> None:
    import socket
    import ssl

    import wire_compat as codec

    thing = f"burst-{unique}"
    creds = gateway.provision(thing, shadow_policy())
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    with ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", gateway.ports["mqtts"]), timeout=5), server_hostname="localhost"
    ) as sock:
        cid = thing.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
        sock.sendall(b"\x10" + codec.encode_length(len(body)) + body)
        assert sock.recv(4)[:1] == b"\x20"
        reply_filter = f"$aws/things/{thing}/shadow/update/+".encode()
        sub = b"\x00\x01" + len(reply_filter).to_bytes(2, "big") + reply_filter + b"\x00"
        sock.sendall(b"\x82" + codec.encode_length(len(sub)) + sub)
        assert sock.recv(5)[:1] == b"\x90"
        # Twelve requests in one write: they reach the shadow service in the same batch, all in flight.
        sock.sendall(
            b"".join(
                codec.encode_publish(
                    f"$aws/things/{thing}/shadow/update",
                    json.dumps({"state": {"reported": {"i": i}}, "clientToken": f"t{i}"}).encode(),
                )
                for i in range(12)
            )
        )
        buf = bytearray()
        replies: list[tuple[str, dict[str, Any]]] = []
        while sum(kind in ("accepted", "rejected") for kind, _ in replies) < 12:
            buf += sock.recv(65536)
            while (frame := codec.split_frame(buf, 0, 1 << 20)) is not None:
                first, start, end = frame
                topic, _, payload = codec.decode_publish(first, bytes(buf[start:end]))
                replies.append((topic.rsplit("/", 1)[1], json.loads(payload)))
                del buf[:end]
    accepted = [body["clientToken"] for kind, body in replies if kind == "accepted"]
    rejected = [(body["code"], body["message"], body["clientToken"]) for kind, body in replies if kind == "rejected"]
    assert accepted == [f"t{i}" for i in range(10)]
    assert rejected == [(429, "Too Many Requests", "t10"), (429, "Too Many Requests", "t11")]
