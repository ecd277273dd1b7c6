"""The AWS IoT Device SDK v2's MQTT 5 client against the gateway over mTLS, used as the SDK's own samples use it:
mqtt5_client_builder.mtls_from_path, publish/subscribe with user properties, shared subscriptions, and the shadow
service through IotShadowClientV2 (the SDK's request/response client)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("sdk5")).start()
    yield gateway
    gateway.stop()


class Sdk5:
    """One mqtt5 client built like the SDK's mqtt5_pubsub sample."""

    def __init__(self, gw: GatewayProcess, name: str) -> None:
        from awsiot import mqtt5_client_builder

        creds = gw.provision(name, allow_all_policy())
        self.received: list[Any] = []
        self.got_message = threading.Condition()
        self.connected: Future[Any] = Future()
        self.stopped: Future[None] = Future()
        self.client = mqtt5_client_builder.mtls_from_path(
            endpoint="127.0.0.1",
            port=gw.ports["mqtts"],
            cert_filepath=str(creds.cert),
            pri_key_filepath=str(creds.key),
            ca_filepath=str(creds.ca),
            client_id=name,
            on_publish_received=self._on_publish,
            on_lifecycle_connection_success=lambda data: self.connected.set_result(data.connack_packet),
            on_lifecycle_stopped=lambda data: self.stopped.done() or self.stopped.set_result(None),
        )
        self.client.start()
        self.connack = self.connected.result(10)

    def _on_publish(self, data: Any) -> None:
        with self.got_message:
            self.received.append(data.publish_packet)
            self.got_message.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> list[Any]:
        with self.got_message:
            assert self.got_message.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)

    def stop(self) -> None:
        self.client.stop()
        self.stopped.result(10)


def test_sdk_mqtt5_pubsub_with_user_properties(gw: GatewayProcess) -> None:
    from awscrt import mqtt5

    name = f"sdk5-{uuid.uuid4().hex[:8]}"
    dev = Sdk5(gw, name)
    assert dev.connack.maximum_qos == mqtt5.QoS.AT_LEAST_ONCE
    assert dev.connack.topic_alias_maximum == 8
    topic = f"sdk5/{name}/data"
    suback = dev.client.subscribe(
        mqtt5.SubscribePacket([mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_LEAST_ONCE)])
    ).result(10)
    assert suback.reason_codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    puback = dev.client.publish(
        mqtt5.PublishPacket(
            topic=topic, payload=b'{"t": 1}', qos=mqtt5.QoS.AT_LEAST_ONCE, content_type="application/json",
            user_properties=[mqtt5.UserProperty("site", "lab")],
        )
    ).result(10)  # fmt: skip
    assert puback.puback.reason_code == mqtt5.PubackReasonCode.SUCCESS
    (message,) = dev.wait_for(1)
    assert message.payload == b'{"t": 1}' and message.content_type == "application/json"
    assert [(p.name, p.value) for p in message.user_properties] == [("site", "lab")]
    dev.stop()


def test_sdk_mqtt5_shared_subscription(gw: GatewayProcess) -> None:
    from awscrt import mqtt5

    tag = uuid.uuid4().hex[:8]
    workers = [Sdk5(gw, f"worker-{i}-{tag}") for i in range(2)]
    for worker in workers:
        worker.client.subscribe(
            mqtt5.SubscribePacket(
                [mqtt5.Subscription(topic_filter=f"$share/pool/jobs/{tag}", qos=mqtt5.QoS.AT_LEAST_ONCE)]
            )
        ).result(10)
    producer = Sdk5(gw, f"producer-{tag}")
    for i in range(10):
        producer.client.publish(
            mqtt5.PublishPacket(topic=f"jobs/{tag}", payload=str(i).encode(), qos=mqtt5.QoS.AT_LEAST_ONCE)
        ).result(10)
    for worker in workers:
        worker.wait_for(5)  # the group's members take turns
    total = sorted(int(p.payload) for w in workers for p in w.received)
    assert total == list(range(10))  # each message to exactly one member of the group
    for c in [*workers, producer]:
        c.stop()


def test_sdk_mqtt5_shadow_request_response(gw: GatewayProcess) -> None:
    from awscrt import mqtt_request_response
    from awsiot import iotshadow

    thing = f"sdk5shadow-{uuid.uuid4().hex[:8]}"
    dev = Sdk5(gw, thing)
    options = mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=2, max_streaming_subscriptions=2, operation_timeout_in_seconds=10
    )
    shadow = iotshadow.IotShadowClientV2(dev.client, options)
    updated = shadow.update_shadow(
        iotshadow.UpdateShadowRequest(thing_name=thing, state=iotshadow.ShadowState(reported={"fw": "1.2"}))
    ).result(15)
    assert updated.state.reported == {"fw": "1.2"} and updated.version == 1
    got = shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=thing)).result(15)
    assert got.state.reported == {"fw": "1.2"}
    dev.stop()
