"""ShadowManager sync, the I/O shell around gateway/edge/shadow_sync.py: watches local and cloud shadow documents,
forwards changes in real time, and reconciles every configured shadow after each (re)connect or periodically."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any, Literal

from gateway.clock import Clock, SystemClock
from gateway.edge.cloud import CloudLink, CloudUnavailable
from gateway.edge.shadow_sync import (
    ShadowSyncConfig,
    ShadowSyncError,
    SyncDocument,
    SyncPlan,
    SyncState,
    on_cloud_update,
    on_local_update,
    reconcile,
    shadows_to_sync,
)
from gateway.errors import ResourceNotFoundException
from gateway.messages import Message
from gateway.shadow.service import ShadowService
from gateway.shadow.topics import parse_shadow_topic, shadow_prefix
from gateway.store import Store

log = logging.getLogger("edgesim.edge.sync")

Pair = tuple[str, str | None]
Side = Literal["local", "cloud"]


class ShadowSyncer:
    def __init__(
        self,
        config: ShadowSyncConfig,
        core_thing: str,
        local: ShadowService,
        cloud: CloudLink,
        store: Store,
        clock: Clock | None = None,
    ) -> None:
        self.pairs = shadows_to_sync(config, core_thing)
        self.direction = config.synchronize.direction
        self.periodic_s = config.strategy.delay if config.strategy.type == "periodic" else None
        self.local = local
        self.cloud = cloud
        self.store = store
        self.states: dict[Pair, SyncState] = dict.fromkeys(self.pairs, SyncState())
        for row in store.query("SELECT thing, shadow, state FROM edge_shadow_sync"):
            pair = (row["thing"], row["shadow"] or None)
            if pair in self.states:
                self.states[pair] = SyncState.from_json(row["state"])
        self.stats = {"reconciles": 0, "to_cloud": 0, "to_local": 0, "errors": 0}
        self.in_sync = False
        self.last_error: str | None = None
        self.last_sync_ms: int | None = None  # wall time a shadow last reconciled or synced a change (this run)
        self._clock = clock or SystemClock()
        self._events: asyncio.Queue[tuple[Side, Pair, SyncDocument | None]] = asyncio.Queue()
        self._reconnected = asyncio.Event()

    # ---- wiring

    def cloud_filters(self) -> list[str]:
        return [f"{shadow_prefix(t, s)}/{op}/+" for t, s in self.pairs for op in ("get", "update", "delete")]

    def on_state(self, online: bool) -> None:
        self.in_sync = False
        if online:
            self._reconnected.set()

    def on_local_message(self, message: Message) -> None:
        self._observe("local", message)

    def on_cloud_message(self, message: Message) -> None:
        self._observe("cloud", message)

    def local_deleted(self, thing: str, shadow: str | None) -> None:
        """A local delete made through the API (those publish no /delete/accepted)."""
        if (thing, shadow) in self.states:
            self._events.put_nowait(("local", (thing, shadow), None))

    def _observe(self, side: Side, message: Message) -> None:
        topic = parse_shadow_topic(message.topic)
        if topic is None or (topic.thing, topic.shadow) not in self.states:
            return
        suffix = message.topic.rsplit("/", 1)[1]
        pair = (topic.thing, topic.shadow)
        try:
            if topic.operation == "update" and suffix == "documents":
                current = json.loads(message.payload)["current"]
                self._events.put_nowait((side, pair, SyncDocument.from_document(current)))
            elif topic.operation == "delete" and suffix == "accepted":
                self._events.put_nowait((side, pair, None))
        except (ValueError, KeyError, TypeError, ShadowSyncError) as exc:
            log.warning("ignoring an unreadable %s shadow document on %s: %s", side, message.topic, exc)

    # ---- work

    async def run(self) -> None:
        if not self.pairs:
            return
        await asyncio.gather(self._forward_events(), self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        while True:
            if self.periodic_s is None:
                await self._reconnected.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reconnected.wait(), self.periodic_s)
            self._reconnected.clear()
            if self.cloud.online:
                await self.reconcile_all()

    async def reconcile_all(self) -> bool:
        """Three-way merge of every configured shadow; True when all of them went through."""
        ok = True
        for pair in self.pairs:
            try:
                await self._reconcile(pair)
            except (CloudUnavailable, ShadowSyncError) as exc:
                ok = False
                self._failed(pair, exc)
        self.stats["reconciles"] += 1
        self.in_sync = ok and self.cloud.online
        return ok

    async def _reconcile(self, pair: Pair) -> None:
        local = self._local_document(pair)
        cloud = await self._cloud_document(pair)
        await self._apply(pair, reconcile(local, cloud, self.states[pair], self.direction))

    async def _forward_events(self) -> None:
        while True:
            side, pair, doc = await self._events.get()
            if side == "local" and (self.periodic_s is not None or not self.cloud.online):
                continue  # the next reconcile carries it: the base stays where both sides last agreed
            forward = on_local_update if side == "local" else on_cloud_update
            try:
                await self._apply(pair, forward(self.states[pair], doc, self.direction))
            except (CloudUnavailable, ShadowSyncError) as exc:
                self._failed(pair, exc)

    async def _apply(self, pair: Pair, plan: SyncPlan) -> None:
        thing, shadow = pair
        state = plan.new_state
        if plan.cloud_update is not None or plan.delete_cloud:
            op = "delete" if plan.delete_cloud else "update"
            outcome, doc = await self.cloud.request(f"{shadow_prefix(thing, shadow)}/{op}", plan.cloud_update or {})
            if outcome != "accepted" and not (op == "delete" and doc.get("code") == 404):
                raise ShadowSyncError(f"cloud refused the {op}: {doc.get('code')} {doc.get('message')}")
            self.stats["to_cloud"] += 1
            state = _with_version(state, "cloud", doc)
        if plan.local_update is not None:
            accepted = self.local.update_thing_shadow(thing, shadow, json.dumps(plan.local_update).encode())
            self.stats["to_local"] += 1
            state = _with_version(state, "local", json.loads(accepted))
        elif plan.delete_local:
            with contextlib.suppress(ResourceNotFoundException):
                self.local.delete_thing_shadow(thing, shadow)
            self.stats["to_local"] += 1
        self._save(pair, state)

    def _local_document(self, pair: Pair) -> SyncDocument | None:
        try:
            return SyncDocument.from_document(json.loads(self.local.get_thing_shadow(*pair)))
        except ResourceNotFoundException:
            return None

    async def _cloud_document(self, pair: Pair) -> SyncDocument | None:
        outcome, doc = await self.cloud.request(f"{shadow_prefix(*pair)}/get", {})
        if outcome == "accepted":
            return SyncDocument.from_document(doc)
        if doc.get("code") == 404:
            return None
        raise ShadowSyncError(f"cloud refused the get: {doc.get('code')} {doc.get('message')}")

    def _save(self, pair: Pair, state: SyncState) -> None:
        self.states[pair] = state
        self.last_sync_ms = self._clock.wall_ms()
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO edge_shadow_sync(thing, shadow, state) VALUES (?, ?, ?)",
                (pair[0], pair[1] or "", state.to_json()),
            )

    def _failed(self, pair: Pair, exc: Exception) -> None:
        self.stats["errors"] += 1
        self.in_sync = False
        self.last_error = f"{pair[0]}/{pair[1] or 'classic'}: {exc}"
        log.info("shadow sync of %s postponed: %s", pair, exc)

    @property
    def pending(self) -> int:
        """Shadows waiting for a reconcile (all of them until one succeeds after a (re)connect), or else changes
        waiting to be forwarded."""
        return len(self.pairs) if not self.in_sync else self._events.qsize()

    def status(self) -> dict[str, Any]:
        return {"shadows": len(self.pairs), "in_sync": self.in_sync, **self.stats, "last_error": self.last_error}


def _with_version(state: SyncState, side: Side, doc: dict[str, Any]) -> SyncState:
    """Our own write's version: its /documents echo then reads as already seen."""
    version = doc.get("version")
    if not isinstance(version, int):
        return state
    return replace(state, cloud_version=version) if side == "cloud" else replace(state, local_version=version)
