"""The rules engine end to end: boto3 rule management, republish, Basic Ingest, errorAction, loops, rule files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client


def device(gw: GatewayProcess, name: str) -> Device:
    creds = gw.provision(name, allow_all_policy())
    return Device(gw.ports["mqtts"], name, creds.cert, creds.key, creds.ca).connect()


def rule(
    sql: str, *actions: dict[str, Any], error: dict[str, Any] | None = None, disabled: bool = False
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sql": sql,
        "actions": list(actions),
        "awsIotSqlVersion": "2016-03-23",
        "ruleDisabled": disabled,
    }
    if error is not None:
        payload["errorAction"] = error
    return payload


def republish(topic: str, qos: int = 1) -> dict[str, Any]:
    return {"republish": {"roleArn": "arn:aws:iam::123456789012:role/r", "topic": topic, "qos": qos}}


def test_rule_management_and_sql_errors(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    name = f"manage_{unique}"
    iot.create_topic_rule(ruleName=name, topicRulePayload=rule(f"SELECT * FROM 'm/{unique}/#'", republish("out/x")))
    got = iot.get_topic_rule(ruleName=name)
    assert got["rule"]["sql"] == f"SELECT * FROM 'm/{unique}/#'"
    assert got["ruleArn"].endswith(f":rule/{name}")
    listed = iot.list_topic_rules(topic=f"m/{unique}/a")["rules"]
    assert [(r["ruleName"], r["topicPattern"]) for r in listed] == [(name, f"m/{unique}/#")]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_topic_rule(ruleName=name, topicRulePayload=rule("SELECT * FROM 'x'"))
    with pytest.raises(iot.exceptions.SqlParseException) as info:
        iot.create_topic_rule(ruleName=f"bad_{unique}", topicRulePayload=rule("SELECT temp FORM 'a/b'"))
    assert "line 1" in str(info.value).lower() or "column" in str(info.value).lower()
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule(ruleName=f"bad_{unique}")
    iot.disable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is True
    iot.delete_topic_rule(ruleName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule(ruleName=name)


def test_republish_transforms_telemetry(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"hot_{unique}",
        topicRulePayload=rule(
            f"SELECT temp, topic(3) AS device, temp * 2 AS double FROM 'rt/{unique}/+/data' WHERE temp > 30",
            republish(f"alerts/{unique}/${{topic(3)}}"),
        ),
    )
    sub = device(gateway, f"sub-{unique}")
    sub.subscribe(f"alerts/{unique}/#", 1)
    pub = device(gateway, f"pub-{unique}")
    pub.publish(f"rt/{unique}/dev7/data", json.dumps({"temp": 20}))
    pub.publish(f"rt/{unique}/dev7/data", json.dumps({"temp": 35, "noise": 1}))
    message = sub.expect()
    assert message.topic == f"alerts/{unique}/dev7"
    assert json.loads(message.payload) == {"temp": 35, "device": "dev7", "double": 70}
    sub.expect_none()
    pub.close()
    sub.close()


def test_basic_ingest_reaches_only_its_rule(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"ingest_{unique}", topicRulePayload=rule("SELECT *, topic() AS t", republish(f"ingested/{unique}"))
    )
    sub = device(gateway, f"sub-{unique}")
    sub.subscribe(f"ingested/{unique}", 1)
    sub.subscribe("raw/#", 1)
    pub = device(gateway, f"pub-{unique}")
    assert pub.publish(f"$aws/rules/ingest_{unique}/raw/{unique}", json.dumps({"v": 1}))
    message = sub.expect()
    assert message.topic == f"ingested/{unique}"
    assert json.loads(message.payload) == {"v": 1, "t": f"raw/{unique}"}
    sub.expect_none()
    # Unknown rule: dropped, and the publisher keeps its connection.
    assert pub.publish(f"$aws/rules/no_such_rule_{unique}/x", b"{}")
    assert not pub.disconnected.is_set()
    pub.close()
    sub.close()


def test_failing_action_goes_to_error_action(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"fail_{unique}",
        topicRulePayload=rule(
            f"SELECT * FROM 'f/{unique}'",
            {
                "kinesis": {
                    "roleArn": "arn:aws:iam::123456789012:role/r",
                    "streamName": "nowhere",
                    "partitionKey": "${topic()}",
                }
            },
            error=republish(f"errors/{unique}"),
        ),
    )
    sub = device(gateway, f"sub-{unique}")
    sub.subscribe(f"errors/{unique}", 1)
    pub = device(gateway, f"pub-{unique}")
    pub.publish(f"f/{unique}", b'{"x":1}')
    document = json.loads(sub.expect().payload)
    assert document["ruleName"] == f"fail_{unique}"
    assert document["topic"] == f"f/{unique}"
    assert document["clientId"] == f"pub-{unique}"
    assert document["base64OriginalPayload"] == "eyJ4IjoxfQ=="
    assert document["failures"][0]["failedAction"] == "KinesisAction"
    assert document["failures"][0]["failedResource"] == "nowhere"
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/edgesim/rules/metrics") as response:
        metrics = json.loads(response.read())[f"fail_{unique}"]
    assert (metrics["matched"], metrics["action_failure"], metrics["error_actions"]) == (1, 1, 1)
    assert "KinesisAction" in metrics["last_error"]
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/edgesim/actions/metrics") as response:
        by_kind = json.loads(response.read())
    assert by_kind["kinesis"]["failure"] >= 1 and by_kind["kinesis"]["mean_ms"] > 0
    pub.close()
    sub.close()


def test_rule_loop_is_bounded(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"loop_{unique}", topicRulePayload=rule(f"SELECT * FROM 'loop/{unique}'", republish(f"loop/{unique}"))
    )
    sub = device(gateway, f"sub-{unique}")
    sub.subscribe(f"loop/{unique}", 1)
    pub = device(gateway, f"pub-{unique}")
    pub.publish(f"loop/{unique}", b'{"n":1}')
    received = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sub.expect(1.0)
            received += 1
        except Exception:
            break
    assert 2 <= received <= 10, f"{received} copies"
    assert pub.publish(f"still/{unique}", b"alive")
    pub.close()
    sub.close()


def test_disabled_rule_never_fires(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"off_{unique}",
        topicRulePayload=rule(f"SELECT * FROM 'off/{unique}'", republish(f"offout/{unique}"), disabled=True),
    )
    sub = device(gateway, f"sub-{unique}")
    sub.subscribe(f"offout/{unique}", 1)
    pub = device(gateway, f"pub-{unique}")
    pub.publish(f"off/{unique}", b"{}")
    sub.expect_none()
    iot.enable_topic_rule(ruleName=f"off_{unique}")
    pub.publish(f"off/{unique}", b"{}")
    assert sub.expect().topic == f"offout/{unique}"
    pub.close()
    sub.close()


def test_republish_with_double_dollar_reaches_the_shadow_service(gateway: GatewayProcess, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"toshadow_{unique}",
        topicRulePayload=rule(
            f"SELECT state FROM 'sh/{unique}/+'", republish("$$aws/things/${topic(3)}/shadow/update")
        ),
    )
    pub = device(gateway, f"pub-{unique}")
    pub.publish(f"sh/{unique}/lamp{unique}", json.dumps({"state": {"reported": {"temp": 23}}, "other": 1}))
    data = client(gateway, "iot-data")
    deadline = time.monotonic() + 5
    while True:
        try:
            got = json.loads(data.get_thing_shadow(thingName=f"lamp{unique}")["payload"].read())
            break
        except data.exceptions.ResourceNotFoundException:
            assert time.monotonic() < deadline, "the republished update never reached the shadow"
            time.sleep(0.1)
    assert got["state"]["reported"] == {"temp": 23}
    pub.close()


def test_rules_folder_loads_and_reloads(tmp_path: Path, unique: str) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "watch.sql").write_text(f"SELECT a FROM 'fold/{unique}'")
    (folder / "watch.actions.json").write_text(json.dumps([republish(f"foldout/{unique}")]))
    gw = GatewayProcess(tmp_path / "gw", extra_args=["--rules", str(folder)])
    gw.home.mkdir()
    gw.start()
    try:
        sub = device(gw, f"sub-{unique}")
        sub.subscribe(f"foldout/{unique}", 1)
        pub = device(gw, f"pub-{unique}")
        pub.publish(f"fold/{unique}", b'{"a":1,"b":2}')
        assert json.loads(sub.expect().payload) == {"a": 1}
        (folder / "watch.sql").write_text(f"SELECT b FROM 'fold/{unique}'")
        time.sleep(2.5)
        pub.publish(f"fold/{unique}", b'{"a":1,"b":2}')
        assert json.loads(sub.expect().payload) == {"b": 2}
        pub.close()
        sub.close()
    finally:
        gw.stop()
