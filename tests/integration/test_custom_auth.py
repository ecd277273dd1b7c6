"""Custom authorizers and SigV4 WebSockets with real clients: boto3 for the control plane, paho with username/password
custom auth on the ALPN port and with a SigV4-presigned WebSocket URL, the Device SDK v2's custom-authorizer and
websocket builders as its samples use them. Bad input: forged signatures, expired tokens, a function that raises,
hangs or answers garbage."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as paho
import pytest
from botocore.exceptions import ClientError
from conftest import GatewayProcess
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from test_api_iot import client
from test_lambda import create

KEY, SECRET = "AKIAEDGESIMEXAMPLE01", "wJalrXUtnFEMIexampleSECRET"
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)

# The authorizer function: a token "allow-<expiry epoch>" is good until its expiry; a password "pw" too. Its policy
# lets the client publish and subscribe under its own client id only.
AUTHORIZER = """
import json, time, base64

def handler(event, context):
    token = event.get('token') or ''
    mqtt = event.get('protocolData', {}).get('mqtt', {})
    password = base64.b64decode(mqtt.get('password', '')).decode() if mqtt.get('password') else ''
    ok = password == 'pw' or (token.startswith('allow-') and int(token.split('-')[1]) > time.time())
    arn = 'arn:aws:iot:us-east-1:123456789012:'
    policy = {'Version': '2012-10-17', 'Statement': [
        {'Effect': 'Allow', 'Action': 'iot:Connect', 'Resource': arn + 'client/*'},
        {'Effect': 'Allow', 'Action': ['iot:Publish', 'iot:Receive'], 'Resource': arn + 'topic/dev/${iot:ClientId}/*'},
        {'Effect': 'Allow', 'Action': 'iot:Subscribe', 'Resource': arn + 'topicfilter/dev/${iot:ClientId}/*'},
        {'Effect': 'Allow', 'Action': 'iot:Publish', 'Resource': arn + 'topic/http/*'}]}
    return {'isAuthenticated': ok, 'principalId': 'device1', 'disconnectAfterInSeconds': 3600,
            'refreshAfterInSeconds': 600, 'policyDocuments': [json.dumps(policy)]}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        tmp_path_factory.mktemp("customauth"),
        extra_args=["--alpn-port", "0", "--require-sigv4", f"{KEY}:{SECRET}", "--insecure-port", "0"],
    ).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def iot(gw: GatewayProcess) -> Any:
    return client(gw, "iot", KEY, SECRET)


@pytest.fixture(scope="module")
def authorizers(gw: GatewayProcess, iot: Any) -> dict[str, str]:
    """Authorizers: signed (token key 'token'), unsigned, and three whose functions raise, hang and answer garbage."""
    lam = client(gw, "lambda", KEY, SECRET)
    sources = {
        "good": AUTHORIZER,
        "raises": "def handler(event, context):\n    raise RuntimeError('boom')\n",
        "hangs": "import time\n\ndef handler(event, context):\n    time.sleep(30)\n",
        "garbage": "def handler(event, context):\n    return {'isAuthenticated': 'yes', 'principalId': '!!'}\n",
    }
    arns = {}
    for name, source in sources.items():
        arns[name] = create(lam, f"auth-{name}", source, Timeout=30)["FunctionArn"]
    iot.create_authorizer(authorizerName="Signed", authorizerFunctionArn=arns["good"], tokenKeyName="token",
                          tokenSigningPublicKeys={"key1": PUBLIC_PEM}, status="ACTIVE")  # fmt: skip
    iot.create_authorizer(authorizerName="Unsigned", authorizerFunctionArn=arns["good"], signingDisabled=True)
    for name in ("raises", "hangs", "garbage"):
        iot.create_authorizer(authorizerName=name, authorizerFunctionArn=arns[name], signingDisabled=True)
    return arns


def sign(token: str) -> str:
    return base64.b64encode(PRIVATE.sign(token.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def good_token() -> str:
    return f"allow-{int(time.time()) + 600}"


class Paho:
    """paho over TLS on the ALPN port with ALPN `mqtt` and no client certificate (custom authentication)."""

    def __init__(self, gw: GatewayProcess, username: str, password: str | None, client_id: str | None = None) -> None:
        self.client_id = client_id or f"c{uuid.uuid4().hex[:10]}"
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        ctx = ssl.create_default_context(cafile=str(gw.ca_file))
        ctx.set_alpn_protocols(["mqtt"])
        self.client.tls_set_context(ctx)
        self.client.username_pw_set(username, password)
        self.result: list[Any] = []
        self.done = threading.Event()
        self.messages: list[Any] = []

        def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            self.result.append(rc)
            self.done.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *a: self.done.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.connect("127.0.0.1", gw.ports["alpn"], keepalive=30)
        self.client.loop_start()

    def outcome(self) -> Any:
        assert self.done.wait(15), "no CONNACK and no disconnect"
        return self.result[0] if self.result else "closed"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connected(outcome: Any) -> bool:
    return outcome != "closed" and not getattr(outcome, "is_failure", True)


# ---- control plane
def test_authorizer_control_plane_shapes_and_errors(iot: Any, authorizers: dict[str, str]) -> None:
    described = iot.describe_authorizer(authorizerName="Signed")["authorizerDescription"]
    assert described["authorizerArn"] == "arn:aws:iot:us-east-1:123456789012:authorizer/Signed"
    assert (described["tokenKeyName"], described["status"], described["signingDisabled"]) == ("token", "ACTIVE", False)
    assert described["tokenSigningPublicKeys"] == {"key1": PUBLIC_PEM}
    names = [a["authorizerName"] for a in iot.list_authorizers()["authorizers"]]
    assert {"Signed", "Unsigned", "raises"} <= set(names)
    page = iot.list_authorizers(pageSize=2)
    assert len(page["authorizers"]) == 2 and page["nextMarker"]
    rest = iot.list_authorizers(pageSize=2, marker=page["nextMarker"])["authorizers"]
    assert rest[0]["authorizerName"] not in [a["authorizerName"] for a in page["authorizers"]]
    backwards = [a["authorizerName"] for a in iot.list_authorizers(ascendingOrder=False)["authorizers"]]
    assert backwards == sorted(names, reverse=True)
    assert iot.list_authorizers(status="INACTIVE")["authorizers"] == []
    with pytest.raises(ClientError) as exists:
        iot.create_authorizer(authorizerName="Signed", authorizerFunctionArn=authorizers["good"], signingDisabled=True)
    assert exists.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    with pytest.raises(ClientError) as unsigned:
        iot.create_authorizer(authorizerName="NoKeys", authorizerFunctionArn=authorizers["good"])
    assert unsigned.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as short_key:
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        pem = small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        iot.create_authorizer(authorizerName="Short", authorizerFunctionArn=authorizers["good"], tokenKeyName="t",
                              tokenSigningPublicKeys={"k": pem})  # fmt: skip
    assert short_key.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as missing:
        iot.describe_default_authorizer()
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    iot.create_authorizer(authorizerName="Temp", authorizerFunctionArn=authorizers["good"], signingDisabled=True,
                          enableCachingForHttp=True)  # fmt: skip
    assert iot.describe_authorizer(authorizerName="Temp")["authorizerDescription"]["enableCachingForHttp"] is True
    with pytest.raises(ClientError) as active:
        iot.delete_authorizer(authorizerName="Temp")
    assert active.value.response["Error"]["Code"] == "DeleteConflictException"
    iot.update_authorizer(authorizerName="Temp", status="INACTIVE")
    assert iot.describe_authorizer(authorizerName="Temp")["authorizerDescription"]["status"] == "INACTIVE"
    iot.delete_authorizer(authorizerName="Temp")
    with pytest.raises(ClientError) as gone:
        iot.describe_authorizer(authorizerName="Temp")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_test_invoke_authorizer(iot: Any, authorizers: dict[str, str]) -> None:
    token = good_token()
    answer = iot.test_invoke_authorizer(authorizerName="Signed", token=token, tokenSignature=sign(token))
    assert answer["isAuthenticated"] is True and answer["principalId"] == "device1"
    assert answer["refreshAfterInSeconds"] == 600 and answer["disconnectAfterInSeconds"] == 3600
    assert json.loads(answer["policyDocuments"][0])["Statement"][0]["Action"] == "iot:Connect"
    with pytest.raises(ClientError) as forged:
        iot.test_invoke_authorizer(authorizerName="Signed", token=token, tokenSignature=sign("other"))
    assert forged.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as broken:
        iot.test_invoke_authorizer(authorizerName="garbage", mqttContext={"username": "u", "password": b"pw"})
    assert broken.value.response["Error"]["Code"] == "InvalidResponseException"
    expired = iot.test_invoke_authorizer(authorizerName="Unsigned", mqttContext={"username": "u", "password": b"no"})
    assert expired["isAuthenticated"] is False


# ---- MQTT custom authentication with paho
def test_paho_username_password_custom_auth_enforces_the_answer(
    gw: GatewayProcess, authorizers: dict[str, str]
) -> None:
    device = Paho(gw, "someone?x-amz-customauthorizer-name=Unsigned", "pw")
    assert connected(device.outcome())
    topic = f"dev/{device.client_id}/t"
    device.client.subscribe(topic, qos=1)
    time.sleep(0.2)
    device.client.publish(topic, b"hello", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not device.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m.payload for m in device.messages] == [b"hello"]
    device.done.clear()
    device.client.publish("dev/someone-else/t", b"x", qos=1)  # outside its policy: MQTT 3.1.1 is disconnected
    assert device.done.wait(5)
    device.stop()
    refused = Paho(gw, "someone?x-amz-customauthorizer-name=Unsigned", "wrong")
    assert not connected(refused.outcome())
    refused.stop()


def test_signed_tokens_forged_expired_and_good(gw: GatewayProcess, authorizers: dict[str, str]) -> None:
    token = good_token()
    name = "x-amz-customauthorizer-name=Signed"
    good = Paho(gw, f"u?{name}&x-amz-customauthorizer-signature={quote(sign(token))}&token={token}", None)
    forged = Paho(gw, f"u?{name}&x-amz-customauthorizer-signature={quote(sign('x'))}&token={token}", None)
    old = f"allow-{int(time.time()) - 10}"
    expired = Paho(gw, f"u?{name}&x-amz-customauthorizer-signature={quote(sign(old))}&token={old}", None)
    unsigned = Paho(gw, f"u?{name}&token={token}", None)
    assert connected(good.outcome())
    assert not connected(forged.outcome())
    assert not connected(expired.outcome())
    assert not connected(unsigned.outcome())
    for device in (good, forged, expired, unsigned):
        device.stop()


def test_failing_functions_refuse_only_their_own_connections(gw: GatewayProcess, authorizers: dict[str, str]) -> None:
    started = time.monotonic()
    bad = [Paho(gw, f"u?x-amz-customauthorizer-name={name}", "pw") for name in ("raises", "hangs", "garbage")]
    good = Paho(gw, "u?x-amz-customauthorizer-name=Unsigned", "pw")
    assert connected(good.outcome())
    assert time.monotonic() - started < 4  # the hanging function holds up no one else
    for device in bad:
        assert not connected(device.outcome())
    assert time.monotonic() - started < 12  # the hanging one is refused after AWS's 5 s
    for device in (*bad, good):
        device.stop()


def test_alpn_port_keeps_mtls_for_x_amzn_mqtt_ca(gw: GatewayProcess) -> None:
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    ctx.set_alpn_protocols(["x-amzn-mqtt-ca"])
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="nocert")
    device.tls_set_context(ctx)
    closed = threading.Event()
    device.on_disconnect = lambda *a: closed.set()
    device.on_connect = lambda *a: closed.set()
    rcs: list[Any] = []
    device.on_connect_fail = lambda *a: closed.set()
    try:
        device.connect("127.0.0.1", gw.ports["alpn"], keepalive=30)
        device.loop_start()
        assert closed.wait(10)
        rcs.append(device.is_connected())
    except (OSError, ssl.SSLError):
        rcs.append(False)
    device.loop_stop()
    assert rcs == [False]


def https_publish(gw: GatewayProcess, alpn: str, topic: str, headers: dict[str, str], cert: Any = None) -> int:
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    ctx.set_alpn_protocols([alpn])
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    connection = http.client.HTTPSConnection("127.0.0.1", gw.ports["alpn"], context=ctx, timeout=10)
    try:
        connection.request("POST", f"/topics/{topic}?qos=1", body=b"{}", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_https_publish_with_custom_authorizer_headers(gw: GatewayProcess, authorizers: dict[str, str]) -> None:
    token = good_token()
    headers = {"x-amz-customauthorizer-name": "Signed", "x-amz-customauthorizer-signature": sign(token),
               "token": token}  # fmt: skip
    assert https_publish(gw, "http/1.1", "http/ok", headers) == 200
    assert https_publish(gw, "http/1.1", "elsewhere/t", headers) == 403  # outside the function's policy
    forged = {**headers, "x-amz-customauthorizer-signature": sign("forged")}
    assert https_publish(gw, "http/1.1", "http/ok", forged) == 403
    assert https_publish(gw, "http/1.1", "http/ok", {}) == 403


def test_alpn_x_amzn_http_ca_with_a_certificate(gw: GatewayProcess) -> None:
    from conftest import allow_all_policy

    creds = gw.provision("httpdevice", allow_all_policy())
    assert https_publish(gw, "x-amzn-http-ca", "any/topic", {}, cert=creds) == 200


# ---- the Device SDK v2 custom-authorizer builders (the SDK pins port 443: pointed at the gateway's ALPN port)
@pytest.fixture
def sdk_port(gw: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    from awsiot import mqtt5_client_builder, mqtt_connection_builder

    for module in (mqtt_connection_builder, mqtt5_client_builder):
        original = module._builder

        def builder(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            kwargs["port"] = gw.ports["alpn"]
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "_builder", builder)


def test_sdk_direct_with_custom_authorizer_mqtt3(
    gw: GatewayProcess, authorizers: dict[str, str], sdk_port: None
) -> None:
    from awscrt import mqtt
    from awsiot import mqtt_connection_builder

    token = good_token()
    connection = mqtt_connection_builder.direct_with_custom_authorizer(
        endpoint="127.0.0.1", ca_filepath=str(gw.ca_file), client_id="sdk3", auth_username="sdkuser",
        auth_authorizer_name="Signed", auth_authorizer_signature=sign(token), auth_token_key_name="token",
        auth_token_value=token, clean_session=True, keep_alive_secs=30,
    )  # fmt: skip
    connection.connect().result(10)
    received: list[bytes] = []
    got = threading.Event()

    def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
        received.append(payload)
        got.set()

    subscribed, _ = connection.subscribe("dev/sdk3/in", mqtt.QoS.AT_LEAST_ONCE, on_message)
    subscribed.result(10)
    connection.publish("dev/sdk3/in", b"from-sdk", mqtt.QoS.AT_LEAST_ONCE)[0].result(10)
    assert got.wait(10) and received == [b"from-sdk"]
    connection.disconnect().result(10)


def test_sdk_mqtt5_direct_with_custom_authorizer(
    gw: GatewayProcess, authorizers: dict[str, str], sdk_port: None
) -> None:
    from concurrent.futures import Future

    from awsiot import mqtt5_client_builder

    outcome: Future[Any] = Future()
    stopped: Future[None] = Future()
    client5 = mqtt5_client_builder.direct_with_custom_authorizer(
        endpoint="127.0.0.1", ca_filepath=str(gw.ca_file), client_id="sdk5", auth_username="sdkuser",
        auth_authorizer_name="Unsigned", auth_password="pw",
        on_lifecycle_connection_success=lambda data: outcome.set_result(data.connack_packet.reason_code),
        on_lifecycle_connection_failure=lambda data: outcome.done() or outcome.set_result(data.exception),
        on_lifecycle_stopped=lambda data: stopped.done() or stopped.set_result(None),
    )  # fmt: skip
    client5.start()
    assert int(outcome.result(10)) == 0
    client5.stop()
    stopped.result(10)


# ---- SigV4 on the WebSocket upgrade
def presigned_path(host: str, key: str, secret: str, token: str | None = None, when: dt.datetime | None = None) -> str:
    """A presigned /mqtt URL, built the way AWS's documentation shows for MQTT over WebSocket."""
    now = when or dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/iotdevicegateway/aws4_request"
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={quote(f'{key}/{scope}', safe='')}"
             f"&X-Amz-Date={amz_date}&X-Amz-Expires=86400&X-Amz-SignedHeaders=host")  # fmt: skip
    canonical = f"GET\n/mqtt\n{query}\nhost:{host}\n\nhost\n{hashlib.sha256(b'').hexdigest()}"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signing = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "iotdevicegateway", "aws4_request"):
        signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    path = f"/mqtt?{query}&X-Amz-Signature={signature}"
    return path + (f"&X-Amz-Security-Token={quote(token, safe='')}" if token else "")


def ws_paho(gw: GatewayProcess, path: str, client_id: str) -> tuple[paho.Client, threading.Event, list[Any]]:
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, transport="websockets")
    device.tls_set_context(ssl.create_default_context(cafile=str(gw.ca_file)))
    host = f"127.0.0.1:{gw.ports['wss']}"
    device.ws_set_options(path=path, headers={"Host": host})
    done = threading.Event()
    result: list[Any] = []
    device.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    device.on_disconnect = lambda *a: done.set()
    device.connect("127.0.0.1", gw.ports["wss"], keepalive=30)
    device.loop_start()
    return device, done, result


def upgrade_status(gw: GatewayProcess, path: str) -> int:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", gw.ports["wss"], context=ssl.create_default_context(cafile=str(gw.ca_file)), timeout=10
    )
    try:
        connection.request("GET", path, headers={
            "Host": f"127.0.0.1:{gw.ports['wss']}", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(), "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "mqtt",
        })  # fmt: skip
        return connection.getresponse().status
    finally:
        connection.close()


def allow_key(gw: GatewayProcess, iot: Any) -> None:
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    try:
        iot.create_policy(policyName="keypolicy", policyDocument=json.dumps(doc))
        iot.attach_policy(policyName="keypolicy", target=KEY)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceAlreadyExistsException"


def test_paho_presigned_websocket(gw: GatewayProcess, iot: Any) -> None:
    host = f"127.0.0.1:{gw.ports['wss']}"
    no_policy, done, result = ws_paho(gw, presigned_path(host, KEY, SECRET), "ws-nopolicy")
    assert done.wait(10) and not (result and not result[0].is_failure)  # no policy attached to the key yet
    no_policy.loop_stop()
    no_policy.disconnect()
    allow_key(gw, iot)
    for token in (None, "FwoGZXIvYXdzEXAMPLESESSIONTOKEN/+="):
        device, done, result = ws_paho(gw, presigned_path(host, KEY, SECRET, token), f"ws-{bool(token)}")
        assert done.wait(10) and result and not result[0].is_failure, result
        device.disconnect()
        device.loop_stop()
    for path in (presigned_path(host, KEY, "wrong-secret"), presigned_path(host, "AKIDUNKNOWN", SECRET),
                 presigned_path(host, KEY, SECRET, when=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))):  # fmt: skip
        assert upgrade_status(gw, path) == 403  # refused at the upgrade, before any MQTT


def test_sdk_websockets_with_default_aws_signing(gw: GatewayProcess, iot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from awscrt import auth
    from awsiot import mqtt5_client_builder, mqtt_connection_builder

    allow_key(gw, iot)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    connection = mqtt_connection_builder.websockets_with_default_aws_signing(
        endpoint="127.0.0.1", port=gw.ports["wss"], region="us-east-1", ca_filepath=str(gw.ca_file),
        credentials_provider=auth.AwsCredentialsProvider.new_default_chain(), client_id="sdk-ws3",
        clean_session=True, keep_alive_secs=30,
    )  # fmt: skip
    connection.connect().result(10)
    connection.disconnect().result(10)

    from concurrent.futures import Future

    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEXAMPLE/session+token=")  # appended after signing
    outcome: Future[Any] = Future()
    stopped: Future[None] = Future()
    client5 = mqtt5_client_builder.websockets_with_default_aws_signing(
        endpoint="127.0.0.1", port=gw.ports["wss"], region="us-east-1", ca_filepath=str(gw.ca_file),
        credentials_provider=auth.AwsCredentialsProvider.new_default_chain(), client_id="sdk-ws5",
        on_lifecycle_connection_success=lambda data: outcome.set_result(data.connack_packet.reason_code),
        on_lifecycle_connection_failure=lambda data: outcome.done() or outcome.set_result(data.exception),
        on_lifecycle_stopped=lambda data: stopped.done() or stopped.set_result(None),
    )  # fmt: skip
    client5.start()
    assert int(outcome.result(10)) == 0
    client5.stop()
    stopped.result(10)


def test_sdk_mqtt5_refused_by_a_failing_authorizer_hears_not_authorized(
    gw: GatewayProcess, authorizers: dict[str, str], sdk_port: None
) -> None:
    from concurrent.futures import Future

    from awsiot import mqtt5_client_builder

    failure: Future[Any] = Future()
    stopped: Future[None] = Future()
    client5 = mqtt5_client_builder.direct_with_custom_authorizer(
        endpoint="127.0.0.1", ca_filepath=str(gw.ca_file), client_id="sdk5-refused", auth_username="u",
        auth_authorizer_name="raises", auth_password="pw",
        on_lifecycle_connection_failure=lambda data: failure.done() or failure.set_result(data.connack_packet),
        on_lifecycle_stopped=lambda data: stopped.done() or stopped.set_result(None),
    )  # fmt: skip
    client5.start()
    connack = failure.result(10)
    assert connack is not None and int(connack.reason_code) == 0x87  # Not authorized, as AWS answers
    client5.stop()
    stopped.result(10)


def test_sdk_websockets_with_custom_authorizer(gw: GatewayProcess, authorizers: dict[str, str]) -> None:
    from awsiot import mqtt_connection_builder

    connection = mqtt_connection_builder.websockets_with_custom_authorizer(
        endpoint="127.0.0.1", port=gw.ports["wss"], ca_filepath=str(gw.ca_file), client_id="sdk-ws-ca",
        auth_username="u", auth_authorizer_name="Unsigned", auth_password="pw", clean_session=True,
        keep_alive_secs=30,
    )  # fmt: skip
    connection.connect().result(10)
    connection.disconnect().result(10)


def test_websocket_upgrade_with_custom_authorizer_headers(gw: GatewayProcess, authorizers: dict[str, str]) -> None:
    token = good_token()
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ws-headers", transport="websockets")
    device.tls_set_context(ssl.create_default_context(cafile=str(gw.ca_file)))
    device.ws_set_options(path="/mqtt", headers={
        "x-amz-customauthorizer-name": "Signed", "x-amz-customauthorizer-signature": sign(token), "token": token,
    })  # fmt: skip
    done = threading.Event()
    result: list[Any] = []
    device.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    device.connect("127.0.0.1", gw.ports["wss"], keepalive=30)
    device.loop_start()
    assert done.wait(10) and result and not result[0].is_failure, result
    device.disconnect()
    device.loop_stop()
    forged = "/mqtt?x-amz-customauthorizer-name=Signed&token=" + token + "&x-amz-customauthorizer-signature="
    assert upgrade_status(gw, forged + quote(sign("forged"), safe="")) == 403
    assert upgrade_status(gw, forged + quote(sign(token), safe="")) == 101  # the same in the query string, signed


def test_no_credentials_no_entry_even_with_the_dev_policy_on(gw: GatewayProcess) -> None:
    """The plain port's anonymous dev policy never leaks to the cert-less doors (ALPN `mqtt`, WebSocket)."""
    bare = Paho(gw, "nobody", None)
    assert not connected(bare.outcome())
    bare.stop()
    device, done, result = ws_paho(gw, "/mqtt", "ws-anonymous")
    assert done.wait(10) and not (result and not result[0].is_failure), result
    device.loop_stop()


def test_enable_caching_for_http_spares_the_function(
    gw: GatewayProcess, iot: Any, authorizers: dict[str, str], tmp_path: Any
) -> None:
    counter = tmp_path / "invocations"
    lam = client(gw, "lambda", KEY, SECRET)
    source = "import json, time, base64, os\n\ndef handler(event, context):\n"
    source += "    open(os.environ['COUNT_FILE'], 'a').write('x')\n"
    source += AUTHORIZER.split("def handler(event, context):\n", 1)[1]
    arn = create(lam, "auth-counting", source, Environment={"Variables": {"COUNT_FILE": str(counter)}})["FunctionArn"]
    iot.create_authorizer(authorizerName="Cached", authorizerFunctionArn=arn, tokenKeyName="token",
                          tokenSigningPublicKeys={"key1": PUBLIC_PEM}, enableCachingForHttp=True)  # fmt: skip
    token = good_token()
    headers = {"x-amz-customauthorizer-name": "Cached", "x-amz-customauthorizer-signature": sign(token),
               "token": token}  # fmt: skip
    assert [https_publish(gw, "http/1.1", "http/c", headers) for _ in range(3)] == [200, 200, 200]
    assert counter.read_text() == "x"  # one invocation, then the cached answer
    iot.update_authorizer(authorizerName="Cached", enableCachingForHttp=False)
    assert [https_publish(gw, "http/1.1", "http/c", headers) for _ in range(2)] == [200, 200]
    assert counter.read_text() == "xxx"


def test_alpn_x_amzn_mqtt_ca_with_a_certificate_connects(gw: GatewayProcess) -> None:
    from conftest import allow_all_policy

    creds = gw.provision("alpndevice", allow_all_policy())
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    ctx.set_alpn_protocols(["x-amzn-mqtt-ca"])
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="alpndevice")
    device.tls_set_context(ctx)
    done = threading.Event()
    result: list[Any] = []
    device.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    device.connect("127.0.0.1", gw.ports["alpn"], keepalive=30)
    device.loop_start()
    assert done.wait(10) and result and not result[0].is_failure, result
    device.disconnect()
    device.loop_stop()


def test_presigned_websocket_with_assume_role_credentials(gw: GatewayProcess, iot: Any) -> None:
    """Temporary credentials from edgesim's STS: the session token must come along; the role's ARN takes policies."""
    sts = client(gw, "sts", KEY, SECRET)
    issued = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/DeviceRole", RoleSessionName="dev")["Credentials"]
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    iot.create_policy(policyName="rolepolicy", policyDocument=json.dumps(doc))
    iot.attach_policy(policyName="rolepolicy", target="arn:aws:iam::123456789012:role/DeviceRole")
    host = f"127.0.0.1:{gw.ports['wss']}"
    key, secret, token = issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"]
    assert upgrade_status(gw, presigned_path(host, key, secret)) == 403  # its session token is missing
    assert upgrade_status(gw, presigned_path(host, key, secret, "not-the-token")) == 403
    device, done, result = ws_paho(gw, presigned_path(host, key, secret, token), "ws-role")
    assert done.wait(10) and result and not result[0].is_failure, result
    device.disconnect()
    device.loop_stop()
