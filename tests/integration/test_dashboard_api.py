"""The dashboard's JSON and live event stream (SSE), lifecycle events and the API token, with real clients."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client
from test_rules import rule

from gateway.api.auth import is_loopback, required_token

ROLE = "arn:aws:iam::123456789012:role/r"


def get(gw: GatewayProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{gw.ports['api']}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(gw: GatewayProcess, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{gw.ports['api']}{path}", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class Events:
    """Reads one server-sent event stream on a thread; events land in a queue as (name, data)."""

    def __init__(self, gw: GatewayProcess, query: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", gw.ports["api"], timeout=30)
        self.conn.request("GET", f"/edgesim/dash/events?{query}")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        self.events.put((name, json.loads("\n".join(data))))
                    name, data = "message", []
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by the test (http.client then fails in several ways)

    def wait_for(self, name: str, predicate: Any = lambda d: True, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got, data = self.events.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got == name and predicate(data):
                return data
        raise AssertionError(f"no {name!r} event matching within {timeout} s")

    def drain(self, seconds: float) -> list[tuple[str, Any]]:
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                out.append(self.events.get(timeout=max(0.05, deadline - time.monotonic())))
        return out

    def close(self) -> None:
        self.conn.sock.close() if self.conn.sock else None
        self.conn.close()


@pytest.fixture
def events(gateway: GatewayProcess) -> Iterator[Any]:
    opened: list[Events] = []

    def open_stream(query: str) -> Events:
        stream = Events(gateway, query)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def restricted_policy(thing: str) -> dict[str, Any]:
    arn = "arn:aws:iot:us-east-1:123456789012"
    me = "${iot:Connection.Thing.ThingName}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}:client/{me}"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{arn}:topic/dt/{me}/*"},
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{arn}:topic/dt/{thing}/secret"},
        ],
    }


def test_fleet_and_thing_pages_show_a_connected_device_its_policies_and_permissions(
    gateway: GatewayProcess, unique: str
) -> None:
    thing = f"dash-{unique}"
    creds = gateway.provision(thing, restricted_policy(thing))
    client(gateway, "iot").update_thing(thingName=thing, attributePayload={"attributes": {"site": "lab"}})
    device = Device(gateway.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
    try:
        assert device.publish(f"dt/{thing}/telemetry", '{"t": 1}', qos=1)
        status, fleet = get(gateway, "/edgesim/dash/fleet")
        assert status == 200
        row = next(t for t in fleet["things"] if t["name"] == thing)
        assert row["connected"] is True
        assert row["attributes"] == {"site": "lab"}
        assert row["lastMessageMs"] and abs(row["lastMessageMs"] - time.time() * 1000) < 10_000
        assert fleet["counts"]["connected"] >= 1
        assert fleet["counts"]["total"] == fleet["counts"]["connected"] + fleet["counts"]["disconnected"]

        status, page = get(gateway, f"/edgesim/dash/thing/{thing}")
        assert status == 200
        assert page["connected"] is True
        assert [(m["topic"], m["payload"]) for m in page["recentMessages"]] == [(f"dt/{thing}/telemetry", '{"t": 1}')]
        assert [c["status"] for c in page["certificates"]] == ["ACTIVE"]
        assert len(page["policies"]) == 1 and page["policies"][0]["document"]["Statement"][2]["Effect"] == "Deny"
        verdicts = {(p["action"], p["resource"].split(":", 5)[-1]): p["allowed"] for p in page["permissions"]}
        assert verdicts[("iot:Connect", f"client/{thing}")] is True
        assert verdicts[("iot:Publish", f"topic/$aws/things/{thing}/shadow/update")] is False
        policy_name = page["policies"][0]["policyName"]

        check = f"/edgesim/dash/thing/{thing}/check?action=iot:Publish&resource="
        status, allowed = get(gateway, f"{check}topic/dt/{thing}/x")
        assert allowed["allowed"] is True and policy_name in allowed["why"]
        status, denied = get(gateway, f"{check}topic/dt/{thing}/secret")
        assert denied["allowed"] is False and denied["why"] == f"explicitly denied by {policy_name}"
        status, implicit = get(gateway, f"{check}topic/other")
        assert implicit["allowed"] is False and "implicit deny" in implicit["why"]
    finally:
        device.close()
    status, missing = get(gateway, "/edgesim/dash/thing/no-such-thing-here")
    assert status == 404 and "no-such-thing-here" in missing["message"]


def test_presence_and_subscription_lifecycle_events_carry_awss_payloads(gateway: GatewayProcess, unique: str) -> None:
    watcher_creds = gateway.provision(f"watch-{unique}", allow_all_policy())
    watcher = Device(gateway.ports["mqtts"], f"watch-{unique}", watcher_creds.cert, watcher_creds.key, watcher_creds.ca)
    watcher.connect()
    thing = f"life-{unique}"
    try:
        watcher.subscribe(f"$aws/events/presence/+/{thing}", qos=1)
        watcher.subscribe(f"$aws/events/subscriptions/+/{thing}", qos=1)
        creds = gateway.provision(thing, allow_all_policy())
        device = Device(gateway.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
        device.subscribe(f"cmd/{unique}/#", qos=1)
        device.client.unsubscribe(f"cmd/{unique}/#")
        time.sleep(0.3)
        device.close()
        messages = [watcher.expect(timeout=10) for _ in range(4)]
        seen = {m.topic: json.loads(m.payload) for m in messages}
    finally:
        watcher.close()
    connected = seen[f"$aws/events/presence/connected/{thing}"]
    assert connected["eventType"] == "connected" and connected["clientId"] == thing and "ipAddress" in connected
    subscribed = seen[f"$aws/events/subscriptions/subscribed/{thing}"]
    assert subscribed["eventType"] == "subscribed" and subscribed["topics"] == [f"cmd/{unique}/#"]
    assert set(subscribed) == {
        "clientId",
        "timestamp",
        "eventType",
        "sessionIdentifier",
        "principalIdentifier",
        "topics",
    }
    unsubscribed = seen[f"$aws/events/subscriptions/unsubscribed/{thing}"]
    assert unsubscribed["topics"] == [f"cmd/{unique}/#"]
    disconnected = seen[f"$aws/events/presence/disconnected/{thing}"]
    assert disconnected["clientInitiatedDisconnect"] is True
    assert disconnected["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"


def test_live_tail_streams_only_matching_messages_and_reports_what_it_skips(
    gateway: GatewayProcess, unique: str, events: Any
) -> None:
    tail = events(f"view=tail&filter=tail/{unique}/%23")
    tail.wait_for("tick")
    data = client(gateway, "iot-data")
    for i in range(3):
        data.publish(topic=f"tail/{unique}/a{i}", qos=1, payload=json.dumps({"i": i}).encode())
        data.publish(topic=f"elsewhere/{unique}/a{i}", qos=1, payload=b"{}")
    got = [tail.wait_for("message") for _ in range(3)]
    assert [m["topic"] for m in got] == [f"tail/{unique}/a{i}" for i in range(3)]
    assert json.loads(got[0]["payload"]) == {"i": 0} and got[0]["encoding"] == "utf-8"
    assert abs(got[0]["timestampMs"] - time.time() * 1000) < 5000
    # A burst past the browser's budget: at most 50 a second reach it, the rest are counted.
    for i in range(120):
        data.publish(topic=f"tail/{unique}/burst", qos=0, payload=str(i).encode())
    seen = tail.drain(2.5)
    delivered = sum(1 for name, _ in seen if name == "message")
    skipped = sum(d["count"] for name, d in seen if name == "skipped")
    assert 0 < delivered <= 100
    assert delivered + skipped == 120

    bad = events("view=tail&filter=a/%23/b")
    assert "#" in bad.wait_for("error")["message"]


def test_thing_page_stream_sends_shadow_changes_and_the_page_keeps_versions(
    gateway: GatewayProcess, unique: str, events: Any
) -> None:
    thing = f"shadowed-{unique}"
    client(gateway, "iot").create_thing(thingName=thing)
    stream = events(f"view=thing&thing={thing}")
    stream.wait_for("tick")
    data = client(gateway, "iot-data")
    data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"reported": {"mode": "off"}}}).encode())
    data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"desired": {"mode": "on"}}}).encode())
    change = stream.wait_for("shadow", lambda d: d["version"] == 2)
    assert change["thing"] == thing and change["shadowName"] is None
    assert change["state"] == {"desired": {"mode": "on"}, "reported": {"mode": "off"}, "delta": {"mode": "on"}}
    data.update_thing_shadow(
        thingName=thing, shadowName="cfg", payload=json.dumps({"state": {"desired": {"rate": 5}}}).encode()
    )
    named = stream.wait_for("shadow", lambda d: d["shadowName"] == "cfg")
    assert named["state"]["delta"] == {"rate": 5}
    _, page = get(gateway, f"/edgesim/dash/thing/{thing}")
    classic = next(s for s in page["shadows"] if s["shadowName"] is None)
    assert classic["version"] == 2 and classic["state"]["delta"] == {"mode": "on"}
    assert [h["version"] for h in classic["history"]] == [2, 1]
    assert classic["history"][1]["state"] == {"desired": None, "reported": {"mode": "off"}}
    assert {s["shadowName"] for s in page["shadows"]} == {None, "cfg"}


def test_rule_test_box_evaluates_sql_and_points_at_errors(gateway: GatewayProcess) -> None:
    status, result = post(
        gateway,
        "/edgesim/dash/rules/test",
        {"sql": "SELECT temp * 2 AS t FROM 'dt/+' WHERE temp > 3", "topic": "dt/a", "payload": '{"temp": 5}'},
    )
    assert status == 200
    assert result["topicMatches"] is True and result["whereMatched"] is True and result["output"] == {"t": 10}
    status, error = post(
        gateway, "/edgesim/dash/rules/test", {"sql": "SELECT temp\nFROM 'dt/+' WHERE temp >", "topic": "dt/a"}
    )
    assert status == 400
    assert error["line"] == 2 and error["column"] > 20 and "SqlParseException" in error["message"]


def test_rules_and_sinks_pages_count_what_happened(gateway: GatewayProcess, unique: str, events: Any) -> None:
    kinesis = client(gateway, "kinesis")
    stream = f"dash-{unique}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    sqs = client(gateway, "sqs")
    dlq_url = sqs.create_queue(QueueName=f"dlq-{unique}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=f"q-{unique}",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )["QueueUrl"]
    name = f"dash_{unique}"
    client(gateway, "iot").create_topic_rule(
        ruleName=name,
        topicRulePayload=rule(
            f"SELECT * FROM 'sink/{unique}'",
            {"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "${newuuid()}"}},
            {"sqs": {"roleArn": ROLE, "queueUrl": url}},
            {"sqs": {"roleArn": ROLE, "queueUrl": f"{url}-missing"}},
        ),
    )
    rules_stream = events("view=rules")
    data = client(gateway, "iot-data")
    for i in range(4):
        data.publish(topic=f"sink/{unique}", qos=1, payload=json.dumps({"i": i}).encode())
    tick = rules_stream.wait_for("tick", lambda d: d["rules"].get(name, {}).get("matched") == 4)
    assert tick["rules"][name]["errors"] == 4
    _, rules_page = get(gateway, "/edgesim/dash/rules")
    mine = next(r for r in rules_page["rules"] if r["ruleName"] == name)
    assert mine["actions"] == ["kinesis", "sqs", "sqs"] and mine["enabled"] is True
    assert len(mine["lastErrors"]) == 4 and mine["lastErrors"][0]["traceId"]
    assert sum(mine["history"]) == 4

    _, sinks = get(gateway, "/edgesim/dash/sinks")
    kin = next(s for s in sinks["kinesis"] if s["streamName"] == stream)
    assert kin["records"] == 4 and len(kin["shards"]) == 2
    queue_row = next(q for q in sinks["sqs"] if q["queueName"] == f"q-{unique}")
    assert queue_row["visible"] == 4 and queue_row["deadLetter"] == {"queueName": f"dlq-{unique}", "visible": 0}
    shard = next(s for s in kin["shards"] if s["records"])
    _, page1 = get(gateway, f"/edgesim/dash/kinesis/{stream}/records?shard={shard['shardId']}&limit=1")
    assert len(page1["records"]) == 1 and page1["next"]
    _, rest = get(gateway, f"/edgesim/dash/kinesis/{stream}/records?shard={shard['shardId']}&after={page1['next']}")
    assert len(page1["records"]) + len(rest["records"]) == shard["records"]
    assert json.loads(page1["records"][0]["data"]) in [{"i": i} for i in range(4)]


def test_api_token_is_required_when_set_and_health_stays_open(tmp_path: Any, unique: str) -> None:
    gw = GatewayProcess(tmp_path, ["--api-token", "s3cret-token", "--require-sigv4", "AKIDEDGESIM:s3cret"]).start()
    try:
        assert get(gw, "/health")[0] == 200
        status, refused = get(gw, "/edgesim/dash/fleet")
        assert status == 401 and "token" in refused["message"]
        assert get(gw, "/edgesim/dash/fleet", {"Authorization": "Bearer s3cret-token"})[0] == 200
        assert get(gw, "/edgesim/dash/fleet", {"Authorization": "Bearer wrong"})[0] == 401
        # Something that merely looks like a signature opens nothing, the dashboard included.
        forged = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEDGESIM/20260101/us-east-1/iot/aws4_request"}
        assert get(gw, "/edgesim/dash/fleet", forged)[0] in (400, 401, 403)
        assert get(gw, "/metrics", forged)[0] in (400, 401, 403)
        wrong_key = client(gw, "iot")  # signed, but with a secret the gateway does not know
        with pytest.raises(Exception, match=r"401|403|token|[Ss]ignature|credential"):
            wrong_key.list_things()
        signed = client(gw, "iot", "AKIDEDGESIM", "s3cret")
        assert signed.list_things()["things"] == []
        wrong_key.meta.events.register(
            "before-send", lambda request, **_: request.headers.__setitem__("X-Edgesim-Token", "s3cret-token")
        )
        assert wrong_key.list_things()["things"] == []  # the token stands in for the signature
        conn = http.client.HTTPConnection("127.0.0.1", gw.ports["api"], timeout=5)
        conn.request("GET", "/?token=s3cret-token")
        opened = conn.getresponse()
        assert opened.status == 302 and opened.headers["Location"] == "/"  # the token leaves the address bar
        cookie = opened.headers["Set-Cookie"]
        assert "edgesim_token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.close()
    finally:
        gw.stop()


def test_the_gateway_stops_promptly_with_a_dashboard_stream_open(tmp_path: Any) -> None:
    gw = GatewayProcess(tmp_path).start()
    stream = Events(gw, "view=fleet")
    try:
        stream.wait_for("tick")
        started = time.monotonic()
        gw.stop()
        assert time.monotonic() - started < 10
    finally:
        stream.close()


def test_device_controlled_reports_and_documents_cannot_break_pages(gateway: GatewayProcess, unique: str) -> None:
    data = client(gateway, "iot-data")
    core, thing = f"odd-core-{unique}", f"odd-{unique}"
    client(gateway, "iot").create_thing(thingName=thing)
    for body in ({"edgesim": 5, "components": 7}, {"components": [1, {"componentName": "x", "status": 3}]}, [1]):
        data.publish(topic=f"$aws/things/{core}/greengrassv2/health/json", qos=1, payload=json.dumps(body).encode())
    deep = ("[" * 5000 + "]" * 5000).encode()
    for raw in (json.dumps({"current": [1]}).encode(), json.dumps({"current": {"state": 5}}).encode(), deep):
        data.publish(topic=f"$aws/things/{thing}/shadow/update/documents", qos=1, payload=raw)
    status, edge = get(gateway, "/edgesim/dash/edge")
    assert status == 200
    mine = next(c for c in edge["cores"] if c["name"] == core)
    assert mine["components"] == [{"name": "x", "state": "3", "restarts": None}]
    assert get(gateway, f"/edgesim/dash/thing/{thing}")[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/metrics", timeout=5) as response:
        assert response.status == 200


def test_a_live_tail_cannot_join_a_shared_subscription_group(gateway: GatewayProcess, events: Any) -> None:
    tail = events("view=tail&filter=%24share/workers/jobs/%23")
    assert "shared subscription" in tail.wait_for("error")["message"]


def test_a_token_is_generated_only_when_the_api_leaves_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("gateway")
    assert required_token("127.0.0.1", None) is None
    assert required_token("127.0.0.1", "given") == "given"
    generated = required_token("0.0.0.0", None)
    assert generated and len(generated) >= 24 and generated != required_token("0.0.0.0", None)


def test_edge_page_shows_a_cores_last_health_report(gateway: GatewayProcess, unique: str, events: Any) -> None:
    core = f"core-{unique}"
    report = {
        "thing": core,
        "overallDeviceStatus": "UNHEALTHY",
        "components": [{"componentName": "thermostat", "status": "BROKEN", "restarts": 3}],
        "edgesim": {"spool": {"messages": 7, "bytes": 700, "maxBytes": 2000}, "shadowSync": {"shadows": 1}},
    }
    stream = events("view=edge")
    client(gateway, "iot-data").publish(
        topic=f"$aws/things/{core}/greengrassv2/health/json", qos=0, payload=json.dumps(report).encode()
    )
    tick = stream.wait_for("tick", lambda d: any(c["name"] == core for c in d["edge"]["cores"]))
    mine = next(c for c in tick["edge"]["cores"] if c["name"] == core)
    assert mine["online"] is False  # no MQTT connection with that client id
    assert mine["status"] == "UNHEALTHY" and mine["spool"] == {"messages": 7, "bytes": 700, "maxBytes": 2000}
    assert mine["components"] == [{"name": "thermostat", "state": "BROKEN", "restarts": 3}]
    _, page = get(gateway, "/edgesim/dash/edge")
    assert any(c["name"] == core for c in page["cores"])
