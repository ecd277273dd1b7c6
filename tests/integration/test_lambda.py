"""Lambda through boto3 `lambda` (REST-JSON): functions run as local Python handlers in worker processes."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayProcess
from test_api_iot import client
from test_cli import run
from test_rules import device, rule

ROLE = "arn:aws:iam::123456789012:role/lambda"


@pytest.fixture(scope="module", autouse=True)
def _fast_retries() -> Iterator[None]:
    """Async retries after 0.2 s and 0.4 s instead of AWS's minutes (read by the gateway at start)."""
    old = os.environ.get("EDGESIM_LAMBDA_RETRY_DELAYS")
    os.environ["EDGESIM_LAMBDA_RETRY_DELAYS"] = "0.2,0.4"
    yield
    if old is None:
        os.environ.pop("EDGESIM_LAMBDA_RETRY_DELAYS", None)
    else:
        os.environ["EDGESIM_LAMBDA_RETRY_DELAYS"] = old


@pytest.fixture(scope="module")
def lam(gateway: GatewayProcess) -> Any:
    return client(gateway, "lambda")


def zipped(source: str, module: str = "app") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{module}.py", source)
    return buffer.getvalue()


def create(lam: Any, name: str, source: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zipped(source)},
        **extra,
    )
    return result


def invoke(lam: Any, name: str, event: Any = None, **extra: Any) -> tuple[dict[str, Any], Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **extra)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


CONTEXT_HANDLER = """
def handler(event, context):
    return {
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
    }
"""


def test_create_invoke_and_context(lam: Any, unique: str) -> None:
    name = f"ctx-{unique}"
    created = create(lam, name, CONTEXT_HANDLER, Timeout=5, MemorySize=256)
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    assert (created["Runtime"], created["Handler"], created["Timeout"], created["MemorySize"]) == (
        "python3.12",
        "app.handler",
        5,
        256,
    )
    response, out = invoke(lam, name, {"temp": 21})
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert out["event"] == {"temp": 21}
    assert out["function_name"] == name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == created["FunctionArn"]
    assert out["memory_limit_in_mb"] == "256"
    assert out["aws_request_id"] == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert out["log_group_name"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in out["log_stream_name"]
    assert 0 < out["remaining"] <= 5000
    with pytest.raises(lam.exceptions.ResourceConflictException):
        create(lam, name, CONTEXT_HANDLER)
    assert name in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert lam.get_function(FunctionName=name)["Configuration"]["CodeSha256"] == created["CodeSha256"]
    assert lam.get_function_configuration(FunctionName=created["FunctionArn"])["FunctionName"] == name


def test_function_error_is_unhandled(lam: Any, unique: str) -> None:
    name = f"err-{unique}"
    create(lam, name, "def handler(event, context):\n    raise ValueError('boom: ' + event['x'])\n")
    response, out = invoke(lam, name, {"x": "bad"})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert out["errorMessage"] == "boom: bad"
    assert isinstance(out["stackTrace"], list) and out["stackTrace"]


def test_timeout_kills_the_worker_and_the_next_invoke_works(lam: Any, unique: str) -> None:
    name = f"hang-{unique}"
    source = "def handler(event, context):\n    while event.get('hang'):\n        pass\n    return 'ok'\n"
    create(lam, name, source, Timeout=1)
    started = time.monotonic()
    response, out = invoke(lam, name, {"hang": True})
    assert time.monotonic() - started < 5
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == "TimeoutError"
    assert out["errorMessage"].endswith("Task timed out after 1.00 seconds")
    response, out = invoke(lam, name, {})
    assert "FunctionError" not in response
    assert out == "ok"


def test_a_crashing_handler_does_not_take_the_gateway_down(gateway: GatewayProcess, lam: Any, unique: str) -> None:
    name = f"crash-{unique}"
    source = "import os\n\ndef handler(event, context):\n    if event.get('die'):\n        os._exit(1)\n    return 7\n"
    create(lam, name, source)
    response, out = invoke(lam, name, {"die": True})
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    assert "exit status 1" in out["errorMessage"]
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/health", timeout=5) as health:
        assert json.loads(health.read())["status"] == "ok"
    assert invoke(lam, name, {})[1] == 7


def test_event_invoke_is_queued_and_runs(lam: Any, unique: str, tmp_path: Path) -> None:
    name = f"event-{unique}"
    source = (
        "import json, os\n\ndef handler(event, context):\n"
        "    with open(os.path.join(os.environ['OUT_DIR'], event['id']), 'w') as f:\n"
        "        json.dump(event, f)\n"
    )
    create(lam, name, source, Environment={"Variables": {"OUT_DIR": str(tmp_path)}})
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": "e1", "v": 2}))
    assert response["StatusCode"] == 202
    written = wait_for(lambda: (tmp_path / "e1").exists() and (tmp_path / "e1").read_text())
    assert json.loads(written) == {"id": "e1", "v": 2}


def test_event_errors_are_retried_twice_then_dead_lettered(
    gateway: GatewayProcess, lam: Any, unique: str, tmp_path: Path
) -> None:
    sqs = client(gateway, "sqs")
    dlq = sqs.create_queue(QueueName=f"dlq-{unique}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = f"retry-{unique}"
    source = (
        "import os\n\ndef handler(event, context):\n"
        "    with open(os.environ['LOG_FILE'], 'a') as f:\n"
        "        f.write(context.aws_request_id + '\\n')\n"
        "    raise RuntimeError('always')\n"
    )
    create(
        lam,
        name,
        source,
        Environment={"Variables": {"LOG_FILE": str(tmp_path / "attempts")}},
        DeadLetterConfig={"TargetArn": dlq_arn},
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 1}')
    received = wait_for(
        lambda: sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1).get("Messages")
    )
    attempts = (tmp_path / "attempts").read_text().split()
    assert len(attempts) == 3 and len(set(attempts)) == 1  # the first try and two retries, one request id
    message = received[0]
    assert json.loads(message["Body"]) == {"n": 1}
    assert message["MessageAttributes"]["RequestID"]["StringValue"] == attempts[0]
    assert message["MessageAttributes"]["ErrorMessage"]["StringValue"] == "always"


def test_reserved_concurrency_zero_throttles(lam: Any, unique: str) -> None:
    name = f"throttle-{unique}"
    create(lam, name, "def handler(event, context):\n    return 1\n")
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert put["ReservedConcurrentExecutions"] == 0
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    with pytest.raises(lam.exceptions.TooManyRequestsException) as info:
        invoke(lam, name)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    assert invoke(lam, name)[1] == 1


def test_log_tail_dry_run_update_and_delete(gateway: GatewayProcess, lam: Any, unique: str) -> None:
    name = f"logs-{unique}"
    create(
        lam,
        name,
        "import logging\n\ndef handler(event, context):\n    print('hello from v1')\n"
        "    logging.warning('careful')\n    return 'v1'\n",
    )
    response, out = invoke(lam, name, LogType="Tail")
    assert out == "v1"
    tail = base64.b64decode(response["LogResult"]).decode()
    assert "hello from v1" in tail and "careful" in tail
    assert tail.startswith("START RequestId:") and "REPORT RequestId:" in tail
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204
    lam.update_function_code(FunctionName=name, ZipFile=zipped("def handler(event, context):\n    return 'v2'\n"))
    assert invoke(lam, name)[1] == "v2"
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/edgesim/lambda/logs", timeout=5) as got:
        recent = json.loads(got.read())[name]
    assert any("hello from v1" in entry["log"] for entry in recent)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=name, ZipFile=b"not a zip")
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        invoke(lam, name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_rule_lambda_action_invokes_the_function(
    gateway: GatewayProcess, lam: Any, unique: str, tmp_path: Path
) -> None:
    name = f"rule-{unique}"
    out = tmp_path / "event.json"
    source = (
        "import json, os\n\ndef handler(event, context):\n    open(os.environ['OUT'], 'w').write(json.dumps(event))\n"
    )
    arn = create(lam, name, source, Environment={"Variables": {"OUT": str(out)}})["FunctionArn"]
    iot = client(gateway, "iot")
    iot.create_topic_rule(
        ruleName=f"to_lambda_{unique}",
        topicRulePayload=rule(
            f"SELECT temp, topic(2) AS device FROM 'lt/+/{unique}'", {"lambda": {"functionArn": f"{arn}:prod"}}
        ),
    )
    pub = device(gateway, f"lpub-{unique}")
    pub.publish(f"lt/dev9/{unique}", json.dumps({"temp": 30, "other": 1}))
    written = wait_for(lambda: out.exists() and out.read_text())
    assert json.loads(written) == {"temp": 30, "device": "dev9"}
    pub.close()


def test_cli_deploy_invoke_list_logs(gateway: GatewayProcess, tmp_path: Path, unique: str) -> None:
    name = f"cli-{unique}"
    module = tmp_path / "greeter.py"
    module.write_text(
        "import os\n\ndef greet(event, context):\n    print('greeting')\n"
        "    return {'hello': event['who'], 'suffix': os.environ['SUFFIX']}\n"
    )
    deployed = run(
        tmp_path, "functions", "deploy", name, f"{module}:greet", "--timeout", "5", "--env", "SUFFIX=!", gw=gateway
    )
    assert "created" in deployed.stdout
    invoked = run(tmp_path, "functions", "invoke", name, "--payload", '{"who": "edge"}', gw=gateway)
    assert json.loads(invoked.stdout) == {"hello": "edge", "suffix": "!"}
    module.write_text("def greet(event, context):\n    return 'again'\n")
    assert "updated" in run(tmp_path, "functions", "deploy", name, f"{module}:greet", gw=gateway).stdout
    assert json.loads(run(tmp_path, "functions", "invoke", name, gw=gateway).stdout) == "again"
    listed = json.loads(run(tmp_path, "functions", "list", "--json", gw=gateway).stdout)
    assert name in [f["name"] for f in listed["functions"]]
    logs = run(tmp_path, "functions", "logs", name, gw=gateway).stdout
    assert "greeting" in logs
