"""The core's health report to the cloud, as Greengrass's fleet status service sends it, as pure functions: the
payload built from plain figures, the components' status mapping, and when a report is due (`StatusSchedule`).

The core publishes the payload at QoS 0 straight on its cloud link (never through the spool: a stale status is
worthless) to `$aws/things/{core}/greengrassv2/health/json`: on the first connect after start (NUCLEUS_LAUNCH), on
each reconnect (RECONNECT), when a component's status changes (COMPONENT_STATUS_CHANGE), and every `interval_s` while
connected (CADENCE); the event-driven ones at most once per `min_gap_s`. Offline, nothing is sent or queued.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway import __version__
from gateway.edge.components import Phase

Trigger = Literal["CADENCE", "NUCLEUS_LAUNCH", "RECONNECT", "COMPONENT_STATUS_CHANGE"]
ComponentStatus = Literal["RUNNING", "FINISHED", "ERRORED", "BROKEN", "STARTING", "STOPPING", "INSTALLED"]
OverallStatus = Literal["HEALTHY", "UNHEALTHY"]

# The nucleus marks a component BROKEN once it has errored three times in a row.
BROKEN_AFTER_CRASHES: Final = 3
UNHEALTHY_STATUSES: Final[frozenset[ComponentStatus]] = frozenset({"ERRORED", "BROKEN"})
MIN_GAP_S: Final = 1.0


def status_topic(thing: str) -> str:
    return f"$aws/things/{thing}/greengrassv2/health/json"


@dataclass(frozen=True)
class HostInfo:
    ggc_version: str
    platform: str
    architecture: str


def host_info() -> HostInfo:
    """This machine, read once at start (the only impure part here)."""
    return HostInfo(
        f"edgesim-{__version__ or '0.1.0'}",
        "windows" if sys.platform.startswith("win") else "linux",
        platform.machine(),
    )


@dataclass(frozen=True)
class ComponentFigures:
    """One component as its runner sees it (gateway.edge.components.ComponentRunner)."""

    name: str
    version: str
    phase: Phase
    consecutive_crashes: int = 0  # worker crashes since a worker last served an item
    restarts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class SpoolFigures:
    messages: int
    bytes: int
    max_bytes: int


@dataclass(frozen=True)
class SyncFigures:
    shadows: int
    pending: int
    last_sync_ms: int | None


@dataclass(frozen=True)
class CoreFigures:
    thing: str
    components: tuple[ComponentFigures, ...]
    spool: SpoolFigures
    shadow_sync: SyncFigures
    bridge: Mapping[str, Any] | None = None


def component_status(component: ComponentFigures) -> ComponentStatus:
    """The runner's phase and crash streak as a Greengrass lifecycle status:

    installed (not started yet) -> INSTALLED; starting (a pinned worker being spawned) -> STARTING;
    stopping -> STOPPING; stopped (the core is shutting down) -> FINISHED; started -> RUNNING, unless workers have
    crashed since one last served an item: ERRORED after one or two such crashes (the runner retries with backoff),
    BROKEN from the third on (crash-looping: the nucleus would give up; edgesim keeps retrying, and a served item
    brings it back to RUNNING). A handler that raises is not a crash: its worker stays and it remains RUNNING."""
    if component.phase == "installed":
        return "INSTALLED"
    if component.phase == "starting":
        return "STARTING"
    if component.phase == "stopping":
        return "STOPPING"
    if component.phase == "stopped":
        return "FINISHED"
    if component.consecutive_crashes >= BROKEN_AFTER_CRASHES:
        return "BROKEN"
    if component.consecutive_crashes > 0:
        return "ERRORED"
    return "RUNNING"


def overall_status(statuses: Iterable[ComponentStatus]) -> OverallStatus:
    return "UNHEALTHY" if any(status in UNHEALTHY_STATUSES for status in statuses) else "HEALTHY"


def component_entry(component: ComponentFigures) -> dict[str, Any]:
    status = component_status(component)
    details: dict[str, Any] = {}
    if status in UNHEALTHY_STATUSES:
        crashes = component.consecutive_crashes
        details["detailedStatus"] = f"{crashes} worker crash{'es' if crashes != 1 else ''} in a row"
        if component.last_error:
            details["failureCause"] = component.last_error
    return {
        "componentName": component.name,
        "version": component.version,
        "isRoot": True,
        "status": status,
        "statusDetails": details,
        "restarts": component.restarts,
    }


def health_signature(figures: CoreFigures) -> tuple[tuple[str, ComponentStatus], ...]:
    """What a COMPONENT_STATUS_CHANGE report is about: each component's status."""
    return tuple((c.name, component_status(c)) for c in figures.components)


def edgesim_section(figures: CoreFigures) -> dict[str, Any]:
    """edgesim's extension of the payload: spool depth, shadow sync, bridge counters."""
    spool = figures.spool
    section: dict[str, Any] = {
        "spool": {"messages": spool.messages, "bytes": spool.bytes, "maxBytes": spool.max_bytes},
        "shadowSync": {
            "shadows": figures.shadow_sync.shadows,
            "pending": figures.shadow_sync.pending,
            "lastSyncMs": figures.shadow_sync.last_sync_ms,
        },
    }
    if figures.bridge is not None:
        section["bridge"] = dict(figures.bridge)
    return section


def fleet_status(
    figures: CoreFigures, host: HostInfo, *, sequence: int, timestamp_ms: int, trigger: Trigger
) -> dict[str, Any]:
    """The message published to `status_topic(figures.thing)`."""
    components = [component_entry(c) for c in figures.components]
    return {
        "ggcVersion": host.ggc_version,
        "platform": host.platform,
        "architecture": host.architecture,
        "thing": figures.thing,
        "sequenceNumber": sequence,
        "timestamp": timestamp_ms,
        "messageType": "COMPLETE",
        "trigger": trigger,
        "overallDeviceStatus": overall_status(c["status"] for c in components),
        "components": components,
        "edgesim": edgesim_section(figures),
    }


class StatusSchedule:
    """When a report is due, with time passed in (monotonic seconds). The core tells it about link changes
    (`link`) and component statuses (`observe`), asks `due(now)`, and calls `sent(now, trigger)` after publishing."""

    def __init__(self, interval_s: float, *, min_gap_s: float = MIN_GAP_S, sequence: int = 0) -> None:
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.sequence = sequence  # of the last report sent
        self.online = False
        self.pending: Trigger | None = None  # an event-driven report waiting for its turn
        self.last_trigger: Trigger | None = None
        self._launched = False  # the NUCLEUS_LAUNCH report went out
        self._last_sent: float | None = None
        self._seen: tuple[tuple[str, ComponentStatus], ...] | None = None

    def link(self, online: bool) -> None:
        self.online = online
        # Offline nothing is kept for later: the (re)connect report carries the current state anyway.
        self.pending = ("RECONNECT" if self._launched else "NUCLEUS_LAUNCH") if online else None

    def observe(self, signature: tuple[tuple[str, ComponentStatus], ...]) -> None:
        if self.online and self._seen is not None and signature != self._seen and self.pending is None:
            self.pending = "COMPONENT_STATUS_CHANGE"
        self._seen = signature

    def due(self, now: float) -> tuple[Trigger | None, float | None]:
        """(the trigger of a report to send now, None), or (None, seconds until one is due; None: not until the link
        comes up)."""
        if not self.online:
            return None, None
        trigger: Trigger = self.pending or "CADENCE"
        if self._last_sent is None:
            return trigger, None
        at = self._last_sent + (self.min_gap_s if self.pending is not None else self.interval_s)
        return (trigger, None) if now >= at else (None, at - now)

    def sent(self, now: float, trigger: Trigger) -> int:
        """Record a report sent now; returns its sequence number."""
        self.sequence += 1
        self._last_sent = now
        self.pending = None
        self.last_trigger = trigger
        if trigger == "NUCLEUS_LAUNCH":
            self._launched = True
        return self.sequence
