"""A component worker process: imports one edge component's handler and runs its work items (reference §11.1).

Started by the edge core as ``python -u component_worker.py <code dir> <module.function>``, with the code dir as cwd
and first on ``sys.path``; it imports nothing from edgesim. The conversation with the core is JSON lines on the
original stdin and stdout (see component_worker_proc.py); fds 0 and 1 are then pointed away so handler output can
never corrupt it.

The handler is called Lambda-style, ``handler(event, context)``. With input encoding ``json`` the event is the parsed
payload, or the payload as a ``str`` when it is not valid JSON (bytes that are not UTF-8 replaced with U+FFFD); with
``binary`` it is the payload ``bytes``. The context's edge calls (``publish``, ``publish_to_iot_core`` and the shadow
operations) are synchronous: they block until the core answers, from any thread, and raise ``EdgeError(code,
message)`` when the core refuses. ``print`` and ``logging`` output goes to the core's log line by line (the root
logger keeps Python's default WARNING level, as on Lambda).
"""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

Message = dict[str, Any]
Payload = dict[str, Any] | list[Any] | str | bytes | bytearray


class EdgeError(Exception):
    """The core refused an edge call: `code` is the AWS error code (or the core's error class), `message` its text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LoadError(Exception):
    """The handler could not be imported."""


class Channel:
    """The pipes to the core: whole lines written under a lock, a reader thread routing replies to their callers."""

    def __init__(self, incoming: BinaryIO, outgoing: BinaryIO) -> None:
        self.work: queue.Queue[Message | None] = queue.Queue()  # work items for the main thread; None at EOF
        self._out = outgoing
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue[Message | None]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        threading.Thread(target=self._read, args=(incoming,), name="edge-channel", daemon=True).start()

    def send(self, message: Message) -> None:
        line = json.dumps(message).encode() + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def log(self, level: str, text: str) -> None:
        self.send({"type": "log", "level": level, "text": text})

    def call(self, op: str, args: Message) -> bytes:
        """Ask the core to perform `op` and wait for its answer."""
        if self._closed:
            raise EdgeError("ServiceUnavailableException", "The edge core closed the connection")
        slot: queue.Queue[Message | None] = queue.Queue(maxsize=1)
        call_id = next(self._ids)
        self._replies[call_id] = slot  # registered before sending, so the reply always finds it
        self.send({"type": "call", "id": call_id, "op": op, "args": args})
        reply = slot.get()
        if reply is None:
            raise EdgeError("ServiceUnavailableException", "The edge core closed the connection")
        error = reply.get("error")
        if error:
            raise EdgeError(error["code"], error["message"])
        return base64.b64decode(reply["payload"])

    def _read(self, incoming: BinaryIO) -> None:
        for line in incoming:
            message = json.loads(line)
            if message["type"] == "reply":
                self._replies.pop(message["id"]).put(message)
            else:
                self.work.put(message)
        self._closed = True
        self.work.put(None)
        for slot in list(self._replies.values()):
            slot.put(None)


class LogStream:
    """`sys.stdout`/`sys.stderr` replacement sending each complete line to the core's log at `level`."""

    def __init__(self, channel: Channel, level: str) -> None:
        self._channel = channel
        self._level = level
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._buffer = (self._buffer + text).split("\n")
        for line in lines:
            self._channel.log(self._level, line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._channel.log(self._level, rest)

    def isatty(self) -> bool:
        return False


class ForwardingHandler(logging.Handler):
    """Sends each log record, formatted, to the core's log at the record's level."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._channel.log(record.levelname, self.format(record))
        except Exception:
            self.handleError(record)


def _encode(payload: Payload) -> str:
    if isinstance(payload, dict | list):
        data = json.dumps(payload).encode()
    elif isinstance(payload, str):
        data = payload.encode()
    elif isinstance(payload, bytes | bytearray):
        data = bytes(payload)
    else:
        raise TypeError(f"payload must be a dict, list, str or bytes, not {type(payload).__name__}")
    return base64.b64encode(data).decode("ascii")


class ComponentContext:
    """The handler's `context`: Lambda's request fields plus the Greengrass IPC calls a component may make."""

    EdgeError = EdgeError  # so handlers can write `except context.EdgeError`

    def __init__(self, channel: Channel, request: Message) -> None:
        self.function_name: str = request["function_name"]
        self.topic: str = request["topic"]
        self.aws_request_id: str = request["id"]
        self._deadline_ms: int = request["deadline_ms"]
        self._channel = channel

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def publish(self, topic: str, payload: Payload) -> None:
        """Local pub/sub (IPC PublishToTopic)."""
        self._channel.call("publish", {"topic": topic, "payload": _encode(payload)})

    def publish_to_iot_core(self, topic: str, payload: Payload, qos: int = 1) -> None:
        """To the cloud through the core's spool (IPC PublishToIoTCore)."""
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos!r}")
        self._channel.call("publish_to_iot_core", {"topic": topic, "payload": _encode(payload), "qos": qos})

    def get_thing_shadow(self, thing_name: str, shadow_name: str | None = None) -> dict[str, Any]:
        return self._shadow("get_thing_shadow", thing_name, shadow_name)

    def update_thing_shadow(self, thing_name: str, payload: Payload, shadow_name: str | None = None) -> dict[str, Any]:
        return self._shadow("update_thing_shadow", thing_name, shadow_name, payload)

    def delete_thing_shadow(self, thing_name: str, shadow_name: str | None = None) -> dict[str, Any]:
        return self._shadow("delete_thing_shadow", thing_name, shadow_name)

    def _shadow(self, op: str, thing: str, shadow: str | None, payload: Payload | None = None) -> dict[str, Any]:
        args: Message = {"thing": thing, "shadow": shadow}
        if payload is not None:
            args["payload"] = _encode(payload)
        document: dict[str, Any] = json.loads(self._channel.call(op, args))
        return document

    def __repr__(self) -> str:
        return f"ComponentContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


Handler = Callable[[Any, ComponentContext], object]
_OWN_FILES = {__file__, importlib.__file__}


def load_handler(spec: str) -> Handler:
    module_name, _, function_name = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raises while importing
        raise LoadError(f"Unable to import module '{module_name}': {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise LoadError(f"Handler '{function_name}' missing on module '{module_name}'")
    return handler  # type: ignore[no-any-return]


def decode_event(payload: bytes, encoding: str) -> Any:
    if encoding == "binary":
        return payload
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")


def invoke(handler: Handler, channel: Channel, request: Message) -> None:
    done: Message = {"type": "done", "id": request["id"]}
    try:
        event = decode_event(base64.b64decode(request["payload"]), request["encoding"])
        handler(event, ComponentContext(channel, request))
    except Exception as exc:
        done["error"] = {"type": type(exc).__name__, "message": str(exc), "trace": _user_frames(exc)}
    _flush_output()
    channel.send(done)  # after the item's output, so the core logs it first


def _user_frames(exc: BaseException) -> str:
    """The traceback's frames without the worker's own and the import machinery's."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename not in _OWN_FILES and not frame.filename.startswith("<frozen ")
    ]
    return "".join(traceback.format_list(frames))


def _flush_output() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def main() -> None:
    code_dir, handler_spec = sys.argv[1], sys.argv[2]
    sys.path[0] = code_dir  # where a script's own directory would be: the component's code wins imports
    os.chdir(code_dir)
    channel = Channel(os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray fd-level output goes to the core's stderr, never into the protocol
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = LogStream(channel, "INFO")  # type: ignore[assignment]
    sys.stderr = LogStream(channel, "WARNING")  # type: ignore[assignment]
    logging.getLogger().addHandler(ForwardingHandler(channel))
    try:
        handler = load_handler(handler_spec)
    except LoadError as exc:
        _flush_output()
        cause = exc.__cause__
        if cause is not None:
            trace = _user_frames(cause) + "".join(traceback.format_exception_only(cause))
            channel.log("ERROR", f"Traceback (most recent call last):\n{trace}".rstrip("\n"))
        channel.send({"type": "fatal", "message": str(exc)})
        sys.exit(1)
    _flush_output()
    channel.send({"type": "ready"})
    while (request := channel.work.get()) is not None:
        invoke(handler, channel, request)


if __name__ == "__main__":
    main()
