"""mqttwire.client.AsyncMqttClient against real brokers: the edgesim gateway over mTLS, and mosquitto over TCP."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Creds, GatewayProcess, allow_all_policy

from mqttwire import codec
from mqttwire import properties as mp
from mqttwire.client import (
    MAX_INFLIGHT,
    AsyncMqttClient,
    ConnectError,
    Message,
    MqttError,
    PublishError,
    publish_properties,
)
from mqttwire.frame import split_packets
from mqttwire.packets import V5, Connack, Connect, Disconnect, Publish

HOST = "127.0.0.1"
ARN = "arn:aws:iot:us-east-1:123456789012:"


class Inbox:
    """An on_message callback that keeps what arrives and lets a scenario wait for a count."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Message]:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.sleep(0.3)  # anything beyond `count` (duplicates) would arrive now
        return self.messages


def tls(creds: Creds) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(creds.ca))
    context.load_cert_chain(str(creds.cert), str(creds.key))
    return context


def mtls_client(
    gw: GatewayProcess,
    creds: Creds,
    client_id: str | None = None,
    *,
    on_message: Callable[[Message], None] | None = None,
    on_connection_lost: Callable[[], None] | None = None,
    **options: Any,
) -> AsyncMqttClient:
    return AsyncMqttClient(
        client_id or creds.thing,
        HOST,
        gw.ports["mqtts"],
        ssl_context=tls(creds),
        on_message=on_message,
        on_connection_lost=on_connection_lost,
        **options,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- edgesim gateway over mTLS


def test_round_trip_qos1_and_qos0_with_own_subscription(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())

    async def scenario() -> None:
        inbox = Inbox()
        client = mtls_client(gateway, creds, on_message=inbox)
        await client.connect()
        try:
            assert client.connected
            assert await client.subscribe([(f"own/{unique}/#", 1), (f"own0/{unique}", 0)]) == [1, 0]
            acks = [client.publish(f"own/{unique}/q1", b"one", qos=1), client.publish(f"own/{unique}/q0", b"zero")]
            assert client.pending == 1  # the QoS 1 publish until its PUBACK; QoS 0 is done once written
            assert acks[1].done() and not acks[0].done()
            await asyncio.wait_for(asyncio.gather(*acks), 5)
            assert client.pending == 0
            got = await inbox.wait_for(2)
            assert sorted(got, key=lambda m: m.topic) == [
                Message(f"own/{unique}/q0", b"zero", 0, False),
                Message(f"own/{unique}/q1", b"one", 1, False),
            ]
        finally:
            await client.disconnect()
        assert not client.connected

    asyncio.run(scenario())


def test_200_clients_on_one_loop_get_2000_pubacks_and_a_wildcard_subscriber_gets_all(
    gateway: GatewayProcess, unique: str
) -> None:
    fleet = gateway.provision(f"fleet-{unique}", allow_all_policy())
    watcher_creds = gateway.provision(f"watch-{unique}", allow_all_policy())

    async def scenario() -> None:
        inbox = Inbox()
        watcher = mtls_client(gateway, watcher_creds, on_message=inbox)
        context = tls(fleet)  # one SSLContext shared by every device
        clients = [
            AsyncMqttClient(f"fleet-{unique}-{i}", HOST, gateway.ports["mqtts"], ssl_context=context)
            for i in range(200)
        ]
        try:
            await watcher.connect()
            assert await watcher.subscribe([(f"fleet/{unique}/#", 1)]) == [1]
            results = await asyncio.gather(*(c.connect(timeout=30) for c in clients), return_exceptions=True)
            assert [r for r in results if r is not None] == []
            acks = [
                c.publish(f"fleet/{unique}/{i}", str(n).encode(), qos=1)
                for i, c in enumerate(clients)
                for n in range(10)
            ]
            await asyncio.wait_for(asyncio.gather(*acks), 60)
            assert sum(c.pending for c in clients) == 0
            got = await inbox.wait_for(2000, within=60)
            assert len(got) == 2000
            assert {(m.topic, m.payload) for m in got} == {
                (f"fleet/{unique}/{i}", str(n).encode()) for i in range(200) for n in range(10)
            }
        finally:
            await asyncio.gather(*(c.disconnect() for c in clients), watcher.disconnect())
        assert not any(c.connected for c in clients)

    asyncio.run(scenario())


def test_refusals_raise_and_the_same_object_connects_once_allowed(gateway: GatewayProcess, unique: str) -> None:
    scoped: dict[str, object] = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": ARN + f"client/dev-{unique}"}],
    }
    creds = gateway.provision(f"dev-{unique}", scoped)
    inactive = gateway.provision(f"off-{unique}", allow_all_policy(), active=False)

    async def scenario() -> None:
        # A client id the policy does not allow: the gateway closes the socket without CONNACK (AWS behaviour).
        with pytest.raises(MqttError, match="before CONNACK"):
            await mtls_client(gateway, creds, f"someone-{unique}").connect(timeout=5)
        # An invalid client id gets a real CONNACK refusal: identifier rejected.
        with pytest.raises(ConnectError) as refused:
            await mtls_client(gateway, creds, f"$bad-{unique}").connect(timeout=5)
        assert refused.value.rc == 2
        assert "identifier rejected" in str(refused.value)
        client = mtls_client(gateway, inactive)
        with pytest.raises(MqttError):
            await client.connect(timeout=5)
        assert not client.connected
        with gateway.registry() as reg:
            reg.update_certificate(inactive.certificate_id, "ACTIVE")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while True:  # the gateway sees registry changes within a second
            try:
                await client.connect(timeout=5)
                break
            except MqttError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        await asyncio.wait_for(client.publish(f"on/{unique}", b"1", qos=1), 5)
        await client.disconnect()

    asyncio.run(scenario())


def test_abort_is_an_unclean_disconnect_and_the_client_reconnects(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())
    watcher_creds = gateway.provision(f"watch-{unique}", allow_all_policy())

    async def scenario() -> None:
        events = Inbox()
        lost: list[bool] = []
        watcher = mtls_client(gateway, watcher_creds, on_message=events)
        client = mtls_client(gateway, creds, on_connection_lost=lambda: lost.append(True))
        await watcher.connect()
        try:
            await watcher.subscribe([(f"$aws/events/presence/disconnected/{creds.thing}", 1)])
            await client.connect()
            pending = [client.publish(f"x/{unique}", b"%d" % n, qos=1) for n in range(5)]
            client.abort()
            assert not client.connected
            for future in pending:
                with pytest.raises(MqttError):
                    await asyncio.wait_for(future, 5)
            assert client.pending == 0
            [event] = await events.wait_for(1)
            body = json.loads(event.payload)
            assert (body["clientInitiatedDisconnect"], body["disconnectReason"]) == (False, "CONNECTION_LOST")

            await client.connect()
            await asyncio.wait_for(client.publish(f"x/{unique}", b"again", qos=1), 5)
            await client.disconnect()
            first, second = await events.wait_for(2)
            assert first is event
            assert json.loads(second.payload)["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
            assert lost == []  # both ends were our own doing
        finally:
            await client.disconnect()
            await watcher.disconnect()

    asyncio.run(scenario())


def test_connection_dropped_by_broker_fails_pending_and_reports_loss(gateway: GatewayProcess, unique: str) -> None:
    policy: dict[str, object] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": ARN + f"topic/ok/{unique}"},
        ],
    }
    creds = gateway.provision(f"dev-{unique}", policy)

    async def scenario() -> None:
        lost = asyncio.Event()
        client = mtls_client(gateway, creds, on_connection_lost=lost.set)
        await client.connect()
        await asyncio.wait_for(client.publish(f"ok/{unique}", b"fine", qos=1), 5)
        # A denied publish makes the gateway close the connection (MQTT 3.1.1 on AWS), with our publishes in flight.
        doomed = [client.publish(f"denied/{unique}", b"%d" % n, qos=1) for n in range(3)]
        await asyncio.wait_for(lost.wait(), 5)
        assert not client.connected
        for future in doomed:
            with pytest.raises(MqttError, match="connection lost"):
                await future
        assert client.pending == 0
        with pytest.raises(MqttError, match="not connected"):
            await client.publish(f"ok/{unique}", b"late", qos=1)
        await client.connect()  # reconnect after an unexpected loss
        await asyncio.wait_for(client.publish(f"ok/{unique}", b"back", qos=1), 5)
        await client.disconnect()

    asyncio.run(scenario())


def test_reconnect_after_disconnect_and_no_double_connect(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"dev-{unique}", allow_all_policy())

    async def scenario() -> None:
        inbox = Inbox()
        client = mtls_client(gateway, creds, on_message=inbox)
        for round_ in range(3):
            await client.connect()
            with pytest.raises(MqttError, match="already connected"):
                await client.connect()
            assert await client.subscribe([(f"r/{unique}", 1)]) == [1]
            await asyncio.wait_for(client.publish(f"r/{unique}", b"%d" % round_, qos=1), 5)
            await inbox.wait_for(round_ + 1)
            await client.disconnect()
            assert not client.connected
        assert [m.payload for m in inbox.messages] == [b"0", b"1", b"2"]

    asyncio.run(scenario())


def test_connect_failures_without_a_broker_raise_mqtt_error() -> None:
    async def scenario() -> None:
        with pytest.raises(MqttError, match="cannot connect"):
            await AsyncMqttClient("nobody", HOST, free_port()).connect(timeout=2)
        # A peer that accepts TCP but never answers CONNECT.
        with socket.socket() as silent:
            silent.bind((HOST, 0))
            silent.listen()
            client = AsyncMqttClient("silent", HOST, silent.getsockname()[1])
            with pytest.raises(MqttError, match=r"timed out after 0\.5s"):
                await client.connect(timeout=0.5)
            assert not client.connected

        # TLS against that peer: the handshake never ends; the timeout abandons it and leaves nothing running.
        with socket.socket() as silent:
            silent.bind((HOST, 0))
            silent.listen()
            client = AsyncMqttClient("tls", HOST, silent.getsockname()[1], ssl_context=ssl.create_default_context())
            for _ in range(2):
                with pytest.raises(MqttError, match=r"timed out after 0\.5s"):
                    await client.connect(timeout=0.5)
                assert not client.connected
        await asyncio.sleep(0.1)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


# ---------------------------------------------------------------- MQTT 5 against the edgesim gateway over mTLS

FULL_PROPERTIES = publish_properties(
    user_properties=[("unit", "C"), ("unit", "K"), ("site", "lab")],
    content_type="application/json",
    response_topic="reply/here",
    correlation_data=b"\x00\x01req",
    message_expiry=120,
    payload_format=1,
)


def test_v5_connect_properties_and_publish_properties_both_ways(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"v5-{unique}", allow_all_policy())
    watcher_creds = gateway.provision(f"w5-{unique}", allow_all_policy())

    async def scenario() -> None:
        inbox = Inbox()
        watcher = mtls_client(gateway, watcher_creds, on_message=inbox, protocol=5)
        client = mtls_client(gateway, creds, protocol=5, session_expiry=60, receive_maximum=20,
                             user_properties=[("fw", "1.2")])  # fmt: skip
        async with watcher, client:
            assert client.connack_properties[mp.TOPIC_ALIAS_MAXIMUM] == 8  # AWS's quota
            assert client.connack_properties[mp.MAXIMUM_QOS] == 1
            assert client.connack_properties.get(mp.SESSION_EXPIRY_INTERVAL, 60) == 60
            assert await watcher.subscribe([(f"v5/{unique}/#", 1)]) == [1]
            await asyncio.wait_for(client.publish(f"v5/{unique}/a", b'{"t":1}', 1, properties=FULL_PROPERTIES), 5)
            encoded = mp.encode_properties(publish_properties(user_properties=[("k", "v")]))
            await asyncio.wait_for(client.publish(f"v5/{unique}/b", b"pre", 0, properties=encoded), 5)
            first, second = await inbox.wait_for(2)
        assert (first.topic, first.payload, first.qos) == (f"v5/{unique}/a", b'{"t":1}', 1)
        assert first.user_properties == [("unit", "C"), ("unit", "K"), ("site", "lab")]
        props = first.properties or {}
        assert props[mp.CONTENT_TYPE] == "application/json" and props[mp.RESPONSE_TOPIC] == "reply/here"
        assert props[mp.CORRELATION_DATA] == b"\x00\x01req" and props[mp.PAYLOAD_FORMAT_INDICATOR] == 1
        assert 0 < props[mp.MESSAGE_EXPIRY_INTERVAL] <= 120
        assert (second.topic, second.payload, second.user_properties) == (f"v5/{unique}/b", b"pre", [("k", "v")])

    asyncio.run(scenario())


def test_v5_topic_aliases_up_to_the_servers_maximum_keep_every_topic_right(
    gateway: GatewayProcess, unique: str
) -> None:
    creds = gateway.provision(f"al-{unique}", allow_all_policy())
    watcher_creds = gateway.provision(f"aw-{unique}", allow_all_policy())

    async def scenario() -> None:
        inbox = Inbox()
        watcher = mtls_client(gateway, watcher_creds, on_message=inbox)  # a 3.1.1 subscriber on the same topics
        client = mtls_client(gateway, creds, protocol=5)
        async with watcher, client:
            assert client.topic_alias_maximum == 8
            await watcher.subscribe([(f"al/{unique}/#", 1)])
            # 12 topics, 3 rounds: 8 go by alias from their second message on, 4 always by name; QoS 0 and 1 mixed.
            sent = [(f"al/{unique}/{t}", b"%d-%d" % (t, r), r % 2) for r in range(3) for t in range(12)]
            acks = [client.publish(topic, payload, qos) for topic, payload, qos in sent]
            await asyncio.wait_for(asyncio.gather(*acks), 10)
            got = await inbox.wait_for(len(sent))
            assert client.connected  # a wrong alias would have been a protocol error: DISCONNECT
        assert sorted((m.topic, m.payload) for m in got) == sorted((t, p) for t, p, _ in sent)

    asyncio.run(scenario())


def test_v5_refusals_are_reason_codes_and_the_connection_stays(gateway: GatewayProcess, unique: str) -> None:
    policy: dict[str, object] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": ARN + f"topic/ok/{unique}"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": ARN + f"topicfilter/ok/{unique}"},
        ],
    }
    creds = gateway.provision(f"rf-{unique}", policy)

    async def scenario() -> None:
        lost: list[bool] = []
        client = mtls_client(gateway, creds, protocol=5, on_connection_lost=lambda: lost.append(True))
        async with client:
            assert await client.subscribe([(f"ok/{unique}", 1), (f"denied/{unique}", 1)]) == [1, 0x87]
            with pytest.raises(PublishError, match=r"Not authorized \(0x87\)") as refused:
                await asyncio.wait_for(client.publish(f"denied/{unique}", b"x", qos=1), 5)
            assert refused.value.reason_code == 0x87
            assert client.connected and client.pending == 0
            await asyncio.wait_for(client.publish(f"ok/{unique}", b"fine", qos=1), 5)
        assert lost == []
        with pytest.raises(ConnectError) as bad:
            await mtls_client(gateway, creds, f"$bad-{unique}", protocol=5).connect(timeout=5)
        assert bad.value.rc == 0x85 and "Client identifier not valid" in str(bad.value)

    asyncio.run(scenario())


def test_v5_server_disconnect_reason_and_session_resume(gateway: GatewayProcess, unique: str) -> None:
    creds = gateway.provision(f"sd-{unique}", allow_all_policy())
    other = gateway.provision(f"so-{unique}", allow_all_policy())

    async def scenario() -> None:
        lost = asyncio.Event()
        first = mtls_client(
            gateway, creds, protocol=5, session_expiry=300, clean_start=False, on_connection_lost=lost.set
        )
        await first.connect()
        assert not first.session_present
        await first.subscribe([(f"sd/{unique}", 1)])
        second = mtls_client(gateway, creds, protocol=5, session_expiry=300, clean_start=False)
        await second.connect()  # same client id: the first is taken over
        await asyncio.wait_for(lost.wait(), 5)
        assert not first.connected
        assert first.disconnect_reason == 0x8E  # Session taken over
        with pytest.raises(MqttError, match="not connected"):
            await first.publish(f"sd/{unique}", b"late", qos=1)
        assert second.session_present  # the session, its subscription with it, moved to the new connection
        await second.disconnect()
        async with mtls_client(gateway, other, protocol=5) as publisher:
            await asyncio.wait_for(publisher.publish(f"sd/{unique}", b"while away", qos=1), 5)
        inbox = Inbox()
        third = mtls_client(gateway, creds, protocol=5, session_expiry=300, clean_start=False, on_message=inbox)
        async with third:
            assert third.session_present
            [message] = await inbox.wait_for(1)
            assert (message.topic, message.payload) == (f"sd/{unique}", b"while away")
            await third.disconnect(session_expiry=0)  # end the session with this connection

    asyncio.run(scenario())


# ---------------------------------------------------------------- mosquitto over plain TCP


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A mosquitto broker: (open port, port whose listener refuses anonymous clients)."""
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.skip("mosquitto is not installed")
    open_port, closed_port = free_port(), free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "per_listener_settings true\n"
        f"listener {open_port} {HOST}\nallow_anonymous true\n"
        f"listener {closed_port} {HOST}\nallow_anonymous false\n"
    )
    with open(tmp_path / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((HOST, closed_port), timeout=1).close()
                    socket.create_connection((HOST, open_port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "mosquitto did not start: " + (tmp_path / "mosquitto.log").read_text()
                        ) from None
                    time.sleep(0.05)
            yield open_port, closed_port
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_mosquitto_qos1_round_trip_over_plain_tcp(mosquitto: tuple[int, int], unique: str) -> None:
    port, _ = mosquitto

    async def scenario() -> None:
        inbox = Inbox()
        subscriber = AsyncMqttClient(f"sub-{unique}", HOST, port, on_message=inbox)
        publisher = AsyncMqttClient(f"pub-{unique}", HOST, port)
        async with subscriber, publisher:
            assert await subscriber.subscribe([(f"m/{unique}/+", 1), (f"m0/{unique}", 0)]) == [1, 0]
            await asyncio.wait_for(publisher.publish(f"m/{unique}/a", b"hello", qos=1), 5)
            assert await inbox.wait_for(1) == [Message(f"m/{unique}/a", b"hello", 1, False)]
        assert not subscriber.connected and not publisher.connected

    asyncio.run(scenario())


@pytest.mark.slow
def test_mosquitto_keepalive_pings_keep_an_idle_connection_open(mosquitto: tuple[int, int], unique: str) -> None:
    port, _ = mosquitto

    async def scenario() -> None:
        lost: list[bool] = []
        # mosquitto drops a client silent for 1.5 x keep-alive (checked every few seconds); only the ticker prevents it.
        client = AsyncMqttClient(
            f"idle-{unique}", HOST, port, keepalive=3, on_connection_lost=lambda: lost.append(True)
        )
        await client.connect()
        await asyncio.sleep(10.5)
        assert client.connected
        assert lost == []
        await asyncio.wait_for(client.publish(f"idle/{unique}", b"still here", qos=1), 5)
        await client.disconnect()
        await asyncio.sleep(1.2)  # the keep-alive task ends once its loop has no live client
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_mosquitto_refusal_is_a_connect_error_with_the_connack_code(mosquitto: tuple[int, int], unique: str) -> None:
    _, closed_port = mosquitto

    async def scenario() -> None:
        client = AsyncMqttClient(f"anon-{unique}", HOST, closed_port)
        with pytest.raises(ConnectError) as refused:
            await client.connect(timeout=5)
        assert refused.value.rc == 5
        assert not client.connected

    asyncio.run(scenario())


def test_mosquitto_a_burst_beyond_the_inflight_window_arrives_complete_and_in_order(
    mosquitto: tuple[int, int], unique: str
) -> None:
    port, _ = mosquitto
    count = MAX_INFLIGHT * 5 + 7

    async def scenario() -> None:
        inbox = Inbox()
        subscriber = AsyncMqttClient(f"sub-{unique}", HOST, port, on_message=inbox)
        publisher = AsyncMqttClient(f"pub-{unique}", HOST, port)
        async with subscriber, publisher:
            await subscriber.subscribe([(f"burst/{unique}", 1)])
            acks = [publisher.publish(f"burst/{unique}", b"%d" % n, qos=1) for n in range(count)]
            assert publisher.pending == count
            await asyncio.wait_for(publisher.room(), 20)  # the fleet's backpressure: below the in-flight window
            assert publisher.pending < MAX_INFLIGHT
            await asyncio.wait_for(asyncio.gather(*acks), 20)
            assert publisher.pending == 0
            got = await inbox.wait_for(count)
            assert [m.payload for m in got] == [b"%d" % n for n in range(count)]

    asyncio.run(scenario())


# ---------------------------------------------------------------- a scripted broker: what real ones rarely do


async def scripted_broker(answer_first_packet: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    """Accepts clients, answers CONNECT with CONNACK and the client's next packet with `answer_first_packet` (b"": no
    answer), then records whatever the client sends."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(1024))  # CONNECT
        writer.write(b"\x20\x02\x00\x00")
        first = await reader.read(1024)
        received.append(first)
        writer.write(answer_first_packet)
        while chunk := await reader.read(1024):
            received.append(chunk)
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    return server, server.sockets[0].getsockname()[1], received


def test_garbage_from_the_broker_drops_the_connection_and_fails_pending_publishes() -> None:
    async def scenario() -> None:
        # CONNECT is a packet no broker sends to a client.
        server, port, _ = await scripted_broker(b"\x10\x00")
        async with server:
            lost = asyncio.Event()
            client = AsyncMqttClient("victim", HOST, port, on_connection_lost=lost.set)
            await client.connect(timeout=5)
            pending = client.publish("t", b"x", qos=1)
            await asyncio.wait_for(lost.wait(), 5)
            assert not client.connected and client.pending == 0
            with pytest.raises(MqttError, match="protocol error: unexpected packet type 1"):
                await pending

    asyncio.run(scenario())


def test_a_broker_that_stops_answering_pings_is_a_lost_connection() -> None:
    async def scenario() -> None:
        server, port, received = await scripted_broker(b"")  # never a PINGRESP
        async with server:
            lost = asyncio.Event()
            client = AsyncMqttClient("pinger", HOST, port, keepalive=2, on_connection_lost=lost.set)
            await client.connect(timeout=5)
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(lost.wait(), 10)
            waited = asyncio.get_running_loop().time() - started
            assert received[1] == b"\xc0\x00"  # PINGREQ after about a second of silence
            assert 2.0 <= waited <= 5.0
            assert not client.connected

    asyncio.run(scenario())


def test_mosquitto_v5_properties_aliases_and_refusal(mosquitto: tuple[int, int], unique: str) -> None:
    port, closed_port = mosquitto

    async def scenario() -> None:
        inbox = Inbox()
        subscriber = AsyncMqttClient(f"sub5-{unique}", HOST, port, on_message=inbox, protocol=5)
        publisher = AsyncMqttClient(f"pub5-{unique}", HOST, port, protocol=5, session_expiry=30)
        async with subscriber, publisher:
            assert publisher.topic_alias_maximum == 10  # mosquitto's default max_topic_alias
            assert await subscriber.subscribe([(f"m5/{unique}/+", 1)]) == [1]
            for n in range(3):
                await asyncio.wait_for(publisher.publish(f"m5/{unique}/a", b"%d" % n, 1, properties=FULL_PROPERTIES), 5)
            got = await inbox.wait_for(3)
            assert [(m.topic, m.payload) for m in got] == [(f"m5/{unique}/a", b"%d" % n) for n in range(3)]
            assert all(m.user_properties == [("unit", "C"), ("unit", "K"), ("site", "lab")] for m in got)
            assert (got[2].properties or {})[mp.CORRELATION_DATA] == b"\x00\x01req"
        with pytest.raises(ConnectError) as refused:
            await AsyncMqttClient(f"anon5-{unique}", HOST, closed_port, protocol=5).connect(timeout=5)
        assert refused.value.rc >= 0x80 and "CONNACK reason" in str(refused.value)

    asyncio.run(scenario())


async def v5_broker(connack_props: dict[int, Any], answers: list[bytes]) -> tuple[asyncio.Server, int, bytearray]:
    """A scripted MQTT 5 broker: CONNACK with `connack_props`, then `answers` one per packet received after CONNECT;
    keeps every byte the client sent."""
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = list(answers)
        first = True
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
                if first:
                    writer.write(codec.encode(Connack(False, 0, connack_props), V5))
                    first = False
                elif pending:
                    writer.write(pending.pop(0))
        except ConnectionError:
            pass  # the client aborted
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    return server, server.sockets[0].getsockname()[1], received


def test_v5_aliases_on_the_wire_and_only_up_to_the_maximum() -> None:
    async def scenario() -> None:
        server, port, received = await v5_broker({mp.TOPIC_ALIAS_MAXIMUM: 2}, [])
        async with server:
            client = AsyncMqttClient("aliaser", HOST, port, protocol=5, session_expiry=600, receive_maximum=50,
                                     user_properties=[("model", "x1")], clean_start=False, keepalive=30)  # fmt: skip
            await client.connect(timeout=5)
            for topic in ("a/1", "a/1", "b/2", "c/3", "b/2", "c/3"):
                client.publish(topic, b"x")
            await asyncio.sleep(0.2)
            client.abort()
        connect, *packets = [codec.decode(first, body, V5) for first, body in split_packets(bytearray(received))]
        assert isinstance(connect, Connect)
        assert (connect.protocol_level, connect.clean_start, connect.keep_alive) == (5, False, 30)
        assert connect.properties == {
            mp.SESSION_EXPIRY_INTERVAL: 600, mp.RECEIVE_MAXIMUM: 50, mp.USER_PROPERTY: [("model", "x1")],
        }  # fmt: skip
        seen = [(p.topic, (p.properties or {}).get(mp.TOPIC_ALIAS)) for p in packets if isinstance(p, Publish)]
        assert seen == [("a/1", 1), ("", 1), ("b/2", 2), ("c/3", None), ("", 2), ("c/3", None)]

    asyncio.run(scenario())


def test_v5_server_disconnect_fails_pending_publishes_with_its_reason() -> None:
    async def scenario() -> None:
        goodbye = codec.encode(Disconnect(0x98, {mp.REASON_STRING: "certificate revoked"}), V5)
        server, port, _ = await v5_broker({}, [goodbye])
        async with server:
            lost = asyncio.Event()
            client = AsyncMqttClient("victim5", HOST, port, protocol=5, on_connection_lost=lost.set)
            await client.connect(timeout=5)
            pending = client.publish("t", b"x", qos=1)
            await asyncio.wait_for(lost.wait(), 5)
            with pytest.raises(MqttError, match=r"Administrative action \(0x98\): certificate revoked") as why:
                await pending
            assert why.value.reason_code == 0x98
            assert (client.disconnect_reason, client.disconnect_reason_string) == (0x98, "certificate revoked")
            assert not client.connected

    asyncio.run(scenario())


def test_v5_refused_puback_fails_only_its_publish() -> None:
    async def scenario() -> None:
        refusal = codec.puback(1, 0x97, "quota")  # Quota exceeded for the first publish (packet id 1)
        server, port, _ = await v5_broker({}, [refusal + codec.puback(2)])
        async with server:
            client = AsyncMqttClient("quota", HOST, port, protocol=5)
            await client.connect(timeout=5)
            first, second = client.publish("t", b"1", qos=1), client.publish("t", b"2", qos=1)
            await asyncio.wait_for(asyncio.wait([first, second]), 5)
            error = first.exception()
            assert isinstance(error, PublishError) and error.reason_code == 0x97 and "quota" in str(error)
            assert second.result() is None and client.connected and client.pending == 0
            client.abort()

    asyncio.run(scenario())


def test_v5_receive_maximum_bounds_the_window_and_queued_publishes_carry_their_topic() -> None:
    async def scenario() -> None:
        acks = [codec.puback(1), codec.puback(2), codec.puback(3)]
        server, port, received = await v5_broker({mp.TOPIC_ALIAS_MAXIMUM: 1, mp.RECEIVE_MAXIMUM: 1}, acks)
        async with server:
            client = AsyncMqttClient("windowed", HOST, port, protocol=5)
            await client.connect(timeout=5)
            sent = [client.publish("q/1", b"%d" % n, qos=1) for n in range(3)]
            sent.append(client.publish("q/1", b"zero", qos=0))  # goes now, by alias, past the queued two
            await asyncio.wait_for(asyncio.gather(*sent), 5)
            client.abort()
        packets = [codec.decode(first, body, V5) for first, body in split_packets(bytearray(received))][1:]
        seen = [
            (p.topic, p.payload, (p.properties or {}).get(mp.TOPIC_ALIAS)) for p in packets if isinstance(p, Publish)
        ]
        assert seen == [("q/1", b"0", 1), ("", b"zero", 1), ("q/1", b"1", None), ("q/1", b"2", None)]

    asyncio.run(scenario())
