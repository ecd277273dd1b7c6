"""Connect rates by authentication method, on one edgesim process: mTLS (the device certificate), a custom authorizer
on the ALPN port (ALPN `mqtt`, MQTT username/password, the authorizer function in edgesim's Lambda service) with
its function's workers cold (just deployed) and warm, and SigV4-presigned WebSocket upgrades; then HTTPS publish
requests with custom-authorizer headers, enableCachingForHttp off and on.

Used by bench/broker.py's `auth` phase; each figure is CONNECT..CONNACK..close for `count` clients, `concurrency` at
a time (10 in bench/broker.py: under the Lambda service's 16 concurrent invocations per function), over TLS
on 127.0.0.1. The client work (TLS, presigning) runs in this process, on the other core.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import io
import json
import ssl
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from mqttwire import codec
from mqttwire.packets import V311, Connect

HOST = "127.0.0.1"
KEY, SECRET = "AKIAEDGESIMBENCH0001", "bench-secret"
GATEWAY_FLAGS = ["--alpn-port", "0", "--wss-port", "0", "--https-port", "0", "--require-sigv4", f"{KEY}:{SECRET}"]
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
AUTHORIZER = (
    "import json\n\n"
    "POLICY = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'iot:*', "
    "'Resource': '*'}]})\n\n"
    "def handler(event, context):\n"
    "    return {'isAuthenticated': True, 'principalId': 'bench', 'disconnectAfterInSeconds': 3600,\n"
    "            'refreshAfterInSeconds': 3600, 'policyDocuments': [POLICY]}\n"
)


def _client(api_port: int, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=f"http://{HOST}:{api_port}", region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))  # fmt: skip


def setup(api_port: int) -> None:
    """The authorizer function and authorizer, and the access key's policy (boto3, as a user would)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", AUTHORIZER)
    arn = _client(api_port, "lambda").create_function(
        FunctionName="bench-authorizer", Runtime="python3.12", Role="arn:aws:iam::123456789012:role/lambda",
        Handler="app.handler", Code={"ZipFile": buffer.getvalue()}, Timeout=5,
    )["FunctionArn"]  # fmt: skip
    iot = _client(api_port, "iot")
    iot.create_authorizer(authorizerName="bench", authorizerFunctionArn=arn, signingDisabled=True)
    for name, cached in (("bench-http", False), ("bench-http-cached", True)):
        iot.create_authorizer(authorizerName=name, authorizerFunctionArn=arn, signingDisabled=True,
                              tokenKeyName="token", enableCachingForHttp=cached)  # fmt: skip
    iot.create_policy(policyName="bench-key", policyDocument=json.dumps(ALLOW_ALL))
    iot.attach_policy(policyName="bench-key", target=KEY)


async def _connack(reader: asyncio.StreamReader) -> int:
    head = await reader.readexactly(4)
    if head[0] != 0x20:
        raise RuntimeError(f"expected CONNACK, got {head!r}")
    return head[3]


async def tls_connect(port: int, ctx: ssl.SSLContext, packet: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost")
    try:
        writer.write(packet)
        code = await asyncio.wait_for(_connack(reader), 15)
        if code:
            raise RuntimeError(f"CONNACK {code}")
        writer.write(b"\xe0\x00")
    finally:
        writer.close()
        await writer.wait_closed()


def presigned(port: int) -> str:
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/iotdevicegateway/aws4_request"
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={quote(f'{KEY}/{scope}', safe='')}"
             f"&X-Amz-Date={amz_date}&X-Amz-Expires=86400&X-Amz-SignedHeaders=host")  # fmt: skip
    canonical = f"GET\n/mqtt\n{query}\nhost:{HOST}:{port}\n\nhost\n{hashlib.sha256(b'').hexdigest()}"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + SECRET).encode()
    for part in (day, "us-east-1", "iotdevicegateway", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"wss://{HOST}:{port}/mqtt?{query}&X-Amz-Signature={signature}"


async def ws_connect(session: aiohttp.ClientSession, port: int, ctx: ssl.SSLContext, packet: bytes) -> None:
    async with session.ws_connect(presigned(port), protocols=("mqtt",), ssl=ctx,
                                  headers={"Host": f"{HOST}:{port}"}) as ws:  # fmt: skip
        await ws.send_bytes(packet)
        msg = await asyncio.wait_for(ws.receive(), 15)
        if msg.type != aiohttp.WSMsgType.BINARY or msg.data[:1] != b"\x20" or msg.data[3]:
            raise RuntimeError(f"no CONNACK 0 over the WebSocket: {msg!r}")
        await ws.send_bytes(b"\xe0\x00")


async def https_publish(session: aiohttp.ClientSession, port: int, ctx: ssl.SSLContext, authorizer: str) -> None:
    headers = {"x-amz-customauthorizer-name": authorizer, "token": "bench-token"}
    url = f"https://{HOST}:{port}/topics/bench/http?qos=0"
    async with session.post(url, data=b"{}", headers=headers, ssl=ctx) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")


async def rate(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    """Connects per second for `count` clients, `concurrency` at a time; errors counted, not raised."""
    next_index = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            try:
                await one(index)
            except Exception as exc:
                errors.append(repr(exc))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    done = count - len(errors)
    return {"count": count, "ok": done, "seconds": round(elapsed, 3), "per_s": round(done / elapsed, 1) if elapsed
            else 0.0, "errors": errors[:3]}  # fmt: skip


async def measure(
    ports: dict[str, int], ca: Path, cert: Path, key: Path, count: int, concurrency: int
) -> dict[str, Any]:
    mtls = ssl.create_default_context(cafile=str(ca))
    mtls.load_cert_chain(str(cert), str(key))
    custom = ssl.create_default_context(cafile=str(ca))
    custom.set_alpn_protocols(["mqtt"])
    plain = ssl.create_default_context(cafile=str(ca))

    def custom_packet(i: int) -> bytes:
        return codec.encode(Connect(f"bench-ca-{i}", V311, True, 300, username="u?x-amz-customauthorizer-name=bench",
                                    password=b"pw"), V311)  # fmt: skip

    results: dict[str, Any] = {}
    results["mtls"] = await rate(
        count, concurrency,
        lambda i: tls_connect(ports["mqtts"], mtls, codec.encode(Connect(f"bench-m-{i}", V311, True, 300), V311)),
    )  # fmt: skip
    # Cold: the function was just deployed, so the first connects start its workers; warm: they are running.
    results["custom_cold"] = await rate(
        count, concurrency, lambda i: tls_connect(ports["alpn"], custom, custom_packet(i))
    )
    results["custom_warm"] = await rate(
        count, concurrency, lambda i: tls_connect(ports["alpn"], custom, custom_packet(i))
    )
    http = ssl.create_default_context(cafile=str(ca))
    http.set_alpn_protocols(["http/1.1"])
    async with aiohttp.ClientSession() as session:  # kept-alive connections: the authorizer is the cost measured
        for label, authorizer in (("http_uncached", "bench-http"), ("http_cached", "bench-http-cached")):
            publish = functools.partial(https_publish, session, ports["alpn"], http, authorizer)
            results[label] = await rate(count, concurrency, lambda i, publish=publish: publish())
    async with aiohttp.ClientSession() as session:
        results["sigv4_wss"] = await rate(
            count, concurrency,
            lambda i: ws_connect(session, ports["wss"], plain,
                                 codec.encode(Connect(f"bench-ws-{i}", V311, True, 300), V311)),
        )  # fmt: skip
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    labels = {"mtls": "mTLS (certificate)", "custom_cold": "custom authorizer, function cold",
              "custom_warm": "custom authorizer, function warm", "sigv4_wss": "SigV4 presigned WebSocket",
              "http_uncached": "HTTPS publish, custom auth, no cache",
              "http_cached": "HTTPS publish, enableCachingForHttp"}  # fmt: skip
    lines = []
    for name, label in labels.items():
        row = results.get(name)
        if row:
            failed = f"  ({row['count'] - row['ok']} failed: {row['errors'][:1]})" if row["ok"] < row["count"] else ""
            unit = "requests/s" if name.startswith("http") else "connects/s"
            lines.append(f"{label:<36} {row['per_s']:>8.1f} {unit}  ({row['ok']}/{row['count']}){failed}")
    return lines
