"""The job agent's protocol decisions, driven message by message through a recording host (no broker): what it asks
for after a restart whose job went away, and that it never asks twice while an answer is pending."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from devices.figures import Figures
from devices.job_agent import JobAgent
from devices.spec import JobsSpec

PREFIX = "$aws/things/t1/jobs/"


class Host:
    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.firmware: list[str] = []
        self.reboots: list[float] = []

    def publish_json(self, topic: str, body: dict[str, Any], on_done: Callable[[Exception | None], None]) -> None:
        self.sent.append((topic.removeprefix(PREFIX), body))
        on_done(None)

    def report_firmware(self, field: str, version: str) -> None:
        self.firmware.append(version)

    async def reboot(self, downtime: float) -> None:
        self.reboots.append(downtime)
        self.connected = False


def feed(agent: JobAgent, suffix: str, body: dict[str, Any]) -> None:
    agent.on_message(PREFIX + suffix, json.dumps(body).encode())


def execution(job: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"execution": {"jobId": job, "status": "IN_PROGRESS", "jobDocument": doc or {}, "versionNumber": 2}}


def test_start_next_is_asked_once_per_answer_and_again_after_a_reconnect() -> None:
    async def main() -> None:
        host = Host()
        agent = JobAgent("t1", JobsSpec(duration=(0.0, 0.0), progress_steps=0), random.Random(1), Figures(), host, None)
        agent.on_connected()
        feed(agent, "notify-next", execution("a"))  # an answer is pending: no second request
        assert [t for t, _ in host.sent] == ["start-next"]
        feed(agent, "start-next/accepted", {})
        feed(agent, "notify-next", {})  # nothing pending
        assert len(host.sent) == 1
        feed(agent, "notify-next", execution("a"))
        assert len(host.sent) == 2
        agent.on_connected()  # the old connection's answer is lost: ask again
        assert len(host.sent) == 3
        feed(agent, "garbage/topic", {})
        agent.on_message(PREFIX + "notify-next", b"{not json")
        assert agent.figures.errors() == {"jobs_payload": 1}

    asyncio.run(main())


def test_a_job_that_goes_away_during_the_restart_is_forgotten() -> None:
    async def main() -> None:
        host = Host()
        spec = JobsSpec(duration=(0.0, 0.0), progress_steps=0, reboot={"downtime": (1, 1)})  # type: ignore[arg-type]
        agent = JobAgent("t1", spec, random.Random(1), Figures(), host, None)
        agent.on_connected()
        feed(agent, "start-next/accepted", execution("fw", {"version": "9"}))
        await asyncio.sleep(0.01)
        assert host.reboots == [1.0] and host.sent[-1][1]["statusDetails"] == {"progress": "rebooting"}
        host.connected = True
        agent.on_connected()
        feed(agent, "start-next/accepted", {})  # canceled meanwhile: nothing to finish
        assert agent.current is None and agent.rebooted_for is None and host.firmware == []
        feed(agent, "notify-next", execution("next"))
        feed(agent, "start-next/accepted", execution("next", {"version": "10"}))
        await asyncio.sleep(0.01)
        assert host.reboots == [1.0, 1.0] and agent.rebooted_for == ("next", "10")
        host.connected = True
        agent.on_connected()
        feed(agent, "start-next/accepted", execution("next"))  # handed back after the restart: report it
        assert host.firmware == ["10"]
        final = host.sent[-2]
        assert final[0] == "next/update" and final[1]["status"] == "SUCCEEDED"
        assert final[1]["statusDetails"] == {"progress": "done", "firmware_version": "10", "rebooted": "true"}
        assert host.sent[-1][0] == "start-next"

    asyncio.run(main())
