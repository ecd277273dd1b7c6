"""IoT Jobs, assembled: the engine, the control plane, the device API over MQTT and HTTPS, and the scheduler task."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.jobs.control import JobsControl, S3Reader
from gateway.jobs.device import DeviceJobs
from gateway.jobs.documents import Presigner
from gateway.jobs.engine import JobsEngine, JobsRegistry, Publish
from gateway.jobs.mqtt import JobsMqtt
from gateway.jobs.scheduler import JobsScheduler
from gateway.registry.base import RegistryChange
from gateway.store import Store

log = logging.getLogger("edgesim.jobs")


class GroupRegistry(JobsRegistry, Protocol):
    def list_things_in_thing_group(
        self, thing_group_name: str, recursive: bool = False, max_results: int | None = None,
        next_token: str | None = None,
    ) -> dict[str, Any]: ...  # fmt: skip


class JobsService:
    def __init__(
        self,
        store: Store,
        registry: GroupRegistry,
        clock: Clock,
        publish: Publish,
        *,
        presign: Presigner | None = None,
        read_s3: S3Reader | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.engine = JobsEngine(store, registry, clock, publish, presign)
        self.control = JobsControl(self.engine, self._members, read_s3)
        self.device = DeviceJobs(self.engine)
        self.mqtt = JobsMqtt(self.device, clock, publish)
        self.scheduler = JobsScheduler(self.engine, self.control)
        self.tick_s = tick_s

    def _members(self, group: str) -> list[str] | None:
        from gateway.errors import ResourceNotFoundException

        things: list[str] = []
        token: str | None = None
        try:
            while True:
                page = self.registry.list_things_in_thing_group(group, True, 250, token)
                things += page["things"]
                token = page.get("nextToken")
                if not token:
                    return things
        except ResourceNotFoundException:
            return None

    def on_registry_change(self, change: RegistryChange) -> None:
        if change.kind in ("group", "thing", "ca"):  # "ca" with key "*": another process changed the database
            self.scheduler.membership_dirty = True

    def tick(self) -> None:
        self.scheduler.tick(self.clock.wall_ms())

    async def run(self) -> None:
        """The scheduler: one round a tick, for as long as the gateway runs."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:
                log.exception("jobs scheduler round failed; the next round tries again")
