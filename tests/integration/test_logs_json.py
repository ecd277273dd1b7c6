"""`edgesim up --log-format json`: every stderr line is JSON; a rule failure's line carries its message's traceId."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client
from test_rules import republish, rule


@pytest.fixture(scope="module")
def json_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw-json"), ["--log-format", "json"], separate_stderr=True).start()
    yield gw
    gw.stop()


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line must be JSON


def test_rule_failure_log_line_carries_the_error_actions_trace_id(json_gateway: GatewayProcess, unique: str) -> None:
    gw = json_gateway
    name = f"logfail_{unique}"
    client(gw, "iot").create_topic_rule(
        ruleName=name,
        topicRulePayload=rule(
            f"SELECT * FROM 'lf/{unique}'",
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
    creds = gw.provision(f"sub-{unique}", allow_all_policy())
    sub = Device(gw.ports["mqtts"], f"sub-{unique}", creds.cert, creds.key, creds.ca).connect()
    creds = gw.provision(f"pub-{unique}", allow_all_policy())
    pub = Device(gw.ports["mqtts"], f"pub-{unique}", creds.cert, creds.key, creds.ca).connect()
    try:
        sub.subscribe(f"errors/{unique}", 1)
        pub.publish(f"lf/{unique}", b'{"x":1}')
        document = json.loads(sub.expect().payload)
    finally:
        pub.close()
        sub.close()
    trace_id = document["cloudwatchTraceId"]
    assert trace_id and document["ruleName"] == name

    deadline = time.monotonic() + 5
    while True:
        failures = [r for r in _records(gw.stderr_path) if r.get("traceId") == trace_id]
        if failures or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(failures) == 1, gw.stderr_path.read_text()
    (line,) = failures
    assert line["level"] == "warning"
    assert line["logger"] == "edgesim.rules"
    assert (line["rule"], line["action"], line["topic"], line["clientId"]) == (
        name,
        "kinesis",
        document["topic"],
        document["clientId"],
    )
    assert line["topic"] == f"lf/{unique}" and line["clientId"] == f"pub-{unique}"
    assert name in line["message"] and "kinesis failed" in line["message"]
    assert line["time"].endswith("Z")

    gw.stop()  # shutdown lines too must be JSON
    assert all(
        isinstance(r, dict) and {"time", "level", "logger", "message"} <= r.keys() for r in _records(gw.stderr_path)
    )
