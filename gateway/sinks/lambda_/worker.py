"""The Lambda worker process: imports one function's handler and runs invocations sent over a pipe.

Run as a script (`python worker.py <code dir> <module.function>`), so it imports nothing from edgesim and the
function's code directory is first on `sys.path`, as `/var/task` is on AWS. Protocol: one JSON object per line on
the original stdin (requests) and stdout (responses); file descriptors 0 and 1 are then pointed away so handler
output can never corrupt the channel. `print` and `logging` output is captured per invocation and returned with it.
This module uses the standard library only.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO


class LambdaContext:
    """The `context` argument, with the fields and method AWS's Python runtime provides."""

    def __init__(self, fields: dict[str, Any], deadline_ms: int) -> None:
        self.function_name: str = fields["function_name"]
        self.function_version: str = fields["function_version"]
        self.invoked_function_arn: str = fields["invoked_function_arn"]
        # AWS's runtime reads this from AWS_LAMBDA_FUNCTION_MEMORY_SIZE, so it is a string there too.
        self.memory_limit_in_mb: str = str(fields["memory_limit_in_mb"])
        self.aws_request_id: str = fields["aws_request_id"]
        self.log_group_name: str = fields["log_group_name"]
        self.log_stream_name: str = fields["log_stream_name"]
        self.identity: Any = None
        self.client_context: Any = fields.get("client_context")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


class _Capture:
    """A text stream collecting everything written during one invocation (threads included)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        with self._lock:
            return "".join(self.parts)


class _LambdaLogHandler(logging.Handler):
    """Formats records as AWS's runtime does: `[LEVEL]\\t<time>\\t<request id>\\t<message>`, to the capture."""

    request_id = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            millis = int(record.msecs)
            line = f"[{record.levelname}]\t{stamp}.{millis:03d}Z\t{self.request_id}\t{record.getMessage()}\n"
            if record.exc_info:
                line += "".join(traceback.format_exception(*record.exc_info))
            sys.stdout.write(line)
        except Exception:
            self.handleError(record)


def _error(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


class Runtime:
    def __init__(self, handler_spec: str) -> None:
        self.handler_spec = handler_spec
        self.handler: Callable[[Any, LambdaContext], Any] | None = None
        self.log_handler = _LambdaLogHandler()
        logging.getLogger().addHandler(self.log_handler)

    def _load(self) -> dict[str, Any] | None:
        module_name, _, function_name = self.handler_spec.rpartition(".")
        if not module_name or not function_name:
            return _error("Runtime.MalformedHandlerName", f"Bad handler '{self.handler_spec}': not enough values")
        try:
            module = importlib.import_module(module_name.replace("/", "."))
        except Exception as exc:
            return _error("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
        handler = getattr(module, function_name, None)
        if not callable(handler):
            return _error("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
        self.handler = handler
        return None

    def invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        capture = _Capture()
        saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = capture  # type: ignore[assignment]
        self.log_handler.request_id = request["context"]["aws_request_id"]
        try:
            return self._run(request, capture)
        finally:
            sys.stdout, sys.stderr = saved

    def _run(self, request: dict[str, Any], capture: _Capture) -> dict[str, Any]:
        if self.handler is None:
            failure = self._load()
            if failure is not None:
                capture.write(f"[ERROR] {failure['errorType']}: {failure['errorMessage']}\n")
                return {"error": failure, "log": capture.text()}
        assert self.handler is not None
        context = LambdaContext(request["context"], int(request["deadline_ms"]))
        try:
            event = json.loads(request["event"])
            result = self.handler(event, context)
        except Exception as exc:
            stack = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
            failure = _error(type(exc).__name__, str(exc), stack)
            capture.write(f"[ERROR] {failure['errorType']}: {failure['errorMessage']}\n")
            capture.write("Traceback (most recent call last):\n" + "".join(stack))
            return {"error": failure, "log": capture.text()}
        try:
            payload = json.dumps(result)
        except (TypeError, ValueError) as exc:
            failure = _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")
            capture.write(f"[ERROR] {failure['errorType']}: {failure['errorMessage']}\n")
            return {"error": failure, "log": capture.text()}
        return {"payload": payload, "log": capture.text()}


def main() -> None:
    code_dir, handler_spec = sys.argv[1], sys.argv[2]
    sys.path[0] = code_dir  # where a script's own directory would be: the function's code wins imports
    os.chdir(code_dir)
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray fd-level output goes to the gateway's log, never into the protocol
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    runtime = Runtime(handler_spec)
    for line in requests:
        if not line.strip():
            continue
        response = runtime.invoke(json.loads(line))
        responses.write(json.dumps(response).encode() + b"\n")
        responses.flush()


if __name__ == "__main__":
    main()
