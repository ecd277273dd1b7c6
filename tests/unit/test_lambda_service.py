"""The Lambda service without the HTTP layer: name parsing, the worker runtime, durable async events."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import SystemClock
from gateway.sinks.lambda_.exceptions import InvalidParameterValueException, InvalidRequestContentException
from gateway.sinks.lambda_.service import LambdaService, function_name
from gateway.sinks.lambda_.worker import Runtime
from gateway.store import Store


def zipped(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


def params(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": "arn:aws:iam::123456789012:role/r",
        "Handler": "app.handler",
        "Code": {"ZipFile": zipped(source)},
        **extra,
    }


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("f1", "f1"),
        ("f1:prod", "f1"),
        ("123456789012:function:f1", "f1"),
        ("arn:aws:lambda:us-east-1:123456789012:function:f1", "f1"),
        ("arn:aws:lambda:us-east-1:123456789012:function:f1:7", "f1"),
    ],
)
def test_function_name_forms(ref: str, name: str) -> None:
    assert function_name(ref) == name


def test_worker_runtime_captures_output_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wmod.py").write_text(
        "def handler(event, context):\n    print('saw', event['x'])\n    if event['x'] < 0:\n"
        "        raise KeyError('neg')\n    return {'double': event['x'] * 2}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runtime = Runtime("wmod.handler")
    context = {
        "function_name": "f",
        "function_version": "$LATEST",
        "invoked_function_arn": "arn",
        "memory_limit_in_mb": 128,
        "aws_request_id": "r1",
        "log_group_name": "/aws/lambda/f",
        "log_stream_name": "s",
    }
    ok = runtime.invoke({"event": '{"x": 2}', "deadline_ms": 0, "context": context})
    assert json.loads(ok["payload"]) == {"double": 4} and ok["log"] == "saw 2\n"
    failed = runtime.invoke({"event": '{"x": -1}', "deadline_ms": 0, "context": context})
    assert failed["error"]["errorType"] == "KeyError"
    missing = Runtime("nosuchmodule.handler").invoke({"event": "{}", "deadline_ms": 0, "context": context})
    assert missing["error"]["errorType"] == "Runtime.ImportModuleError"


def test_validation(tmp_path: Path) -> None:
    service = LambdaService(Store(tmp_path / "db"), SystemClock(), "us-east-1", "123456789012", tmp_path / "code")
    with pytest.raises(InvalidParameterValueException):
        service.create_function(params("f", "x", Runtime="nodejs20.x"))
    with pytest.raises(InvalidParameterValueException):
        service.create_function(params("f", "x", Environment={"Variables": {"AWS_REGION": "x"}}))
    with pytest.raises(InvalidParameterValueException):
        service.create_function(params("f", "x", Timeout=901))
    service.create_function(params("f", "def handler(e, c):\n    return e\n"))
    with pytest.raises(InvalidRequestContentException):
        service.enqueue_event("f", b"{not json")


def test_async_events_are_durable_across_restarts(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    source = (
        "import json, os\n\ndef handler(event, context):\n    open(os.environ['OUT'], 'w').write(json.dumps(event))\n"
    )
    store = Store(tmp_path / "db")
    first = LambdaService(store, SystemClock(), "us-east-1", "123456789012", tmp_path / "code")
    first.create_function(params("f", source, Environment={"Variables": {"OUT": str(out)}}))
    first.enqueue_event("f", b'{"n": 5}')  # acknowledged, never dispatched: the "gateway" stops here
    store.close()

    async def restart() -> None:
        store = Store(tmp_path / "db")
        second = LambdaService(store, SystemClock(), "us-east-1", "123456789012", tmp_path / "code")
        assert second.pending_events("f") == 1
        await second.start()
        try:
            for _ in range(200):
                if second.pending_events("f") == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            await second.stop()
            store.close()

    asyncio.run(restart())
    assert json.loads(out.read_text()) == {"n": 5}
