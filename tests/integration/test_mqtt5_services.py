"""MQTT 5 through every part built on the broker: HTTP doors carry v5 fields, shadows answer v5 requests with their
correlation data, rules read v5 properties and republish with MQTT 5 headers, `edgesim rules test` takes them."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, GatewayProcess, allow_all_policy
from mqtt5_helpers import V5Client
from test_api_iot import client as aws


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path_factory.mktemp("gw5s")).start()
    yield gateway
    gateway.stop()


def v5(gw: GatewayProcess, name: str) -> V5Client:
    creds = gw.provision(name, allow_all_policy())
    return V5Client(gw.ports["mqtts"], name, creds.cert, creds.key, creds.ca).connect()


def test_iot_data_publish_carries_mqtt5_fields(gw: GatewayProcess, unique: str) -> None:
    sub = v5(gw, f"hd-{unique}")
    sub.subscribe(f"http5/{unique}")
    aws(gw, "iot-data").publish(
        topic=f"http5/{unique}", qos=1, payload=b"{}", userProperties='[{"deviceName": "alpha"}, {"n": "1"}]',
        contentType="application/json", responseTopic=f"http5/{unique}/r", correlationData="AQI=",
        payloadFormatIndicator="UTF8_DATA", messageExpiry=30,
    )  # fmt: skip
    got = sub.expect()
    p = got.properties
    assert p.UserProperty == [("deviceName", "alpha"), ("n", "1")]
    assert p.ContentType == "application/json" and p.ResponseTopic == f"http5/{unique}/r"
    assert p.CorrelationData == b"\x01\x02" and p.PayloadFormatIndicator == 1
    assert 28 <= p.MessageExpiryInterval <= 30
    with pytest.raises(Exception, match="InvalidRequestException"):
        aws(gw, "iot-data").publish(topic=f"http5/{unique}", payload=b"x", responseTopic="bad/#")
    sub.close()


def test_https_publish_door_carries_mqtt5_fields(gw: GatewayProcess, unique: str) -> None:
    sub = v5(gw, f"hs-{unique}")
    sub.subscribe(f"https5/{unique}")
    creds = gw.provision(f"hp-{unique}", allow_all_policy())
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    props = base64.b64encode(json.dumps('[{"k": "v"}]').encode()).decode()
    request = urllib.request.Request(
        f"https://localhost:{gw.ports['https']}/topics/https5%2F{unique}?qos=1&contentType=text%2Fplain",
        data=b"hello", method="POST", headers={"x-amz-mqtt5-user-properties": props},
    )  # fmt: skip
    with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
        assert response.status == 200
    got = sub.expect()
    assert got.payload == b"hello"
    assert got.properties.UserProperty == [("k", "v")] and got.properties.ContentType == "text/plain"
    sub.close()


def test_shadow_answers_a_v5_request_with_its_correlation_data(gw: GatewayProcess, unique: str) -> None:
    thing = f"sh5-{unique}"
    dev = v5(gw, thing)
    base = f"$aws/things/{thing}/shadow"
    dev.subscribe(f"{base}/update/accepted")
    dev.subscribe(f"replies/{unique}")
    dev.publish(f"{base}/update", json.dumps({"state": {"reported": {"on": True}}}), CorrelationData=b"req-1",
                ResponseTopic=f"replies/{unique}")  # fmt: skip
    first, second = dev.expect(), dev.expect()
    by_topic = {first.topic: first, second.topic: second}
    assert by_topic[f"{base}/update/accepted"].properties.CorrelationData == b"req-1"
    assert by_topic[f"replies/{unique}"].properties.CorrelationData == b"req-1"
    assert json.loads(by_topic[f"replies/{unique}"].payload)["state"]["reported"] == {"on": True}
    dev.close()


def test_rules_read_properties_and_republish_with_headers(gw: GatewayProcess, unique: str) -> None:
    iot = aws(gw, "iot")
    iot.create_topic_rule(
        ruleName=f"props_{unique}",
        topicRulePayload={
            "sql": f"SELECT get_mqtt_property('content_type') AS ct, get_user_properties('unit') AS units, "
            f"get_mqtt_property('correlation_data') AS cd FROM 'in5/{unique}'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"republish": {
                "roleArn": "arn:aws:iam::123456789012:role/r", "topic": f"out5/{unique}", "qos": 1,
                "headers": {"contentType": "application/json",
                            "correlationData": "${get_mqtt_property('correlation_data')}",
                            "messageExpiry": "60", "payloadFormatIndicator": "UTF8_DATA",
                            "userProperties": [{"key": "from", "value": "${topic()}"}]},
            }}],
        },
    )  # fmt: skip
    dev = v5(gw, f"rp5-{unique}")
    dev.subscribe(f"out5/{unique}")
    dev.publish(f"in5/{unique}", b"{}", ContentType="text/csv", UserProperty=[("unit", "C"), ("unit", "K")],
                CorrelationData=b"\x07")  # fmt: skip
    got = dev.expect()
    assert json.loads(got.payload) == {"ct": "text/csv", "units": ["C", "K"], "cd": "Bw=="}
    p = got.properties
    assert p.ContentType == "application/json" and p.CorrelationData == b"\x07"
    assert p.UserProperty == [("from", f"in5/{unique}")] and p.PayloadFormatIndicator == 1
    assert 58 <= p.MessageExpiryInterval <= 60
    with pytest.raises(iot.exceptions.InvalidRequestException):
        bad = {"roleArn": "r", "topic": "y", "headers": {"payloadFormatIndicator": "NOPE"}}
        iot.create_topic_rule(
            ruleName=f"badh_{unique}", topicRulePayload={"sql": "SELECT * FROM 'x'", "actions": [{"republish": bad}]}
        )
    dev.close()


def test_rules_test_cli_takes_mqtt5_properties(tmp_path: Path) -> None:
    rule = tmp_path / "p.sql"
    rule.write_text("SELECT get_user_properties('k') AS ks, get_mqtt_property('format') AS f FROM 'a/b'")
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "rules", "test", str(rule), "--topic", "a/b", "--payload", "{}",
         "--user-property", "k=1", "--user-property", "k=2", "--payload-format", "UTF8_DATA", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["output"] == {"ks": ["1", "2"], "f": "UTF8_DATA"}
