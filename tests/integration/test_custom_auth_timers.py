"""A custom authorizer's timers with a real client: refreshAfterInSeconds re-invokes the function and applies its new
policies to the live connection; disconnectAfterInSeconds closes it. AWS's minimum for both is 300 s, so the gateway
runs in this process and the test moves the sweeper's clock forward instead of waiting."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from test_api_iot import client
from test_lambda import create

from gateway.app import Gateway
from gateway.config import Config

KEY, SECRET = "AKIAEDGESIMTIMERS001", "timersSECRETexample"

# Each call counts itself in a file; the first answer lets the device publish under dev/, later ones under moved/.
AUTHORIZER = """
import json, os

def handler(event, context):
    path = os.environ['CALLS_FILE']
    calls = int(open(path).read() or 0) + 1 if os.path.exists(path) else 1
    open(path, 'w').write(str(calls))
    prefix = 'dev' if calls == 1 else 'moved'
    arn = 'arn:aws:iot:us-east-1:123456789012:'
    policy = {'Version': '2012-10-17', 'Statement': [
        {'Effect': 'Allow', 'Action': 'iot:Connect', 'Resource': arn + 'client/*'},
        {'Effect': 'Allow', 'Action': 'iot:Publish', 'Resource': arn + 'topic/' + prefix + '/*'}]}
    return {'isAuthenticated': True, 'principalId': 'timers', 'disconnectAfterInSeconds': 3600,
            'refreshAfterInSeconds': 300, 'policyDocuments': [json.dumps(policy)]}
"""


@dataclass
class Running:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    ports: dict[str, int]
    ca_file: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("timers")
    config = Config(
        host="127.0.0.1",
        mqtts_port=0,
        wss_port=None,
        https_port=None,
        api_port=0,
        alpn_port=0,
        data_dir=home / "data",
        certs_dir=home / "certs",
        sigv4_credentials={KEY: SECRET},
    )
    quiet = logging.getLogger("edgesim")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the gateway's thread logs outside the test's capture
    loop = asyncio.new_event_loop()
    up = threading.Event()
    stop = asyncio.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with Gateway(config) as gw:
            holder["gw"] = gw
            up.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # reported to the test below
            holder["error"] = exc
            up.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    assert up.wait(30) and "error" not in holder, holder.get("error")
    gw: Gateway = holder["gw"]
    yield Running(gw, loop, dict(gw.ports), config.certs_dir / "root-ca.pem")
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()
    quiet.setLevel(level)


def sweep_at(running: Running, seconds_ahead: float) -> None:
    """Run the custom-auth sweeper as if `seconds_ahead` had passed."""
    done = threading.Event()

    def sweep() -> None:
        running.gateway.auth.hook.sweep(running.loop.time() + seconds_ahead)
        done.set()

    running.loop.call_soon_threadsafe(sweep)
    assert done.wait(10)


class Device:
    """paho MQTT 5 on the ALPN port, ALPN `mqtt`, no certificate: a custom-authorizer device."""

    def __init__(self, running: Running, authorizer: str) -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"t{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        ctx = ssl.create_default_context(cafile=str(running.ca_file))
        ctx.set_alpn_protocols(["mqtt"])
        self.client.tls_set_context(ctx)
        self.client.username_pw_set(f"device?x-amz-customauthorizer-name={authorizer}", "pw")
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.disconnect_reason: ReasonCode | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.acked = threading.Condition()

        def on_connect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            if not rc.is_failure:
                self.connected.set()

        def on_disconnect(c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
            self.disconnect_reason = rc
            self.disconnected.set()

        def on_publish(c: Any, u: Any, mid: int, rc: ReasonCode, props: Any) -> None:
            with self.acked:
                self.acks[mid] = rc
                self.acked.notify_all()

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_publish = on_publish
        self.client.connect("127.0.0.1", running.ports["alpn"], keepalive=30, properties=Properties(1))
        self.client.loop_start()
        assert self.connected.wait(20), "the custom-authorizer device did not connect"

    def publish(self, topic: str) -> ReasonCode:
        info = self.client.publish(topic, b"x", qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, 10), f"no PUBACK for {topic}"
            return self.acks[info.mid]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def authorizer(running: Running, tmp_path_factory: pytest.TempPathFactory) -> str:
    calls = tmp_path_factory.mktemp("calls") / "calls.txt"
    lam = client(running, "lambda", KEY, SECRET)  # type: ignore[arg-type]
    arn = create(lam, "timers-auth", AUTHORIZER, Environment={"Variables": {"CALLS_FILE": str(calls)}})
    iot = client(running, "iot", KEY, SECRET)  # type: ignore[arg-type]
    iot.create_authorizer(authorizerName="Timers", authorizerFunctionArn=arn["FunctionArn"], signingDisabled=True)
    return "Timers"


def test_refresh_applies_the_functions_new_policies_to_the_live_connection(running: Running, authorizer: str) -> None:
    device = Device(running, authorizer)
    try:
        assert not device.publish("dev/a").is_failure
        assert device.publish("moved/a").value == 0x87  # not authorized yet
        sweep_at(running, 299)  # not due: nothing changes
        assert not device.publish("dev/b").is_failure
        sweep_at(running, 301)  # the refresh: the function runs again and answers with the moved/ policy
        deadline = time.monotonic() + 20
        while device.publish("moved/b").is_failure:
            assert time.monotonic() < deadline, "the refreshed policy was never applied"
            time.sleep(0.1)
        assert device.publish("dev/c").value == 0x87  # the old policy is gone, and the connection stays up
        assert not device.disconnected.is_set()
    finally:
        device.stop()


def test_disconnect_after_closes_the_connection_with_maximum_connect_time(running: Running, authorizer: str) -> None:
    device = Device(running, authorizer)
    try:
        sweep_at(running, 3601)
        assert device.disconnected.wait(10), "the connection outlived disconnectAfterInSeconds"
        assert device.disconnect_reason is not None and device.disconnect_reason.value == 0xA0
    finally:
        device.client.loop_stop()
