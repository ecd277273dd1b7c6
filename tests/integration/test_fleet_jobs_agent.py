"""The fleet's job agents against the AWS IoT Jobs MQTT API contract, on mosquitto with a small in-test responder
playing the service (start-next, update, notify-next as AWS documents them) and an HTTP server holding the firmware:
MQTT 3.1.1 and 5 devices download, report progress, reboot, report their new firmware, succeed or fail as configured
and pick up the next queued job."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from test_fleet import mosquitto  # noqa: F401 - the fixture

from devices.device import Target
from devices.figures import Figures
from devices.fleet import FleetOptions, run_devices
from devices.spec import expand, parse_fleet
from mqttwire.client import AsyncMqttClient, Message

FIRMWARE = b"\x7fELF" + bytes(10_236)

FLEET = """
fleet: jb
seed: 7
device_types:
  - name: cam
    count: 3
    interval: 30s
    shadow: {initial: {firmware_version: "1.0.0"}, apply_delta: false}
    jobs:
      success_rate: 1
      duration: [0.1, 0.3]
      progress_steps: 2
      reboot: {downtime: [0.1, 0.2]}
  - name: plug
    count: 3
    interval: 30s
    protocol: mqtt5
    jobs:
      success_rate: 0
      duration: 0.1
      distribution: normal
      progress_steps: 0
"""


@dataclass
class Execution:
    job: str
    document: dict[str, Any]
    status: str = "QUEUED"
    version: int = 1
    updates: list[dict[str, Any]] = field(default_factory=list)
    cancel_on_update: bool = False  # canceled (with force) while the device works on it


class Responder:
    """Plays AWS IoT Jobs for the things' queues: answers start-next and updates, sends notify-next."""

    def __init__(self, port: int, queues: dict[str, list[Execution]]) -> None:
        self.queues = queues
        self.shadow_reports: dict[str, list[dict[str, Any]]] = {}
        self.done = asyncio.Event()
        self.client = AsyncMqttClient("jobs-responder", "127.0.0.1", port, on_message=self.on_message)

    async def start(self) -> None:
        await self.client.connect()
        granted = await self.client.subscribe(
            [
                ("$aws/things/+/jobs/start-next", 1),
                ("$aws/things/+/jobs/+/update", 1),
                ("$aws/things/+/shadow/update", 1),
            ]
        )
        assert granted == [1, 1, 1]

    def answer(self, topic: str, body: dict[str, Any]) -> None:
        self.client.send(topic, json.dumps({**body, "timestamp": 1}).encode(), 1, lambda error: None)

    def next_for(self, thing: str) -> Execution | None:
        return next((e for e in self.queues[thing] if e.status in ("QUEUED", "IN_PROGRESS")), None)

    @staticmethod
    def data(thing: str, e: Execution) -> dict[str, Any]:
        return {"jobId": e.job, "thingName": thing, "status": e.status, "jobDocument": e.document,
                "versionNumber": e.version, "executionNumber": 1}  # fmt: skip

    def on_message(self, message: Message) -> None:
        parts = message.topic.split("/")
        thing, body = parts[2], json.loads(message.payload)
        base = f"$aws/things/{thing}/jobs"
        if parts[3] == "shadow":
            self.shadow_reports.setdefault(thing, []).append(body)
        elif parts[4] == "start-next":
            e = self.next_for(thing)
            if e is None:
                self.answer(f"{base}/start-next/accepted", {"clientToken": body["clientToken"]})
                return
            if e.status == "QUEUED":
                e.status, e.version = "IN_PROGRESS", e.version + 1
            self.answer(
                f"{base}/start-next/accepted", {"execution": self.data(thing, e), "clientToken": body["clientToken"]}
            )
        else:
            e = next(e for e in self.queues[thing] if e.job == parts[4])
            if e.cancel_on_update and e.status == "IN_PROGRESS":
                e.status = "CANCELED"
                self.answer(f"{base}/notify-next", {})
            if e.status != "IN_PROGRESS":
                self.answer(f"{base}/{e.job}/update/rejected", {"code": "InvalidStateTransition", "message": "no"})
                self.check_done()
                return
            e.updates.append(body)
            e.status, e.version = body["status"], e.version + 1
            self.answer(f"{base}/{e.job}/update/accepted", {"clientToken": body["clientToken"]})
            if e.status != "IN_PROGRESS":
                following = self.next_for(thing)
                self.answer(f"{base}/notify-next", {"execution": self.data(thing, following)} if following else {})
            self.check_done()

    def check_done(self) -> None:
        if all(e.status in ("SUCCEEDED", "FAILED", "CANCELED") for q in self.queues.values() for e in q):
            self.done.set()


def test_job_agents_follow_the_jobs_mqtt_api(mosquitto: int) -> None:  # noqa: F811
    devices = expand(parse_fleet(FLEET))

    async def main() -> tuple[Figures, Responder]:
        async def firmware(request: web.Request) -> web.Response:
            return web.Response(body=FIRMWARE)

        app = web.Application()
        app.router.add_get("/fw.bin", firmware)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/fw.bin?X-Amz-Signature=x"
        queues = {
            d.thing_name: [
                Execution("ota-1", {"operation": "ota", "files": [{"url": url}], "version": "2.0.0"}),
                Execution("cfg-2", {"operation": "config", "version": 3}),
                Execution("gone-3", {"operation": "config", "version": 4}, cancel_on_update=True),
            ]
            for d in devices
        }
        responder = Responder(mosquitto, queues)
        await responder.start()
        figures = Figures()
        stop = asyncio.Event()
        options = FleetOptions(Target("127.0.0.1", mosquitto, tls=False))
        fleet = asyncio.get_running_loop().create_task(run_devices(devices, options, figures, stop))
        try:
            async with asyncio.timeout(30):
                await responder.done.wait()
                # The devices' view: every camera dropped the canceled job, every plug heard its failure rejected.
                counters = figures.counters
                while counters.get("jobs.abandoned") < 3 or counters.get("jobs.update_rejected") < 6:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await fleet
            await responder.client.disconnect()
            await runner.cleanup()
        return figures, responder

    figures, responder = asyncio.run(main())
    counts = figures.counters.as_dict()
    assert counts["jobs.started"] == 18
    # Each device's first update of the canceled job is rejected (a camera may have sent its next progress update
    # before the answer came); cameras drop the job, plugs had already failed it.
    assert counts["jobs.update_rejected"] >= 6 and counts["jobs.abandoned"] == 3
    assert counts["jobs.succeeded"] == 6 and counts["jobs.failed"] == 6 + 3
    assert counts["jobs.reboots"] == 6 and counts["connects"] == 6 + 6  # every successful job restarts a cam
    assert counts["jobs.downloads"] == 6 and counts["jobs.downloaded_bytes"] == 6 * len(FIRMWARE)
    assert figures.errors() == {}
    for d in devices:
        ota, cfg, gone = responder.queues[d.thing_name]
        assert gone.status == "CANCELED" and gone.updates == []
        progress = [u["statusDetails"].get("progress") for u in ota.updates]
        if d.type_name == "cam":
            assert progress == ["downloading", "downloaded", "installing 1/2", "installing 2/2", "rebooting", "done"]
            assert ota.updates[1]["statusDetails"]["bytes"] == str(len(FIRMWARE))
            assert ota.status == cfg.status == "SUCCEEDED"
            assert ota.updates[-1]["statusDetails"] == {
                "progress": "done",
                "firmware_version": "2.0.0",
                "rebooted": "true",
            }
            assert cfg.updates[-1]["statusDetails"]["firmware_version"] == "3"
            reported = [r["state"]["reported"] for r in responder.shadow_reports[d.thing_name]]
            assert reported == [{"firmware_version": "1.0.0"}, {"firmware_version": "2.0.0"}, {"firmware_version": "3"}]
        else:
            assert progress == ["downloading", "downloaded", None]
            assert ota.updates[-1] == {"status": "FAILED", "statusDetails": {"reason": "simulated failure"},
                                       "clientToken": ota.updates[-1]["clientToken"]}  # fmt: skip
            assert cfg.status == "FAILED" and d.thing_name not in responder.shadow_reports
        for update in ota.updates + cfg.updates:
            assert all(isinstance(v, str) for v in update["statusDetails"].values())  # AWS: a map of strings

    from rich.console import Console

    from devices.view import summary, table

    data = summary(figures, 3.0)
    assert {k: data["jobs"][k] for k in ("in_progress", "succeeded", "failed", "reboots")} == {
        "in_progress": 0,
        "succeeded": 6,
        "failed": 9,
        "reboots": 6,
    }
    console = Console(width=120, record=True)
    console.print(table(data, "jobs"))
    shown = console.export_text()
    assert "job executions in progress / succeeded / failed / dropped" in shown and "0 / 6 / 9 / 3" in shown
