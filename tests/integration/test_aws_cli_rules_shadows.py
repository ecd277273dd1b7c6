"""The AWS CLI (v1) as users run it: topic rule destinations and rules with the http action, shadows with empty
objects and a null state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess
from test_rule_actions_aws import (
    Endpoint,
    endpoint,  # noqa: F401 - the loopback HTTP endpoint fixture, asked for by name
    wait_for,
)


def _aws(gw: GatewayProcess, *args: str) -> Any:
    beside = Path(sys.executable).parent / "aws"
    binary = str(beside) if beside.exists() else shutil.which("aws")
    assert binary, "the AWS CLI is part of the test extras (awscli)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(gw.home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(gw.home / "aws-credentials"),
        AWS_PAGER="",
    )
    done = subprocess.run(
        [binary, *args, "--endpoint-url", f"http://127.0.0.1:{gw.ports['api']}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stderr}"
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_topic_rule_destination_lifecycle_with_the_cli(
    gateway: GatewayProcess, request: pytest.FixtureRequest, unique: str
) -> None:
    server: Endpoint = request.getfixturevalue("endpoint")
    base = server.url(f"/cli/{unique}")
    config = json.dumps({"httpUrlConfiguration": {"confirmationUrl": base}})
    created = _aws(gateway, "iot", "create-topic-rule-destination", "--destination-configuration", config)
    arn = created["topicRuleDestination"]["arn"]
    challenge = wait_for(lambda: [r for r in server.requests if r["path"] == f"/cli/{unique}/"])[0]
    token = json.loads(challenge["body"])["confirmationToken"]
    _aws(gateway, "iot", "confirm-topic-rule-destination", "--confirmation-token", token)
    payload = json.dumps(
        {
            "sql": f"SELECT * FROM 'cli/{unique}'",
            "actions": [
                {
                    "http": {
                        "url": base + "/in",
                        "confirmationUrl": base,
                        "headers": [{"key": "content-type", "value": "text/plain"}],
                    }
                }
            ],
            "ruleDisabled": False,
        }
    )
    _aws(gateway, "iot", "create-topic-rule", "--rule-name", f"cli_{unique}", "--topic-rule-payload", payload)
    _aws(gateway, "iot-data", "publish", "--topic", f"cli/{unique}", "--qos", "1", "--payload", '{"n": 1}')
    sent = wait_for(lambda: [r for r in server.requests if r["path"] == f"/cli/{unique}/in"])[0]
    assert json.loads(sent["body"]) == {"n": 1}
    assert sent["content_types"] == ["text/plain"]  # the rule's own header replaces the default
    _aws(gateway, "iot", "update-topic-rule-destination", "--arn", arn, "--status", "DISABLED")
    listed = _aws(gateway, "iot", "list-topic-rule-destinations")["destinationSummaries"]
    assert next(d for d in listed if d["arn"] == arn)["status"] == "DISABLED"


def test_shadow_empty_objects_and_null_state_with_the_cli(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    thing = f"cli-{unique}"
    out = tmp_path / "out.json"
    update = json.dumps({"state": {"desired": {"a": 1, "d": {}}}})
    _aws(gateway, "iot-data", "update-thing-shadow", "--thing-name", thing, "--payload", update, str(out))
    assert json.loads(out.read_text())["state"] == {"desired": {"a": 1, "d": {}}}
    _aws(gateway, "iot-data", "update-thing-shadow", "--thing-name", thing, "--payload", '{"state": null}', str(out))
    assert json.loads(out.read_text())["state"] is None
    _aws(gateway, "iot-data", "get-thing-shadow", "--thing-name", thing, str(out))
    document = json.loads(out.read_text())
    assert (document["state"], document["version"]) == ({}, 2)
