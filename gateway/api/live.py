"""The dashboard's live side: per-second samples, shadow version history, edge health reports, and one event stream
per open browser view, all fed by in-process subscriptions to the broker (the same trie and delivery as any client)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api import dashboard_views as views
from gateway.api.edge_reports import EdgeReports
from gateway.broker.local import LocalSubscriber
from gateway.shadow.document import compute_delta
from gateway.shadow.topics import parse_shadow_topic

if TYPE_CHECKING:
    from gateway.api.parts import ViewParts

log = logging.getLogger("edgesim.dashboard")

RATE_POINTS = 300  # seconds of messages/s history on the fleet page
RULE_POINTS = 120  # seconds of matched/s per rule (sparklines)
SHADOW_VERSIONS = 20  # versions kept per shadow
SHADOWS_TRACKED = 5000  # shadows with history in memory (least recently updated forgotten first)
MESSAGES_PER_S = 50  # per browser; the rest are counted and reported as skipped
MAX_PENDING = 2000  # events waiting for one slow browser before messages are skipped
MAX_PENDING_BYTES = 4 * 1024 * 1024  # a browser this far behind is cut off (EventSource reconnects by itself)
HISTORY_BYTES = 64 * 1024 * 1024  # all kept shadow versions together
EDGE_CORES = 1000  # health reports kept (by core name)
S3_LIST_EVERY_S = 10.0
HEARTBEAT_S = 15.0
EDGE_HEALTH_FILTER = "$aws/things/+/greengrassv2/health/json"
SHADOW_FILTERS = [
    "$aws/things/+/shadow/update/documents",
    "$aws/things/+/shadow/name/+/update/documents",
    "$aws/things/+/shadow/delete/accepted",
    "$aws/things/+/shadow/name/+/delete/accepted",
]
PRESENCE_FILTER = "$aws/events/presence/+/+"
VIEWS = ("fleet", "thing", "tail", "rules", "sinks", "edge", "jobs")


def sse(event: str, data: Any) -> bytes:
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"event: " + event.encode() + b"\ndata: " + body.replace(b"\n", b"\ndata: ") + b"\n\n"


def _current(raw: bytes) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (clients can publish to the topics the feed watches)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def edge_core(name: str, received_ms: int, report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The edge page's card from a core's health report (Greengrass fleet status + edgesim's figures)."""
    if report is None:
        return None
    extra = _object(report.get("edgesim"))
    spool, sync = _object(extra.get("spool")), _object(extra.get("shadowSync"))
    components = report.get("components")
    status = report.get("overallDeviceStatus")
    return {
        "name": name,
        "lastReportMs": received_ms,
        "status": status if isinstance(status, str) else None,
        "spool": {k: _count(spool.get(k)) for k in ("messages", "bytes", "maxBytes")} if spool else None,
        "shadowSync": {k: _count(sync.get(k)) for k in ("shadows", "pending", "lastSyncMs")} if sync else None,
        "components": [
            {"name": str(c.get("componentName")), "state": str(c.get("status")), "restarts": _count(c.get("restarts"))}
            for c in (components if isinstance(components, list) else [])[:100]
            if isinstance(c, dict)
        ],
    }


def _history_entry(ts: int, raw: bytes) -> dict[str, Any] | None:
    doc = _current(raw)
    if doc is None:
        return None
    current = _object(doc.get("current"))
    state = _object(current.get("state"))
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
        self.pending_bytes = 0
        self.closed = False
        self.wake = asyncio.Event()
        self.sent_this_second = 0
        self.skipped = 0
        self.subscriber: LocalSubscriber | None = None

    def push(self, event: str, data: Any) -> None:
        frame = sse(event, data)
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        if self.pending_bytes > MAX_PENDING_BYTES:
            self.close()  # not reading: its response ends, the browser reconnects and loads the page afresh
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def offer_message(
        self, topic: str, payload: bytes, qos: int, client_id: str | None, props: dict[int, Any] | None, now_ms: int
    ) -> None:
        if self.sent_this_second >= MESSAGES_PER_S or len(self.pending) >= MAX_PENDING:
            self.skipped += 1
            return
        self.sent_this_second += 1
        self.push("message", views.message_json(topic, payload, qos, client_id, now_ms, props))

    def take(self) -> bytes:
        out = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        self.wake.clear()
        return out


class LiveFeed:
    def __init__(self, gw: ViewParts) -> None:
        self.gw = gw
        self.rates: deque[dict[str, Any]] = deque(maxlen=RATE_POINTS)
        self.rule_history: dict[str, deque[int]] = {}
        self.shadow_history: OrderedDict[tuple[str, str | None], deque[tuple[int, bytes]]] = OrderedDict()
        self.edge_reports: dict[str, dict[str, Any]] = {}  # core -> what its page shows of its last report
        self.watchers: set[Watcher] = set()
        self._subscribers: list[LocalSubscriber] = []
        self._history_bytes = 0
        self._s3_listing: tuple[float, dict[tuple[str, str], list[Any]]] = (0.0, {})
        # Only while a browser watches: lifecycle events are built only when someone subscribes to them.
        self._presence: LocalSubscriber | None = None
        self._last_counts = (0, 0)
        self._last_rule_matched: dict[str, int] = {}
        self._last_stream_records: dict[str, int] = {}
        self.stream_rates: dict[str, float] = {}
        self._last_publish: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._edge_store: EdgeReports | None = None

    # ---- lifecycle
    def start(self) -> None:
        self._edge_store = EdgeReports(self.gw.store, EDGE_CORES)
        self.edge_reports.update(self._edge_store.load())
        broker = self.gw.broker
        self._subscribers = [
            broker.subscribe_local("dashboard-shadows", SHADOW_FILTERS, self._on_shadow),
            broker.subscribe_local("dashboard-edge", [EDGE_HEALTH_FILTER], self._on_edge_health),
        ]
        counters = broker.counters()
        self._last_counts = (counters["messages_in"], counters["messages_out"])
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
                    "dashboard-tail",
                    [topic_filter],
                    lambda t, p, q, c, props: watcher.offer_message(t, p, q, c, props, self._now()),
                )
            except Exception as exc:  # an invalid filter: the page shows why
                watcher.push("error", {"message": str(exc)})
        elif view == "thing" and thing:
            name = thing

            def on_message(
                topic: str, payload: bytes, qos: int, client_id: str | None, props: dict[int, Any] | None
            ) -> None:
                if client_id == name or name in topic.split("/"):
                    watcher.offer_message(topic, payload, qos, client_id, props, self._now())

            watcher.subscriber = broker.subscribe_local("dashboard-thing", ["#", f"$aws/things/{name}/#"], on_message)
        self.watchers.add(watcher)
        if self._presence is None:
            self._presence = broker.subscribe_local("dashboard-presence", [PRESENCE_FILTER], self._on_presence)
        return watcher

    def remove(self, watcher: Watcher) -> None:
        watcher.close()
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
    def _on_shadow(self, topic: str, payload: bytes, qos: int, client_id: str | None, _props: object = None) -> None:
        """Every accepted update's documents message is kept raw (parsed only when a page asks for it)."""
        parsed = parse_shadow_topic(topic)
        if parsed is None:
            return
        key = (parsed.thing, parsed.shadow)
        now = self._now()
        history = self.shadow_history.pop(key, None)  # re-inserted last: the dict is in update order
        if parsed.operation == "delete":
            if history is not None:
                self._history_bytes -= sum(len(raw) for _, raw in history)
        else:
            if history is None:
                history = deque(maxlen=SHADOW_VERSIONS)
            elif len(history) == SHADOW_VERSIONS:
                self._history_bytes -= len(history[-1][1])  # the oldest version, about to fall off
            history.appendleft((now, payload))
            self._history_bytes += len(payload)
            self.shadow_history[key] = history
            # The least recently updated shadows go first.
            while len(self.shadow_history) > SHADOWS_TRACKED or self._history_bytes > HISTORY_BYTES:
                _, dropped = self.shadow_history.popitem(last=False)
                self._history_bytes -= sum(len(raw) for _, raw in dropped)
        watchers = [w for w in self.watchers if w.view == "thing" and w.thing == parsed.thing]
        if watchers:
            event = _shadow_event(parsed.thing, parsed.shadow, parsed.operation == "delete", now, payload)
            if event is not None:
                for watcher in watchers:
                    watcher.push("shadow", event)

    def _on_edge_health(
        self, topic: str, payload: bytes, qos: int, client_id: str | None, _props: object = None
    ) -> None:
        """Any client may publish here: the report is checked and reduced to what the page shows, at intake."""
        core = topic.split("/")[2]
        entry = edge_core(core, self._now(), _current(payload))
        if entry is None:
            return
        reports = self.edge_reports
        reports.pop(core, None)
        dropped = None
        if len(reports) >= EDGE_CORES:
            dropped = next(iter(reports))
            del reports[dropped]
        reports[core] = entry
        if self._edge_store is not None:
            self._edge_store.save(core, entry, dropped)

    def _on_presence(self, topic: str, payload: bytes, qos: int, client_id: str | None, _props: object = None) -> None:
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
        return {"cores": [{**core, "online": name in sessions} for name, core in sorted(self.edge_reports.items())]}

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
        counters = gw.broker.counters()
        counts = (counters["messages_in"], counters["messages_out"])
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
            "sinks": lambda: views.sinks(gw, self.stream_rates, self._cached_objects),
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
                data = ticks[watcher.view] = orjson.dumps(base if extra is None else {**base, watcher.view: extra})
            watcher.push("tick", data)

    def _cached_objects(self, bucket: str, prefix: str) -> list[Any]:
        """S3 listings for the sinks page's ticks: a directory walk at most every 10 s, not every second."""
        listed_at, listings = self._s3_listing
        now = time.monotonic()
        if now - listed_at > S3_LIST_EVERY_S:
            self._s3_listing = (now, listings := {})
        key = (bucket, prefix)
        if key not in listings:
            listings[key] = views.list_objects(self.gw, bucket, prefix)
        return listings[key]

    def _sample_rules(self) -> dict[str, int]:
        per_second: dict[str, int] = {}
        for runtime in self.gw.rules_engine.index:
            name = runtime.rule.name
            matched = runtime.metrics.matched
            delta = max(0, matched - self._last_rule_matched.get(name, 0))  # a new rule starts from 0
            self._last_rule_matched[name] = matched
            history = self.rule_history.get(name)
            if history is None:
                history = self.rule_history[name] = deque([0] * RULE_POINTS, maxlen=RULE_POINTS)
            history.append(delta)
            per_second[name] = delta
        for gone in self.rule_history.keys() - per_second.keys():
            del self.rule_history[gone]
            self._last_rule_matched.pop(gone, None)
        return per_second

    def _sample_streams(self) -> None:
        for name, stream in self.gw.kinesis.streams.items():
            total = stream.records_written
            self.stream_rates[name] = float(max(0, total - self._last_stream_records.get(name, total)))
            self._last_stream_records[name] = total
        for gone in self.stream_rates.keys() - self.gw.kinesis.streams.keys():
            del self.stream_rates[gone]
            self._last_stream_records.pop(gone, None)

    def _changed_last_messages(self) -> dict[str, int]:
        changed: dict[str, int] = {}
        seen = self._last_publish
        sessions = self.gw.broker.sessions
        if len(seen) > 2 * len(sessions) + 1000:  # clients that left
            self._last_publish = seen = {c: ms for c, ms in seen.items() if c in sessions}
        for client_id, conn in sessions.items():
            message = conn.last_message
            if message is None:
                continue
            last = message.received_ms
            if seen.get(client_id) != last:
                seen[client_id] = last
                changed[client_id] = last
        return changed
