"""The http, cloudwatchLogs/cloudwatchMetric and dynamoDBv2 rule actions, and refused action types, with boto3 and paho.

The http endpoint is a real aiohttp server on 127.0.0.1 (in a thread); DynamoDB is moto's server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import GatewayProcess
from test_api_iot import client
from test_rules import device, rule

ROLE = "arn:aws:iam::123456789012:role/r"


@dataclass
class Endpoint:
    """An HTTP server that records every request and answers with `status`."""

    port: int = 0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "content_types": request.headers.getall("Content-Type", []),
                "body": await request.read(),
            }
        )
        return web.Response(status=self.status, text="ok")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        ep.loop = loop
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ep.handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        ep.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runner_box.append(runner)
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield ep
    assert ep.loop is not None
    ep.loop.call_soon_threadsafe(ep.loop.stop)
    thread.join(10)


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def view(gw: GatewayProcess, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}{path}") as response:
        return response.read() if path == "/metrics" else json.loads(response.read())


def test_http_action_behind_a_confirmed_destination(gateway: GatewayProcess, endpoint: Endpoint, unique: str) -> None:
    iot = client(gateway, "iot")
    base = endpoint.url(f"/hooks/{unique}")
    created = iot.create_topic_rule_destination(
        destinationConfiguration={"httpUrlConfiguration": {"confirmationUrl": base}}
    )["topicRuleDestination"]
    arn = created["arn"]
    assert created["status"] == "IN_PROGRESS" and ":ruledestination/http/" in arn
    assert created["httpUrlProperties"] == {"confirmationUrl": base}
    # AWS's confirmation request reaches the endpoint.
    challenge = wait_for(lambda: [r for r in endpoint.requests if r["path"] == f"/hooks/{unique}/"])[0]
    body = json.loads(challenge["body"])
    assert challenge["method"] == "POST"
    assert challenge["headers"]["x-amz-rules-engine-message-type"] == "DestinationConfirmation"
    assert challenge["headers"]["x-amz-rules-engine-destination-arn"] == arn
    assert body["arn"] == arn and body["messageType"] == "DestinationConfirmation"
    assert challenge["query"]["confirmationToken"] == body["confirmationToken"]
    assert body["enableUrl"].endswith("/confirmdestination/" + body["confirmationToken"])

    # A rule sends nothing while the destination is unconfirmed: the failure is the rule's error.
    name = f"hook_{unique}"
    action = {
        "http": {
            "url": base + "/${topic(3)}",
            "confirmationUrl": base,
            "headers": [{"key": "x-device", "value": "${clientid()}"}, {"key": "x-static", "value": "yes"}],
        }
    }
    iot.create_topic_rule(ruleName=name, topicRulePayload=rule(f"SELECT temp FROM 'h/{unique}/+'", action))
    pub = device(gateway, f"hpub-{unique}")
    pub.publish(f"h/{unique}/kitchen", b'{"temp": 21, "x": 1}')
    errors = wait_for(lambda: view(gateway, "/edgesim/rules/metrics")[name]["action_failure"])
    assert errors == 1
    assert "IN_PROGRESS" in view(gateway, "/edgesim/rules/metrics")[name]["last_error"]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_topic_rule_destination(arn=arn, status="ENABLED")  # must be confirmed with the token first

    # Opening the enableUrl confirms it, as ConfirmTopicRuleDestination with the token does.
    with urllib.request.urlopen(body["enableUrl"]) as response:
        assert response.status == 200
    assert iot.get_topic_rule_destination(arn=arn)["topicRuleDestination"]["status"] == "ENABLED"
    iot.confirm_topic_rule_destination(confirmationToken=body["confirmationToken"])  # again: harmless
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.confirm_topic_rule_destination(confirmationToken="not-a-token")
    listed = iot.list_topic_rule_destinations()["destinationSummaries"]
    assert {"arn": arn, "status": "ENABLED"}.items() <= next(d for d in listed if d["arn"] == arn).items()

    pub.publish(f"h/{unique}/kitchen", b'{"temp": 22, "x": 1}')
    sent = wait_for(lambda: [r for r in endpoint.requests if r["path"] == f"/hooks/{unique}/kitchen"])[0]
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"temp": 22}
    assert sent["headers"]["x-device"] == f"hpub-{unique}" and sent["headers"]["x-static"] == "yes"
    assert sent["headers"]["Content-Type"] == "application/json"  # the default when no header names one

    # DISABLED stops traffic again; an endpoint's non-2xx answer is an action failure.
    iot.update_topic_rule_destination(arn=arn, status="DISABLED")
    pub.publish(f"h/{unique}/hall", b'{"temp": 1}')
    wait_for(lambda: view(gateway, "/edgesim/rules/metrics")[name]["action_failure"] == 2)
    iot.update_topic_rule_destination(arn=arn, status="ENABLED")
    endpoint.status = 500
    try:
        pub.publish(f"h/{unique}/hall", b'{"temp": 2}')
        wait_for(lambda: view(gateway, "/edgesim/rules/metrics")[name]["action_failure"] == 3)
        assert "HTTP 500" in view(gateway, "/edgesim/rules/metrics")[name]["last_error"]
    finally:
        endpoint.status = 200
    pub.close()

    iot.delete_topic_rule_destination(arn=arn)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule_destination(arn=arn)


def test_http_rule_creates_its_destination_and_validates(
    gateway: GatewayProcess, endpoint: Endpoint, unique: str
) -> None:
    iot = client(gateway, "iot")
    url = endpoint.url(f"/auto/{unique}")
    iot.create_topic_rule(
        ruleName=f"auto_{unique}", topicRulePayload=rule("SELECT * FROM 'a/b'", {"http": {"url": url}})
    )
    listed = iot.list_topic_rule_destinations()["destinationSummaries"]
    mine = [d for d in listed if d["httpUrlSummary"]["confirmationUrl"] == url]
    assert len(mine) == 1 and mine[0]["status"] == "IN_PROGRESS"
    wait_for(lambda: [r for r in endpoint.requests if r["path"] == f"/auto/{unique}/"])
    # An endpoint that does not answer leaves the destination in ERROR, with the reason.
    closed = iot.create_topic_rule_destination(
        destinationConfiguration={"httpUrlConfiguration": {"confirmationUrl": f"http://127.0.0.1:1/{unique}"}}
    )["topicRuleDestination"]["arn"]
    failed = wait_for(
        lambda: (d := iot.get_topic_rule_destination(arn=closed)["topicRuleDestination"])["status"] == "ERROR" and d
    )
    assert "confirmation request" in failed["statusReason"]
    with pytest.raises(iot.exceptions.InvalidRequestException):  # one destination per confirmation URL
        iot.create_topic_rule_destination(
            destinationConfiguration={"httpUrlConfiguration": {"confirmationUrl": f"http://127.0.0.1:1/{unique}"}}
        )
    bad = [
        ({"url": "ftp://example.com/x"}, "https://"),
        ({"url": "http://example.com/x"}, "https://"),
        ({"url": url + "/${topic()}"}, "confirmationUrl is required"),
        ({"url": url, "confirmationUrl": endpoint.url("/elsewhere")}, "prefix"),
        ({"url": url, "auth": {"sigv4": {"signingRegion": "us-east-1", "serviceName": "x", "roleArn": ROLE}}}, "auth"),
    ]
    for fields, message in bad:
        with pytest.raises(iot.exceptions.InvalidRequestException) as info:
            iot.create_topic_rule(
                ruleName=f"bad_{unique}", topicRulePayload=rule("SELECT * FROM 'a/b'", {"http": fields})
            )
        assert message in str(info.value)


def test_cloudwatch_actions_are_kept_and_shown(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    group = f"/iot/{unique}"
    iot.create_topic_rule(
        ruleName=f"cw_{unique}",
        topicRulePayload=rule(
            f"SELECT * FROM 'cw/{unique}/+'",
            {"cloudwatchLogs": {"roleArn": ROLE, "logGroupName": group}},
            {
                "cloudwatchMetric": {
                    "roleArn": ROLE,
                    "metricNamespace": f"ns{unique}",
                    "metricName": "${topic(3)}_temp",
                    "metricValue": "${temp}",
                    "metricUnit": "None",
                }
            },
        ),
    )
    pub = device(gateway, f"cwpub-{unique}")
    assert pub.publish(f"cw/{unique}/oven", b'{"temp": 180.5}')  # PUBACK: both actions committed
    events = [e for e in view(gateway, "/edgesim/cloudwatch/logs") if e["logGroupName"] == group]
    assert [json.loads(e["message"]) for e in events] == [{"temp": 180.5}]
    points = [p for p in view(gateway, "/edgesim/cloudwatch/metrics") if p["namespace"] == f"ns{unique}"]
    assert [(p["metricName"], p["value"], p["unit"]) for p in points] == [("oven_temp", 180.5, "None")]
    text = view(gateway, "/metrics").decode()
    assert f'edgesim_cloudwatch_metric{{metric="oven_temp",namespace="ns{unique}",unit="None"}} 180.5' in text
    summary = view(gateway, "/edgesim/cloudwatch/summary")
    assert any(g["logGroupName"] == group and g["events"] == 1 for g in summary["logGroups"])
    dashboard = view(gateway, "/edgesim/dash/sinks")["cloudwatch"]  # the dashboard's sinks page
    assert any(m["metricName"] == "oven_temp" and m["lastValue"] == 180.5 for m in dashboard["metrics"])
    # A metricValue that is not a number fails the action (and is counted), as CloudWatch would refuse it.
    pub.publish(f"cw/{unique}/oven", b'{"temp": "hot"}')
    wait_for(lambda: view(gateway, "/edgesim/rules/metrics")[f"cw_{unique}"]["action_failure"] == 1)
    pub.close()
    with pytest.raises(iot.exceptions.InvalidRequestException) as info:
        iot.create_topic_rule(
            ruleName=f"cwbad_{unique}",
            topicRulePayload=rule(
                "SELECT * FROM 'x'",
                {
                    "cloudwatchMetric": {
                        "roleArn": ROLE,
                        "metricNamespace": "n",
                        "metricName": "m",
                        "metricValue": "1",
                        "metricUnit": "Furlongs",
                    }
                },
            ),
        )
    assert "Furlongs" in str(info.value)


@pytest.mark.parametrize(
    ("action", "named"),
    [
        (
            {
                "timestream": {
                    "roleArn": ROLE,
                    "databaseName": "d",
                    "tableName": "t",
                    "dimensions": [{"name": "d", "value": "v"}],
                }
            },
            "timestream",
        ),
        ({"iotEvents": {"roleArn": ROLE, "inputName": "i"}}, "iotEvents"),
        ({"dynamoDB": {"roleArn": ROLE, "tableName": "t", "hashKeyField": "k", "hashKeyValue": "v"}}, "dynamoDB"),
        ({"dynamoDBv2": {"roleArn": ROLE, "putItem": {"tableName": "t"}}}, "--sink-backend aws"),
        ({"sns": {"roleArn": ROLE, "targetArn": "arn:aws:sns:us-east-1:123456789012:t"}}, "sns"),
    ],
)
def test_actions_edgesim_cannot_run_are_refused_at_create(
    gateway: GatewayProcess, unique: str, action: dict[str, Any], named: str
) -> None:
    iot = client(gateway, "iot")
    with pytest.raises(iot.exceptions.InvalidRequestException) as info:
        iot.create_topic_rule(ruleName=f"no_{unique}", topicRulePayload=rule("SELECT * FROM 'a'", action))
    assert named in str(info.value)
    with pytest.raises(iot.exceptions.InvalidRequestException):  # as an errorAction too
        iot.create_topic_rule(ruleName=f"no_{unique}", topicRulePayload=rule("SELECT * FROM 'a'", error=action))
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule(ruleName=f"no_{unique}")


def test_dynamodb_v2_through_the_aws_backend(tmp_path: Path, unique: str) -> None:
    moto_server = pytest.importorskip("moto.server")
    import boto3
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, moto_server.DomainDispatcherApplication(moto_server.create_backend_app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    dynamo = boto3.client(
        "dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="edgesim", aws_secret_access_key="x"
    )
    dynamo.create_table(
        TableName="readings",
        KeySchema=[{"AttributeName": "device", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "device", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    gw = GatewayProcess(tmp_path / "gw", extra_args=["--sink-backend", "aws", "--sink-endpoint-url", url])
    gw.home.mkdir()
    gw.start()
    try:
        client(gw, "iot").create_topic_rule(
            ruleName=f"ddb_{unique}",
            topicRulePayload=rule(
                "SELECT topic(2) AS device, temp, tags, ok FROM 'ddb/+'",
                {"dynamoDBv2": {"roleArn": ROLE, "putItem": {"tableName": "${'readings'}"}}},
            ),
        )
        pub = device(gw, f"dpub-{unique}")
        assert pub.publish("ddb/sensor-1", b'{"temp": 21.5, "tags": ["a", "b"], "ok": true}')  # PUBACK after PutItem
        pub.close()
        item = dynamo.get_item(TableName="readings", Key={"device": {"S": "sensor-1"}})["Item"]
        assert item == {
            "device": {"S": "sensor-1"},
            "temp": {"N": "21.5"},
            "tags": {"L": [{"S": "a"}, {"S": "b"}]},
            "ok": {"BOOL": True},
        }
    finally:
        gw.stop()
        server.shutdown()
        thread.join(10)
