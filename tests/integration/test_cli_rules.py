"""`edgesim rules test` (why WHERE failed, topics the rule never sees, --run outcomes), `rules check` and
`edgesim cloudwatch`, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import GatewayProcess
from test_api_iot import client
from test_cli import run

ROLE = "arn:aws:iam::123456789012:role/r"


def _rule_file(tmp: Path, name: str, sql: str, *actions: dict[str, object], version: str = "2016-03-23") -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"sql": sql, "awsIotSqlVersion": version, "actions": list(actions)}))
    return path


def _test(
    tmp: Path, rule: Path, topic: str, payload: str, *extra: str, gw: GatewayProcess | None = None
) -> tuple[int, str]:
    result = run(tmp, "rules", "test", str(rule), "--topic", topic, "--payload", payload, *extra, gw=gw, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_rules_test_explains_a_false_where(tmp_path: Path) -> None:
    rule = _rule_file(tmp_path, "hot", "SELECT * FROM 'dt/+/temp' WHERE temperature > 30 AND upper(mode) = 'ON'")
    code, text = _test(tmp_path, rule, "dt/d1/temp", '{"mode": "on"}', "--json")
    out = json.loads(text)
    assert code == 0 and out["whereMatched"] is False and out["output"] is None
    assert any(
        "`temperature` is Undefined: the payload has no key 'temperature'" in line for line in out["explanation"]
    )
    code, text = _test(tmp_path, rule, "dt/d1/temp", '{"temperature": "warm", "mode": "on"}')
    assert "WHERE matched: no" in text
    assert '`temperature > 30` is Undefined: > cannot combine a string "warm" and a number 30' in text
    code, text = _test(tmp_path, rule, "dt/d1/temp", '{"temperature": 20, "mode": "on"}')
    assert "`temperature > 30` is false" not in text and "  `temperature` is 20\n" in text
    nested = _rule_file(tmp_path, "nested", "SELECT * FROM 'a' WHERE state.reported.temp > 1")
    _, text = _test(tmp_path, nested, "a", '{"state": {"desired": {}}}')
    assert "`state.reported.temp` is Undefined: `state` has no key 'reported'" in text
    (tmp_path / "raw.bin").write_bytes(b"\x01\x02 not json")
    code, text = _test(tmp_path, rule, "dt/d1/temp", f"@{tmp_path / 'raw.bin'}")
    assert code == 0 and "the payload is not JSON" in text


def test_rules_test_on_a_topic_the_rule_never_sees(tmp_path: Path) -> None:
    rule = _rule_file(tmp_path, "hot", "SELECT * FROM 'dt/+/temp' WHERE temperature > 30")
    code, text = _test(tmp_path, rule, "other/d1", '{"temperature": 99}')
    assert code == 0 and "topic matches: no" in text and "the rule would not see this message" in text
    assert "WHERE" not in text and "output" not in text
    out = json.loads(_test(tmp_path, rule, "other/d1", '{"temperature": 99}', "--json")[1])
    assert (out["topicMatches"], out["whereMatched"], out["output"], out["actions"]) == (False, None, None, [])


def test_rules_test_reports_an_evaluation_error(tmp_path: Path) -> None:
    rule = _rule_file(tmp_path, "arr", "SELECT VALUE arr FROM 'a'", version="2015-10-08")
    code, text = _test(tmp_path, rule, "a", '{"arr": [1, 2]}')
    assert code == 1 and "2015-10-08 cannot output" in text and "(line 1, column 14)" in text


def test_rules_test_run_reports_each_action_on_the_gateway(
    gateway: GatewayProcess, tmp_path: Path, unique: str
) -> None:
    queue = client(gateway, "sqs").create_queue(QueueName=f"ok-{unique}")["QueueUrl"]
    missing = queue.rsplit("/", 1)[0] + f"/missing-{unique}"
    good = _rule_file(
        tmp_path, f"run_ok_{unique}", f"SELECT * FROM 'r/{unique}'", {"sqs": {"roleArn": ROLE, "queueUrl": queue}}
    )
    code, text = _test(tmp_path, good, f"r/{unique}", '{"v": 1}', "--run", "--json", gw=gateway)
    out = json.loads(text)
    assert code == 0 and out["run"]["ok"] is True
    assert out["run"]["actions"] == [{"action": "sqs", "resource": queue, "ok": True}]
    bad = _rule_file(
        tmp_path,
        f"run_bad_{unique}",
        f"SELECT * FROM 'r/{unique}/bad'",
        {"sqs": {"roleArn": ROLE, "queueUrl": queue}},
        {"sqs": {"roleArn": ROLE, "queueUrl": missing}},
    )
    code, text = _test(tmp_path, bad, f"r/{unique}/bad", '{"v": 2}', "--run", gw=gateway)
    assert code == 1
    assert (
        "ok     sqs" in text and f"failed sqs ({missing}): " in text and "QueueDoesNotExist" in text.replace("\n", "")
    )
    # A message the rule does not fire for: nothing ran, and that is not a failure.
    code, text = _test(tmp_path, good, f"elsewhere/{unique}", '{"v": 3}', "--run", gw=gateway)
    assert code == 0 and "would not see this message" in text


def test_rules_check_reports_unsupported_actions(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    _rule_file(folder, "ts", "SELECT * FROM 'a'", {"timestream": {"roleArn": ROLE, "databaseName": "d"}})
    _rule_file(folder, "ddb", "SELECT * FROM 'a'", {"dynamoDBv2": {"roleArn": ROLE, "putItem": {"tableName": "t"}}})
    _rule_file(folder, "cw", "SELECT * FROM 'a'", {"cloudwatchLogs": {"roleArn": ROLE, "logGroupName": "g"}})
    result = run(tmp_path, "rules", "check", str(folder), check=False)
    assert result.returncode == 1
    assert "The timestream action is not supported by edgesim" in result.stdout
    assert "dynamoDBv2 runs only with --sink-backend aws" in result.stdout
    _, text = _test(tmp_path, folder / "ts.json", "a", "{}")
    assert "warning: The timestream action is not supported by edgesim" in text  # rules test says so too
    report = {
        Path(r["file"]).stem: r["ok"]
        for r in json.loads(run(tmp_path, "rules", "check", str(folder), "--json", check=False).stdout)["rules"]
    }
    assert report == {"ts": False, "ddb": True, "cw": True}


def test_cloudwatch_commands_show_what_rules_wrote(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"cwcli_{unique}",
        topicRulePayload={
            "sql": f"SELECT * FROM 'cwcli/{unique}'",
            "awsIotSqlVersion": "2016-03-23",
            "actions": [
                {"cloudwatchLogs": {"roleArn": ROLE, "logGroupName": f"g-{unique}"}},
                {
                    "cloudwatchMetric": {
                        "roleArn": ROLE,
                        "metricNamespace": f"cli{unique}",
                        "metricName": "level",
                        "metricValue": "${level}",
                        "metricUnit": "Percent",
                    }
                },
            ],
        },
    )
    client(gateway, "iot-data").publish(topic=f"cwcli/{unique}", qos=1, payload=b'{"level": 42}')
    logs = run(tmp_path, "cloudwatch", "logs", "--group", f"g-{unique}", gw=gateway).stdout
    assert '{"level":42}' in logs
    summary = run(tmp_path, "cloudwatch", "logs", gw=gateway).stdout
    assert f"g-{unique}" in summary
    metrics = json.loads(
        run(tmp_path, "cloudwatch", "metrics", "--namespace", f"cli{unique}", "--json", gw=gateway).stdout
    )
    assert [(m["metricName"], m["lastValue"], m["unit"], m["datapoints"]) for m in metrics["metrics"]] == [
        ("level", 42.0, "Percent", 1)
    ]
