"""Parts start and stop through one AsyncExitStack: what started is stopped, in reverse order, whether the block
ends or the start fails half-way (gateway.tasks.Lifecycle, used by Gateway and EdgeCore)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import Config
from gateway.tasks import Lifecycle


class Parts(Lifecycle):
    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.log: list[str] = []

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        for name in ("store", "broker", "api"):
            if self.fail_after is not None and len(self.log) == self.fail_after:
                raise OSError(f"{name} could not start")
            self.log.append(f"start {name}")
            stack.callback(self.log.append, f"stop {name}")


def test_parts_stop_in_reverse_order() -> None:
    async def run() -> list[str]:
        async with Parts() as parts:
            parts.log.append("running")
        return parts.log

    assert asyncio.run(run()) == [
        "start store", "start broker", "start api", "running", "stop api", "stop broker", "stop store",
    ]  # fmt: skip


def test_a_start_that_fails_half_way_stops_only_what_started() -> None:
    parts = Parts(fail_after=2)

    async def run() -> None:
        async with parts:
            pytest.fail("the block must not run")

    with pytest.raises(OSError, match="api could not start"):
        asyncio.run(run())
    assert parts.log == ["start store", "start broker", "stop broker", "stop store"]


def _config(tmp_path: Path, mqtts_port: int) -> Config:
    return Config(
        mqtts_port=mqtts_port,
        wss_port=None,
        https_port=0,
        api_port=0,
        data_dir=tmp_path / "data",
        certs_dir=tmp_path / "certs",
    )


async def _nothing_left_running() -> None:
    """Every task but this one has finished (a cancelled one may need a loop turn or two to unwind)."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=2.0)
    assert [t.get_name() for t in others if not t.done()] == []


def test_a_gateway_whose_start_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    """The MQTT port is taken: the start fails after the store, broker, sinks and API are up. Everything is stopped
    (no task left, the data-dir lock released), so the next gateway on the same data dir starts and stops cleanly."""

    async def run() -> dict[str, int]:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError):
                async with Gateway(_config(tmp_path, taken.getsockname()[1])):
                    pytest.fail("the gateway must not start on a taken port")
        await _nothing_left_running()
        async with Gateway(_config(tmp_path, 0)) as gw:
            ports = dict(gw.ports)
            assert gw.rules_engine.sinks.remote is False
        await _nothing_left_running()
        return ports

    ports = asyncio.run(run())
    assert {"api", "mqtts", "https"} <= ports.keys()
