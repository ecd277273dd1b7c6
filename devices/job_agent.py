"""A simulated device's job agent over the AWS IoT Jobs MQTT API: start the next execution on connect and on
`notify-next`, download the document's file, report progress, then succeed or fail (optionally through a reboot)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from devices.figures import Figures
from devices.jobs_plan import JobsPlan, find_url, jobs_prefix, new_version, start_next_request, subscriptions
from devices.jobs_plan import update_request as update_body
from devices.spec import JobsSpec

log = logging.getLogger("edgesim.devices.jobs")

DOWNLOAD_TIMEOUT_S = 60.0


class Downloader:
    """One HTTP client session per fleet process: job files are fetched (and discarded) as a device would."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str) -> int:
        """Bytes downloaded; raises OSError, aiohttp.ClientError or TimeoutError, or ValueError on a non-2xx status."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, ssl=self.context if self.context is not None else True)
            timeout = aiohttp.ClientTimeout(DOWNLOAD_TIMEOUT_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        async with self._session.get(url) as response:
            if response.status >= 300:
                raise ValueError(f"HTTP {response.status}")
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
            return size

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AgentHost(Protocol):
    """What the agent needs from its device."""

    @property
    def connected(self) -> bool: ...

    def publish_json(self, topic: str, body: dict[str, Any], on_done: Callable[[Exception | None], None]) -> None: ...

    def report_firmware(self, field: str, version: str) -> None: ...

    def reboot(self, downtime: float) -> Awaitable[None]: ...


class JobAgent:
    def __init__(
        self,
        thing: str,
        spec: JobsSpec,
        rng: random.Random,
        figures: Figures,
        host: AgentHost,
        downloader: Downloader | None,
    ) -> None:
        self.thing = thing
        self.spec = spec
        self.plan = JobsPlan(spec, rng)
        self.figures = figures
        self.host = host
        self.downloader = downloader
        self.prefix = jobs_prefix(thing) + "/"
        self.firmware = spec.firmware_version
        self.current: str | None = None  # the job this device is working on
        self.awaiting_start = False
        self.rebooted_for: tuple[str, str | None] | None = None  # (job, version) installed, waiting for the restart
        self.unsent: dict[str, dict[str, Any]] = {}  # final updates that did not reach the broker
        self.task: asyncio.Task[None] | None = None
        self.tokens = 0

    def filters(self) -> list[tuple[str, int]]:
        return [(topic, 1) for topic in subscriptions(self.thing)]

    def owns(self, topic: str) -> bool:
        return topic.startswith(self.prefix)

    # ---- requests

    def _token(self) -> str:
        self.tokens += 1
        return f"{self.thing}-{self.tokens}"[:64]

    def on_connected(self) -> None:
        self.awaiting_start = False  # an answer lost with the old connection never comes
        self.request_next()

    def request_next(self) -> None:
        if self.awaiting_start or not self.host.connected:
            return
        if self.current is not None and self.rebooted_for is None and self.current not in self.unsent:
            return
        self.awaiting_start = True
        self.host.publish_json(self.prefix + "start-next", start_next_request(self._token(), self.spec), self._sent)

    def _sent(self, error: Exception | None) -> None:
        if error is not None:
            self.awaiting_start = False
            self.figures.error("jobs_publish")

    def _update(self, job: str, status: str, details: dict[str, str]) -> None:
        body = update_body(status, details, self._token())
        final = status in ("SUCCEEDED", "FAILED")

        def done(error: Exception | None) -> None:
            if error is None:
                self.unsent.pop(job, None)
                return
            self.figures.error("jobs_publish")
            if final:
                self.unsent[job] = body  # sent again when start-next hands this execution back after reconnecting

        if final:
            self.unsent[job] = body
        self.host.publish_json(f"{self.prefix}{job}/update", body, done)

    # ---- answers

    def on_message(self, topic: str, payload: bytes) -> None:
        suffix = topic[len(self.prefix) :]
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            self.figures.error("jobs_payload")
            return
        if not isinstance(document, dict):
            self.figures.error("jobs_payload")
            return
        if suffix == "notify-next":
            if isinstance(document.get("execution"), dict):
                self.request_next()
        elif suffix == "start-next/accepted":
            self.awaiting_start = False
            execution = document.get("execution")
            if isinstance(execution, dict):
                self._on_execution(execution)
            elif self.rebooted_for is not None:  # the job went away while the device restarted
                self._forget_restart()
        elif suffix == "start-next/rejected":
            self.awaiting_start = False
            self.figures.inc("jobs.start_rejected")
        elif suffix.endswith("/update/rejected"):
            self._on_update_rejected(suffix.removesuffix("/update/rejected"), document)
        elif suffix.endswith("/update/accepted"):
            self.figures.inc("jobs.updates_accepted")

    def _on_execution(self, execution: dict[str, Any]) -> None:
        job = execution.get("jobId")
        if not isinstance(job, str):
            self.figures.error("jobs_payload")
            return
        if job in self.unsent:
            body = self.unsent[job]
            self._update(job, body["status"], body["statusDetails"])
            return
        if self.rebooted_for is not None and self.rebooted_for[0] == job:
            version = self.rebooted_for[1]
            self.rebooted_for = None
            self._succeed(job, version, rebooted=True)
            return
        if job == self.current:
            return  # still working on it (a reconnect in the middle of the run)
        if self.rebooted_for is not None:  # a restart's job that went away: this one comes instead
            self._forget_restart()
        self.current = job
        self.figures.inc("jobs.started")
        self.task = asyncio.get_running_loop().create_task(self._run(job, execution), name=f"job-{self.thing}")

    def _forget_restart(self) -> None:
        self.figures.inc("jobs.abandoned")
        self.rebooted_for = self.current = None

    def _on_update_rejected(self, job: str, document: dict[str, Any]) -> None:
        """Canceled or removed under us (or a terminal state already reached): drop the job, ask for the next one."""
        self.figures.inc("jobs.update_rejected")
        self.unsent.pop(job, None)
        if job != self.current:
            return
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.figures.inc("jobs.abandoned")
        self.current = None
        self.rebooted_for = None
        self.request_next()

    # ---- one execution

    async def _run(self, job: str, execution: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = self.plan.outcome()
        document = execution.get("jobDocument")
        if self.spec.download:
            url = find_url(document, self.spec.url_field)
            if url is not None:
                self._update(job, "IN_PROGRESS", {"progress": "downloading"})
                try:
                    size = await self._download(url)
                except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    self.figures.inc("jobs.download_failed")
                    self._finish(job, "FAILED", {"reason": f"download failed: {exc}"[:1024]})
                    return
                self.figures.inc("jobs.downloads")
                self.figures.inc("jobs.downloaded_bytes", size)
                self._update(job, "IN_PROGRESS", {"progress": "downloaded", "bytes": str(size)})
        steps = self.plan.progress_at(outcome.duration)
        for k, offset in enumerate(steps, 1):
            await asyncio.sleep(max(0.0, started + offset - loop.time()))
            self._update(job, "IN_PROGRESS", {"progress": f"installing {k}/{len(steps)}"})
        await asyncio.sleep(max(0.0, started + outcome.duration - loop.time()))
        if not outcome.succeed:
            self._finish(job, "FAILED", {"reason": "simulated failure"})
            return
        version = new_version(document, self.spec.version_field)
        if outcome.downtime <= 0:
            self._succeed(job, version, rebooted=False)
            return
        self.rebooted_for = (job, version)
        self._update(job, "IN_PROGRESS", {"progress": "rebooting"})
        await self.host.reboot(outcome.downtime)  # the start-next after reconnecting hands the execution back

    async def _download(self, url: str) -> int:
        if self.downloader is None:
            self.downloader = Downloader()
        return await self.downloader.fetch(url)

    def _succeed(self, job: str, version: str | None, *, rebooted: bool) -> None:
        details = {"progress": "done"}
        if version is not None:
            self.firmware = version
            details["firmware_version"] = version
            if self.spec.shadow_field is not None:
                self.host.report_firmware(self.spec.shadow_field, version)
        if rebooted:
            details["rebooted"] = "true"
        self._finish(job, "SUCCEEDED", details)

    def _finish(self, job: str, status: str, details: dict[str, str]) -> None:
        self.figures.inc("jobs.succeeded" if status == "SUCCEEDED" else "jobs.failed")
        self._update(job, status, details)
        self.current = None
        self.request_next()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
