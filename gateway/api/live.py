"""The dashboard's live side: per-second samples, shadow version history, edge health reports, and one event stream
per open browser view, all fed by in-process subscriptions to the broker (the same trie and delivery as any client)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api import dashboard_views as views
from gateway.broker.local import LocalSubscriber
from gateway.shadow.document import compute_delta
from gateway.shadow.topics import parse_shadow_topic

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("edgesim.dashboard")

RATE_POINTS = 300  # seconds of messages/s history on the fleet page
RULE_POINTS = 120  # seconds of matched/s per rule (sparklines)
SHADOW_VERSIONS = 20  # versions kept per shadow
SHADOWS_TRACKED = 5000  # shadows with history in memory (least recently updated forgotten first)
THING_MESSAGES = 20  # recent messages kept for a thing while no page shows it is not kept at all
MESSAGES_PER_S = 50  # per browser; the rest are counted and reported as skipped
MAX_PENDING = 2000  # events waiting for one slow browser before messages are skipped
HEARTBEAT_S = 15.0
EDGE_HEALTH_FILTER = "$aws/things/+/greengrassv2/health/json"
SHADOW_FILTERS = [
    "$aws/things/+/shadow/update/documents",
    "$aws/things/+/shadow/name/+/update/documents",
    "$aws/things/+/shadow/delete/accepted",
    "$aws/things/+/shadow/name/+/delete/accepted",
]
PRESENCE_FILTER = "$aws/events/presence/+/+"
VIEWS = ("fleet", "thing", "tail", "rules", "sinks", "edge")


def sse(event: str, data: Any) -> bytes:
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"event: " + event.encode() + b"\ndata: " + body.replace(b"\n", b"\ndata: ") + b"\n\n"


def _current(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _history_entry(ts: int, raw: bytes) -> dict[str, Any] | None:
    doc = _current(raw)
    if doc is None:
        return None
    current = doc.get("current") or {}
    state = current.get("state") or {}
    return {
        "version": current.get("version"),
        "timestampMs": ts,
        "state": {"desired": state.get("desired"), "reported": state.get("reported")},
    }


def _shadow_event(thing: str, shadow: str | None, deleted: bool, ts: int, raw: bytes) -> dict[str, Any] | None:
    if deleted:
        doc = _current(raw) or {}
        state: dict[str, Any] = {"desired": None, "reported": None, "delta": None}
        return {"thing": thing, "shadowName": shadow, "version": doc.get("version"), "timestampMs": ts,
                "state": state, "deleted": True}  # fmt: skip
    entry = _history_entry(ts, raw)
    if entry is None:
        return None
    desired, reported = entry["state"]["desired"], entry["state"]["reported"]
    entry["state"]["delta"] = compute_delta(desired, reported)
    return {"thing": thing, "shadowName": shadow, **entry}


class Watcher:
    """One browser view's event stream: events wait here until its response writes them."""

    def __init__(self, view: str, thing: str | None, topic_filter: str | None) -> None:
        self.view = view
        self.thing = thing
        self.filter = topic_filter
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.sent_this_second = 0
        self.skipped = 0
        self.subscriber: LocalSubscriber | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=THING_MESSAGES)

    def push(self, event: str, data: Any) -> None:
        self.pending.append(sse(event, data))
        self.wake.set()

    def offer_message(self, topic: str, payload: bytes, qos: int, client_id: str | None, now_ms: int) -> None:
        if self.sent_this_second >= MESSAGES_PER_S or len(self.pending) >= MAX_PENDING:
            self.skipped += 1
            return
        self.sent_this_second += 1
        item = views.message_json(topic, payload, qos, client_id, now_ms)
        self.recent.appendleft(item)
        self.push("message", item)

    def take(self) -> bytes:
        out = b"".join(self.pending)
        self.pending.clear()
        self.wake.clear()
        return out


class LiveFeed:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.rates: deque[dict[str, Any]] = deque(maxlen=RATE_POINTS)
        self.rule_history: dict[str, deque[int]] = {}
        self.shadow_history: OrderedDict[tuple[str, str | None], deque[tuple[int, bytes]]] = OrderedDict()
        self.edge_reports: dict[str, tuple[int, dict[str, Any]]] = {}
        self.watchers: set[Watcher] = set()
        self._subscribers: list[LocalSubscriber] = []
        # Only while a browser watches: lifecycle events are built only when someone subscribes to them.
        self._presence: LocalSubscriber | None = None
        self._last_counts = (0, 0)
        self._last_rule_matched: dict[str, int] = {}
        self._last_stream_records: dict[str, int] = {}
        self.stream_rates: dict[str, float] = {}
        self._last_publish: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle
    def start(self) -> None:
        broker = self.gw.broker
        self._subscribers = [
            broker.subscribe_local("dashboard-shadows", SHADOW_FILTERS, self._on_shadow),
            broker.subscribe_local("dashboard-edge", [EDGE_HEALTH_FILTER], self._on_edge_health),
        ]
        stats = broker.stats
        self._last_counts = (stats["messages_in"], stats["messages_out"])
        self._task = asyncio.create_task(self._tick_forever(), name="dashboard-ticks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for subscriber in self._subscribers:
            self.gw.broker.unsubscribe_local(subscriber)
        for watcher in list(self.watchers):
            self.remove(watcher)

    # ---- browsers
    def add(self, view: str, thing: str | None, topic_filter: str | None) -> Watcher:
        watcher = Watcher(view, thing, topic_filter)
        broker = self.gw.broker
        if view == "tail" and topic_filter:
            try:
                watcher.subscriber = broker.subscribe_local(
                    "dashboard-tail", [topic_filter], lambda t, p, q, c: watcher.offer_message(t, p, q, c, self._now())
                )
            except Exception as exc:  # an invalid filter: the page shows why
                watcher.push("error", {"message": str(exc)})
        elif view == "thing" and thing:
            name = thing

            def on_message(topic: str, payload: bytes, qos: int, client_id: str | None) -> None:
                if client_id == name or name in topic.split("/"):
                    watcher.offer_message(topic, payload, qos, client_id, self._now())

            watcher.subscriber = broker.subscribe_local("dashboard-thing", ["#", f"$aws/things/{name}/#"], on_message)
        self.watchers.add(watcher)
        if self._presence is None:
            self._presence = broker.subscribe_local("dashboard-presence", [PRESENCE_FILTER], self._on_presence)
        return watcher

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        if watcher.subscriber is not None:
            self.gw.broker.unsubscribe_local(watcher.subscriber)
            watcher.subscriber = None
        if not self.watchers and self._presence is not None:
            self.gw.broker.unsubscribe_local(self._presence)
            self._presence = None

    def _now(self) -> int:
        return self.gw.clock.wall_ms()

    # ---- always-on subscriptions
    def _on_shadow(self, topic: str, payload: bytes, qos: int, client_id: str | None) -> None:
        """Every accepted update's documents message is kept raw (parsed only when a page asks for it)."""
        parsed = parse_shadow_topic(topic)
        if parsed is None:
            return
        key = (parsed.thing, parsed.shadow)
        now = self._now()
        if parsed.operation == "delete":
            self.shadow_history.pop(key, None)
        else:
            history = self.shadow_history.pop(key, None)
            if history is None:
                history = deque(maxlen=SHADOW_VERSIONS)
                if len(self.shadow_history) >= SHADOWS_TRACKED:
                    self.shadow_history.popitem(last=False)
            history.appendleft((now, payload))
            self.shadow_history[key] = history
        watchers = [w for w in self.watchers if w.view == "thing" and w.thing == parsed.thing]
        if watchers:
            event = _shadow_event(parsed.thing, parsed.shadow, parsed.operation == "delete", now, payload)
            if event is not None:
                for watcher in watchers:
                    watcher.push("shadow", event)

    def _on_edge_health(self, topic: str, payload: bytes, qos: int, client_id: str | None) -> None:
        try:
            report = json.loads(payload)
        except ValueError:
            return
        if isinstance(report, dict):
            self.edge_reports[topic.split("/")[2]] = (self._now(), report)

    def _on_presence(self, topic: str, payload: bytes, qos: int, client_id: str | None) -> None:
        for watcher in self.watchers:
            if watcher.view in ("fleet", "thing", "edge"):
                watcher.push("presence", payload)

    # ---- what the pages load
    def history_for(self, thing: str) -> dict[str | None, list[dict[str, Any]]]:
        """Newest first: {version, timestampMs, state: {desired, reported}} per kept documents message."""
        out: dict[str | None, list[dict[str, Any]]] = {}
        for (name, shadow), history in self.shadow_history.items():
            if name == thing:
                out[shadow] = [entry for ts, raw in history if (entry := _history_entry(ts, raw)) is not None]
        return out

    def edge(self) -> dict[str, Any]:
        sessions = self.gw.broker.sessions
        cores = []
        for name, (received_ms, report) in sorted(self.edge_reports.items()):
            extra = report.get("edgesim") or {}
            cores.append(
                {
                    "name": name,
                    "online": name in sessions,
                    "lastReportMs": received_ms,
                    "status": report.get("overallDeviceStatus"),
                    "spool": extra.get("spool"),
                    "shadowSync": extra.get("shadowSync"),
                    "components": [
                        {
                            "name": c.get("componentName"),
                            "state": c.get("status"),
                            "restarts": c.get("restarts", 0),
                        }
                        for c in report.get("components") or []
                        if isinstance(c, dict)
                    ],
                }
            )
        return {"cores": cores}

    # ---- every second
    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:  # the dashboard must never take the gateway down
                log.exception("dashboard tick failed")

    def tick(self) -> None:
        gw = self.gw
        now = self._now()
        stats = gw.broker.stats
        counts = (stats["messages_in"], stats["messages_out"])
        point = {"t": now, "in": counts[0] - self._last_counts[0], "out": counts[1] - self._last_counts[1]}
        self._last_counts = counts
        self.rates.append(point)
        matched_now = self._sample_rules()
        self._sample_streams()
        if not self.watchers:
            return
        base: dict[str, Any] = {**point, "connections": len(gw.broker.sessions)}
        wanted = {w.view for w in self.watchers}
        if wanted & {"fleet", "thing"}:
            base["lastMessage"] = self._changed_last_messages()
        builders = {
            "rules": lambda: {
                r["ruleName"]: {**r["counters"], "matchedPerS": matched_now.get(r["ruleName"], 0)}
                for r in views.rules(gw)
            },
            "sinks": lambda: views.sinks(gw, self.stream_rates),
            "edge": self.edge,
        }
        extras: dict[str, Any] = {}
        for view in wanted & builders.keys():
            try:
                extras[view] = builders[view]()
            except Exception:  # one page's figures failing must not stop the others' ticks
                log.exception("dashboard: building the %s view failed", view)
        ticks: dict[str, bytes] = {}
        for watcher in self.watchers:
            if watcher.skipped:
                watcher.push("skipped", {"count": watcher.skipped})
                watcher.skipped = 0
            watcher.sent_this_second = 0
            data = ticks.get(watcher.view)
            if data is None:
                extra = extras.get(watcher.view)
                data = ticks[watcher.view] = orjson.dumps(
                    base if extra is None else {**base, watcher.view: extra}
                )
            watcher.pending.append(sse("tick", data))
            watcher.wake.set()

    def _sample_rules(self) -> dict[str, int]:
        per_second: dict[str, int] = {}
        for runtime in self.gw.rules_engine.index:
            name = runtime.rule.name
            matched = runtime.metrics.matched
            delta = matched - self._last_rule_matched.get(name, 0)  # a new rule starts from 0
            self._last_rule_matched[name] = matched
            history = self.rule_history.get(name)
            if history is None:
                history = self.rule_history[name] = deque([0] * RULE_POINTS, maxlen=RULE_POINTS)
            history.append(delta)
            per_second[name] = delta
        return per_second

    def _sample_streams(self) -> None:
        for name, stream in self.gw.kinesis.streams.items():
            total = sum(stream.counters.values()) - len(stream.counters)
            self.stream_rates[name] = float(total - self._last_stream_records.get(name, total))
            self._last_stream_records[name] = total

    def _changed_last_messages(self) -> dict[str, int]:
        changed: dict[str, int] = {}
        seen = self._last_publish
        for client_id, conn in self.gw.broker.sessions.items():
            message = conn.last_message
            if message is None:
                continue
            last = message.received_ms
            if seen.get(client_id) != last:
                seen[client_id] = last
                changed[client_id] = last
        return changed
