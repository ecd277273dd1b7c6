"""Lambda through boto3 `lambda` (REST-JSON): functions run as local Python handlers in worker processes."""

from __future__ import annotations

import base64
import io
import json
import os
import re
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


# ---- asynchronous invocation config: retries, maximum event age, destinations
def _queue(gateway: GatewayProcess, name: str) -> tuple[Any, str, str]:
    sqs = client(gateway, "sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn


def _records(sqs: Any, url: str, count: int = 1) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def more() -> bool:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    wait_for(more, timeout=15)
    return got


def _unvalidated(gateway: GatewayProcess) -> Any:
    """A lambda client that sends out-of-range values (boto3 itself refuses values under a shape's minimum)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{gateway.ports['api']}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 1}, parameter_validation=False),
    )


def test_event_invoke_config_crud(gateway: GatewayProcess, lam: Any, unique: str) -> None:
    name = f"eic-{unique}"
    arn = create(lam, name, "def handler(event, context):\n    return 1\n")["FunctionArn"]
    other = create(lam, f"eic-other-{unique}", "def handler(event, context):\n    return 2\n")["FunctionArn"]
    _, _, queue_arn = _queue(gateway, f"eic-q-{unique}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert "EventInvokeConfig" in missing.value.response["Error"]["Message"]
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []

    put = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    assert put["FunctionArn"] == f"{arn}:$LATEST"
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 120)
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": queue_arn}}
    assert abs(put["LastModified"].timestamp() - time.time()) < 60
    got = lam.get_function_event_invoke_config(FunctionName=arn)
    assert {k: got[k] for k in put if k != "ResponseMetadata"} == {k: put[k] for k in put if k != "ResponseMetadata"}

    # Update changes only what it is given; OnSuccess and OnFailure each on their own.
    updated = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0, DestinationConfig={"OnSuccess": {"Destination": other}}
    )
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 120)
    assert updated["DestinationConfig"] == {
        "OnSuccess": {"Destination": other},
        "OnFailure": {"Destination": queue_arn},
    }
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["MaximumRetryAttempts"] for c in listed] == [0]

    # Put replaces the whole config: settings left out are removed.
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in replaced
    assert replaced["MaximumEventAgeInSeconds"] == 60
    assert replaced["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert (
        lam.get_function_event_invoke_config(FunctionName=name, Qualifier="$LATEST")["MaximumEventAgeInSeconds"] == 60
    )

    assert lam.delete_function_event_invoke_config(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)


def test_event_invoke_config_validation(gateway: GatewayProcess, lam: Any, unique: str) -> None:
    name = f"eicv-{unique}"
    create(lam, name, "def handler(event, context):\n    return 1\n")
    raw = _unvalidated(gateway)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"MaximumRetryAttempts": 3}, "less than or equal to 2"),
        ({"MaximumRetryAttempts": -1}, "greater than or equal to 0"),
        ({"MaximumEventAgeInSeconds": 59}, "greater than or equal to 60"),
        ({"MaximumEventAgeInSeconds": 21601}, "less than or equal to 21600"),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:123456789012:topic"}}},
            "supports only SQS",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:events:us-east-1:123456789012:event-bus/b"}}},
            "supports only SQS",
        ),
        ({"DestinationConfig": {"OnSuccess": {"Destination": "not-an-arn"}}}, "regular expression"),
    ]
    for extra, wording in bad:
        with pytest.raises(raw.exceptions.InvalidParameterValueException) as info:
            raw.put_function_event_invoke_config(FunctionName=name, **extra)
        assert wording in info.value.response["Error"]["Message"], extra
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    missing_queue = f"arn:aws:sqs:us-east-1:123456789012:no-such-queue-{unique}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnFailure": {"Destination": missing_queue}}
        )
    assert missing_queue in info.value.response["Error"]["Message"]
    missing_function = f"arn:aws:lambda:us-east-1:123456789012:function:no-such-fn-{unique}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": missing_function}}
        )
    assert missing_function in info.value.response["Error"]["Message"]
    itself = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": itself}}
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)  # nothing was stored by the failed puts
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=f"nope-{unique}", MaximumRetryAttempts=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_function_event_invoke_configs(FunctionName=f"nope-{unique}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=name, Qualifier="v1", MaximumRetryAttempts=1)


FAILING_HANDLER = (
    "import os\n\ndef handler(event, context):\n"
    "    with open(os.environ['LOG_FILE'], 'a') as f:\n"
    "        f.write(context.aws_request_id + '\\n')\n"
    "    raise RuntimeError('always ' + str(event['n']))\n"
)


@pytest.mark.parametrize("retries", [0, 1])
def test_on_failure_destination_gets_retries_exhausted_record(
    gateway: GatewayProcess, lam: Any, unique: str, tmp_path: Path, retries: int
) -> None:
    sqs, url, queue_arn = _queue(gateway, f"onfail-{unique}")
    _, dlq_url, dlq_arn = _queue(gateway, f"onfail-dlq-{unique}")
    name = f"onfail-{unique}"
    log_file = tmp_path / "attempts"
    arn = create(
        lam,
        name,
        FAILING_HANDLER,
        Environment={"Variables": {"LOG_FILE": str(log_file)}},
        DeadLetterConfig={"TargetArn": dlq_arn},
    )["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=retries, DestinationConfig={"OnFailure": {"Destination": queue_arn}}
    )
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 7}')
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    [message] = _records(sqs, url)
    record = json.loads(message["Body"])
    assert record["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{arn}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": retries + 1,
    }
    assert record["requestPayload"] == {"n": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "always 7"
    # AWS sends a failed event to the on-failure destination *and* the dead-letter queue when both are set.
    [dead] = _records(sqs, dlq_url)
    assert json.loads(dead["Body"]) == {"n": 7}
    time.sleep(1.0)  # longer than the test retry delays: no further attempt may follow
    assert log_file.read_text().split() == [request_id] * (retries + 1)
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages")


def test_on_success_destination_gets_success_record(gateway: GatewayProcess, lam: Any, unique: str) -> None:
    sqs, url, queue_arn = _queue(gateway, f"onok-{unique}")
    _, failure_url, failure_arn = _queue(gateway, f"onok-fail-{unique}")
    name = f"onok-{unique}"
    arn = create(lam, name, "def handler(event, context):\n    return {'doubled': event['n'] * 2}\n")["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        DestinationConfig={"OnSuccess": {"Destination": queue_arn}, "OnFailure": {"Destination": failure_arn}},
    )
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 21}')
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    [message] = _records(sqs, url)
    record = json.loads(message["Body"])
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{arn}:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"n": 21}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"doubled": 42}
    assert not sqs.receive_message(QueueUrl=failure_url, WaitTimeSeconds=0).get("Messages")
    # A synchronous invoke is not an asynchronous invocation: it produces no record.
    invoke(lam, name, {"n": 1})
    time.sleep(0.5)
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages")


def test_lambda_destination_receives_the_record_as_its_event(lam: Any, unique: str, tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    sink = create(
        lam,
        f"dest-sink-{unique}",
        "import json, os\n\ndef handler(event, context):\n    open(os.environ['OUT'], 'w').write(json.dumps(event))\n",
        Environment={"Variables": {"OUT": str(out)}},
    )["FunctionArn"]
    name = f"dest-src-{unique}"
    create(lam, name, "def handler(event, context):\n    return 'done'\n")
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": sink}})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"k": "v"}')
    record = json.loads(wait_for(lambda: out.exists() and out.read_text()))
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestPayload"] == {"k": "v"}
    assert record["responsePayload"] == "done"


def test_event_invoke_config_survives_a_restart(tmp_path: Path, unique: str) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    gw.home.mkdir()
    gw.start()
    try:
        lam = client(gw, "lambda")
        name = f"keep-{unique}"
        create(lam, name, "def handler(event, context):\n    return 1\n")
        lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0, MaximumEventAgeInSeconds=300)
        gw.stop()
        gw.start()
        kept = client(gw, "lambda").get_function_event_invoke_config(FunctionName=name)
        assert (kept["MaximumRetryAttempts"], kept["MaximumEventAgeInSeconds"]) == (0, 300)
    finally:
        gw.stop()


def test_retry_and_event_age_decisions() -> None:
    """The pure rules behind the above (EventAgeExceeded needs a minute of real time, so it is checked here)."""
    from gateway.sinks.lambda_.destinations import after_function_error, expired

    minute = 60_000
    cases = [
        # invocations, retry attempts, age now, delay before the retry → condition (None: retry)
        (1, 2, 0, minute, None),
        (3, 2, 0, minute, "RetriesExhausted"),
        (1, 0, 0, minute, "RetriesExhausted"),
        (2, 2, 30_000, minute, "EventAgeExceeded"),  # the retry would start after the 60 s maximum age
        (1, 1, 0, 1_000, None),
    ]
    for invocations, retries, age, delay, want in cases:
        got = after_function_error(
            invocations=invocations,
            retry_attempts=retries,
            created_ms=1_000_000,
            now_ms=1_000_000 + age,
            delay_ms=delay,
            max_event_age_ms=minute,
        )
        assert got == want, (invocations, retries, age, delay)
    assert expired(0, minute + 1, minute) and not expired(0, minute, minute)
