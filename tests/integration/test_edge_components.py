"""Edge components (reference §11.1): real worker processes running small handler modules from a tmp folder."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from gateway.edge.components import ComponentConfig, ComponentRunner, EventSource
from gateway.errors import EdgesimError, ResourceNotFoundException

HANDLERS = {
    "app.py": """
import logging
import os
import subprocess
import time


def echo(event, context):
    context.publish("out", {"event": event if not isinstance(event, bytes) else event.hex(),
                            "kind": type(event).__name__, "topic": context.topic, "pid": os.getpid()})


def calls(event, context):
    remaining = context.get_remaining_time_in_millis()
    context.publish("local/info", {"fn": context.function_name, "topic": context.topic,
                                   "request": context.aws_request_id, "remaining_ok": 0 < remaining <= 3000})
    context.publish_to_iot_core("cloud/up", b"\\x00\\x01", qos=0)
    context.publish("local/doc", context.get_thing_shadow("lamp", "cfg"))
    context.update_thing_shadow("lamp", {"state": {"reported": {"on": True}}})
    context.delete_thing_shadow("lamp", shadow_name="old")
    try:
        context.get_thing_shadow("missing")
    except context.EdgeError as exc:
        context.publish("local/error", {"code": exc.code, "message": exc.message})
    try:
        context.publish_to_iot_core("cloud/full", "text")
    except Exception as exc:
        context.publish("local/error", {"code": exc.code, "message": exc.message})
    print("handled", event["n"])
    logging.warning("warned %s", event["n"])


def sleepy(event, context):
    context.publish("started", {"n": event["n"], "pid": os.getpid()})
    time.sleep(event.get("sleep", 0.4))


def hang(event, context):
    if event.get("hang"):
        child = subprocess.Popen(["sleep", "30"])
        context.publish("child", {"pid": child.pid, "worker": os.getpid()})
        time.sleep(30)
    context.publish("out", {"pid": os.getpid()})


def crash(event, context):
    if event.get("crash"):
        os._exit(3)
    context.publish("out", {"pid": os.getpid()})


def fail(event, context):
    if event.get("fail"):
        raise ValueError("bad n " + str(event["n"]))
    context.publish("out", {"pid": os.getpid()})
""",
    "broken.py": "import no_such_module_here\n\ndef handler(event, context):\n    pass\n",
}


class SpoolFull(EdgesimError):
    pass


class RecordingOps:
    """The core's side of the edge calls, recording each one."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.times: list[float] = []

    def published(self, topic: str) -> list[Any]:
        return [json.loads(call[2]) for call in self.calls if call[:2] == ("publish", topic)]

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        self.times.append(time.monotonic())

    async def publish(self, topic: str, payload: bytes) -> None:
        self._record("publish", topic, payload)

    async def publish_to_iot_core(self, topic: str, payload: bytes, qos: int) -> None:
        self._record("publish_to_iot_core", topic, payload, qos)
        if topic == "cloud/full":
            raise SpoolFull("Message spool is full. Message could not be added.")

    async def get_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        self._record("get_thing_shadow", thing, shadow)
        if thing == "missing":
            raise ResourceNotFoundException("No shadow exists with name: 'missing'")
        return b'{"state": {"desired": {"on": true}}, "version": 3}'

    async def update_thing_shadow(self, thing: str, shadow: str | None, payload: bytes) -> bytes:
        self._record("update_thing_shadow", thing, shadow, json.loads(payload))
        return b'{"version": 4}'

    async def delete_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        self._record("delete_thing_shadow", thing, shadow)
        return b'{"version": 4}'


Scenario = Callable[[ComponentRunner, RecordingOps], Awaitable[None]]


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    for name, source in HANDLERS.items():
        (tmp_path / name).write_text(source)
    return tmp_path


def run(code_dir: Path, scenario: Scenario, **config: Any) -> ComponentRunner:
    """Start a runner for `config`, play `scenario`, stop it, and check no worker process is left."""

    async def main() -> ComponentRunner:
        ops = RecordingOps()
        runner = ComponentRunner(ComponentConfig(name="comp", **config), code_dir, ops)
        await runner.start()
        try:
            await scenario(runner, ops)
        finally:
            await runner.stop()
        assert runner.stats["instances"] == 0 and runner.stats["busy"] == 0 and runner.state == "stopped"
        assert psutil.Process().children(recursive=True) == []
        return runner

    return asyncio.run(main())


def gone(pid: int) -> bool:
    """The process has exited (an orphan killed with its worker may stay a zombie until init reaps it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Poll until `check()`; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def submit(runner: ComponentRunner, *events: Any) -> None:
    for event in events:
        assert runner.submit("in/t", json.dumps(event).encode())


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match=r"PUB_SUB event source topics take no wildcards"):
        EventSource(topic="sensors/+/temp")
    with pytest.raises(ValidationError, match=r"PUB_SUB event source topics take no wildcards"):
        ComponentConfig.model_validate({"name": "c", "handler": "app.echo", "event_sources": [{"topic": "a/#"}]})
    assert EventSource(topic="sensors/+/temp", type="IOT_CORE").topic == "sensors/+/temp"
    assert EventSource(topic="#", type="LOCAL_MQTT").type == "LOCAL_MQTT"
    with pytest.raises(ValidationError, match=r"'#' is only allowed as the whole last topic level"):
        EventSource(topic="a/#/b", type="IOT_CORE")
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs are not permitted"):
        ComponentConfig.model_validate({"name": "c", "handler": "app.echo", "memory_mb": 16})
    with pytest.raises(ValidationError, match=r"name"):
        ComponentConfig(name="bad name", handler="app.echo")
    with pytest.raises(ValidationError, match=r"handler must be 'module.function'"):
        ComponentConfig(name="c", handler="echo")
    with pytest.raises(ValidationError, match=r"max_instances"):
        ComponentConfig(name="c", handler="app.echo", max_instances=0)
    assert ComponentConfig(name="c", handler="pkg.mod.fn").timeout_s == 3


def test_event_reaches_handler_and_edge_calls_reach_ops(code_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgesim.edge.components")

    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        assert runner.submit("sensors/lamp", b'{"n": 7}')
        await until(lambda: runner.stats["succeeded"] == 1)
        info = ops.published("local/info")[0]
        assert info["fn"] == "comp" and info["topic"] == "sensors/lamp" and info["remaining_ok"]
        assert len(info["request"]) == 36
        edge_calls = [call for call in ops.calls if call[0] != "publish"]
        assert edge_calls == [
            ("publish_to_iot_core", "cloud/up", b"\x00\x01", 0),
            ("get_thing_shadow", "lamp", "cfg"),
            ("update_thing_shadow", "lamp", None, {"state": {"reported": {"on": True}}}),
            ("delete_thing_shadow", "lamp", "old"),
            ("get_thing_shadow", "missing", None),
            ("publish_to_iot_core", "cloud/full", b"text", 1),
        ]
        assert ops.published("local/doc") == [{"state": {"desired": {"on": True}}, "version": 3}]
        assert ops.published("local/error") == [
            {"code": "ResourceNotFoundException", "message": "No shadow exists with name: 'missing'"},
            {"code": "SpoolFull", "message": "Message spool is full. Message could not be added."},
        ]

    run(code_dir, scenario, handler="app.calls", pinned=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "edgesim.edge.components"]
    assert "[comp] handled 7" in logged and "[comp] warned 7" in logged


@pytest.mark.parametrize(
    ("encoding", "payload", "kind", "event"),
    [
        ("json", b'{"a": [1, 2]}', "dict", {"a": [1, 2]}),
        ("json", b"not json", "str", "not json"),
        ("binary", b'{"a": 1}', "bytes", b'{"a": 1}'.hex()),
        ("binary", b"\xff\x00", "bytes", "ff00"),
    ],
)
def test_input_encoding(code_dir: Path, encoding: str, payload: bytes, kind: str, event: Any) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        assert runner.submit("in/t", payload)
        await until(lambda: runner.stats["succeeded"] == 1)
        [out] = ops.published("out")
        assert (out["kind"], out["event"], out["topic"]) == (kind, event, "in/t")

    run(code_dir, scenario, handler="app.echo", input_encoding=encoding)


def test_pinned_runs_items_in_order_on_one_worker(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        assert runner.stats["instances"] == 1  # started with the component
        submit(runner, *({"n": n} for n in range(20)))
        await until(lambda: runner.stats["succeeded"] == 20)
        outs = ops.published("out")
        assert [out["event"]["n"] for out in outs] == list(range(20))
        assert len({out["pid"] for out in outs}) == 1
        assert runner.stats["instances"] == 1 and runner.stats["invocations"] == 20

    run(code_dir, scenario, handler="app.echo", pinned=True, max_instances=5)


def test_on_demand_concurrency_is_bounded_by_max_instances(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        assert runner.stats["instances"] == 0  # on-demand: nothing until there is work
        most = 0

        def all_done() -> bool:
            nonlocal most
            most = max(most, int(runner.stats["instances"] or 0))
            return runner.stats["succeeded"] == 4

        submit(runner, *({"n": n, "sleep": 0.4} for n in range(4)))
        took = await until(all_done)
        assert 0.8 <= took < 1.6
        assert most == 2
        starts = ops.published("started")
        assert [s["n"] for s in starts] == [0, 1, 2, 3]  # FIFO
        assert len({s["pid"] for s in starts}) == 2

    run(code_dir, scenario, handler="app.sleepy", max_instances=2)


def test_idle_workers_are_stopped(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        submit(runner, {"n": 1})
        await until(lambda: runner.stats["succeeded"] == 1)
        [out] = ops.published("out")
        assert runner.stats["instances"] == 1
        idled = await until(lambda: runner.stats["instances"] == 0)
        assert 0.15 <= idled < 1.0
        assert gone(out["pid"])
        submit(runner, {"n": 2})  # a fresh worker
        await until(lambda: runner.stats["succeeded"] == 2)
        assert ops.published("out")[1]["pid"] != out["pid"]
        assert runner.stats["crashes"] == 0

    run(code_dir, scenario, handler="app.echo", idle_timeout_s=0.3)


def test_full_queue_drops(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        submit(runner, {"n": 0, "sleep": 0.3})
        await until(lambda: runner.stats["busy"] == 1)
        submit(runner, {"n": 1, "sleep": 0}, {"n": 2, "sleep": 0})
        assert runner.stats["queued"] == 2
        assert not runner.submit("in/t", b'{"n": 3}')
        assert runner.stats["dropped"] == 1
        await until(lambda: runner.stats["succeeded"] == 3)
        assert [s["n"] for s in ops.published("started")] == [0, 1, 2]
        submit(runner, {"n": 4, "sleep": 5})
        await until(lambda: runner.stats["busy"] == 1)
        submit(runner, {"n": 5, "sleep": 0})  # still queued when the runner stops

    runner = run(code_dir, scenario, handler="app.sleepy", pinned=True, max_queue_size=2)
    stats = runner.stats
    assert stats["dropped"] == 2  # the full queue, then the item still queued at stop
    assert stats["failed"] == 1 and stats["invocations"] == 4
    assert not runner.submit("in/t", b"{}")  # stopped


def test_timeout_kills_the_worker_and_its_children(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        submit(runner, {"hang": True})
        await until(lambda: runner.stats["timeouts"] == 1)
        [child] = ops.published("child")
        assert gone(child["pid"]) and gone(child["worker"])
        stats = runner.stats
        assert stats["failed"] == 1 and stats["crashes"] == 0
        assert "timed out after 0.3 s" in str(stats["last_error"])
        submit(runner, {})  # a new worker serves the next item, without backoff
        await until(lambda: runner.stats["succeeded"] == 1)
        assert ops.published("out")[0]["pid"] != child["worker"]

    run(code_dir, scenario, handler="app.hang", pinned=True, timeout_s=0.3)


def test_crash_is_counted_and_the_worker_restarted_with_backoff(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        first_pid = (await _pid(runner, ops))["pid"]
        submit(runner, {"crash": True}, {})
        await until(lambda: runner.stats["crashes"] == 1)
        crashed_at = time.monotonic()
        assert runner.state == "backoff"
        assert runner.stats["last_error"] == "worker exited with code 3"
        await until(lambda: runner.stats["succeeded"] == 2)
        assert ops.times[-1] - crashed_at >= 0.45  # served by the restarted worker after the 0.5 s backoff
        assert ops.published("out")[-1]["pid"] != first_pid
        stats = runner.stats
        assert (stats["crashes"], stats["restarts"], stats["failed"], stats["state"]) == (1, 1, 1, "running")
        submit(runner, {"crash": True})  # the backoff was reset by the served item: 0.5 s again, not 1 s
        await until(lambda: runner.stats["crashes"] == 2)
        crashed_at = time.monotonic()
        await until(lambda: runner.stats["instances"] == 1)
        assert 0.4 <= time.monotonic() - crashed_at < 0.9

    run(code_dir, scenario, handler="app.crash", pinned=True)


async def _pid(runner: ComponentRunner, ops: RecordingOps) -> Any:
    served = runner.stats["succeeded"]
    submit(runner, {})
    await until(lambda: runner.stats["succeeded"] == int(served or 0) + 1)
    return ops.published("out")[-1]


def test_handler_exception_is_an_error_not_a_crash(code_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        pid = (await _pid(runner, ops))["pid"]
        submit(runner, {"fail": True, "n": 5})
        await until(lambda: runner.stats["errors"] == 1)
        assert runner.stats["last_error"] == "ValueError: bad n 5"
        assert (await _pid(runner, ops))["pid"] == pid
        assert runner.stats["crashes"] == 0 and runner.stats["failed"] == 1

    run(code_dir, scenario, handler="app.fail", pinned=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("[comp] handler raised ValueError: bad n 5") and "app.py" in m for m in errors)


def test_import_error_is_reported_and_retried(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        stats = runner.stats
        assert stats["crashes"] == 1 and stats["state"] == "backoff" and stats["instances"] == 0
        assert stats["last_error"] == (
            "Unable to import module 'broken': ModuleNotFoundError: No module named 'no_such_module_here'"
        )
        submit(runner, {})  # waits in the queue meanwhile
        took = await until(lambda: runner.stats["crashes"] == 2)
        assert took >= 0.4 and runner.stats["restarts"] == 1 and runner.stats["queued"] == 1
        assert ops.calls == []

    run(code_dir, scenario, handler="broken.handler", pinned=True)


def test_stop_kills_busy_workers(code_dir: Path) -> None:
    async def scenario(runner: ComponentRunner, ops: RecordingOps) -> None:
        submit(runner, *({"n": n, "sleep": 5} for n in range(4)))
        await until(lambda: len(ops.published("started")) == 3)
        pids = [s["pid"] for s in ops.published("started")]
        stopped = time.monotonic()
        await runner.stop()
        assert time.monotonic() - stopped < 1.0
        assert all(gone(pid) for pid in pids)

    stats = run(code_dir, scenario, handler="app.sleepy", max_instances=3).stats
    assert (stats["invocations"], stats["failed"], stats["dropped"], stats["queued"]) == (3, 3, 1, 0)
