"""The shadow service: load → pure document rules → commit → publish, for MQTT topics and the REST API.

MQTT requests that arrive in one event-loop turn are applied in order as one write of the store's group commit
(`Store.commit_soon`): every `/accepted` goes out only after its change is on disk. A batch whose commit failed is
retried request by request, each in its own transaction, so one bad request fails only its sender.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from gateway import jsonutil
from gateway.clock import Clock
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.registry.base import paginate
from gateway.shadow.document import (
    ShadowLimits,
    ShadowState,
    apply_update,
    delete,
    error_document,
    get_document,
    parse_get_or_delete,
    parse_update,
)
from gateway.shadow.exceptions import ShadowRejected
from gateway.shadow.topics import ShadowTopic, is_valid_shadow_name, is_valid_thing_name, parse_shadow_topic
from gateway.store import Store
from mqttwire import properties as mqtt5

if TYPE_CHECKING:
    from gateway.broker.core import Broker

log = logging.getLogger("edgesim.shadow")

Key = tuple[str, str]  # (thing, shadow name or "" for the classic shadow)
# (request topic, payload, a refusal decided on arrival, the MQTT 5 properties its reply carries)
Pending = tuple[ShadowTopic, bytes, "tuple[int, str] | None", "dict[int, Any] | None"]
# (topic, document, the request's MQTT 5 correlation properties for its own reply or None)
Outgoing = list[tuple[str, Any, "dict[int, Any] | None"]]
# (the requests of one group write, the counters before it: restored when it is retried one by one)
Batch = tuple[list[Pending], dict[str, int], dict[int, int]]


_dumps = jsonutil.dumps
MAX_INFLIGHT_PER_CONNECTION = 10
TOO_MANY_REQUESTS = (429, "Too Many Requests")


def _reply_properties(props: dict[int, Any] | None) -> dict[int, Any] | None:
    """What of an MQTT 5 request's properties its answer needs: correlation data and response topic."""
    if not props:
        return None
    kept = {k: props[k] for k in (mqtt5.CORRELATION_DATA, mqtt5.RESPONSE_TOPIC) if k in props}
    return kept or None


def _token_of(payload: bytes) -> str | None:
    """The request's clientToken, best effort, so even a refused request can be correlated."""
    try:
        token = json.loads(payload).get("clientToken")
        if isinstance(token, str):
            token.encode("utf-8")  # a lone surrogate could not be sent back
    except (ValueError, AttributeError, RecursionError):  # UnicodeDecodeError and UnicodeEncodeError are ValueErrors
        return None
    return token if isinstance(token, str) else None


class ShadowService:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        clock: Clock,
        limits: ShadowLimits,
        cache_size: int = 20000,
        max_inflight: int = MAX_INFLIGHT_PER_CONNECTION,
    ) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock
        self.limits = limits
        self.cache_size = cache_size
        self._cache: OrderedDict[Key, ShadowState | None] = OrderedDict()
        self._pending: list[Pending] = []
        self._batches: dict[asyncio.Future[Outgoing], list[Batch]] = {}  # group writes not yet answered
        self._inflight: dict[str, int] = {}
        self.max_inflight = max_inflight
        self.stats = {"updates": 0, "gets": 0, "deletes": 0, "rejected": 0}
        self.rejections: dict[int, int] = {}  # AWS error code -> rejected requests
        broker.shadow_handler = self.on_message

    # ---- state
    def _load(self, key: Key) -> ShadowState | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        row = self.store.one("SELECT record FROM shadows WHERE thing=? AND name=?", key)
        shadow = None if row is None else ShadowState.from_record(json.loads(row["record"]))
        self._remember(key, shadow)
        return shadow

    def _remember(self, key: Key, shadow: ShadowState | None) -> None:
        self._cache[key] = shadow
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _save(self, key: Key, shadow: ShadowState) -> None:
        self.store.db.execute(
            "INSERT OR REPLACE INTO shadows(thing, name, deleted, record) VALUES (?,?,?,?)",
            (key[0], key[1], int(shadow.deleted), _dumps(shadow.to_record()).decode()),
        )
        self._remember(key, shadow)

    # ---- the one operation step, shared by MQTT and REST
    def _execute(self, topic: ShadowTopic, payload: bytes, out: Outgoing, reply: dict[int, Any] | None = None) -> Any:
        """Apply one request inside the caller's transaction; returns the accepted document or raises. `reply`: the
        MQTT 5 properties its /accepted answer carries (the request's correlation data)."""
        key = (topic.thing, topic.shadow or "")
        now_s = self.clock.wall_ms() // 1000
        current = self._load(key)
        if topic.operation == "update":
            self.stats["updates"] += 1
            result = apply_update(current, parse_update(payload, self.limits), now_s, limits=self.limits)
            self._save(key, result.shadow)
            out.append((topic.reply("accepted"), result.accepted, reply))
            if result.delta is not None:
                out.append((topic.reply("delta"), result.delta, None))
            out.append((topic.reply("documents"), result.documents, None))
            return result.accepted
        if topic.operation == "get":
            self.stats["gets"] += 1
            doc = get_document(
                current,
                parse_get_or_delete(payload, self.limits),
                now_s,
                thing_name=topic.thing,
                shadow_name=topic.shadow,
            )
            out.append((topic.reply("accepted"), doc, reply))
            return doc
        self.stats["deletes"] += 1
        gone, doc = delete(
            current, parse_get_or_delete(payload, self.limits), now_s, thing_name=topic.thing, shadow_name=topic.shadow
        )
        self._save(key, gone)
        out.append((topic.reply("accepted"), doc, reply))
        return doc

    def _rejected(self, code: int) -> None:
        self.stats["rejected"] += 1
        self.rejections[code] = self.rejections.get(code, 0) + 1

    def _publish(self, out: Outgoing) -> None:
        now_ms = self.clock.wall_ms()
        for topic, doc, reply in out:
            payload = _dumps(doc)
            message = Message(topic, payload, 1, False, None, None, now_ms, "shadow")
            if reply is not None:
                # An MQTT 5 request: its answer carries its correlation data, and also goes to its response topic.
                message.properties = {k: v for k, v in reply.items() if k == mqtt5.CORRELATION_DATA} or None
                response_topic = reply.get(mqtt5.RESPONSE_TOPIC)
                if response_topic is not None and response_topic != topic:
                    self.broker.route(Message(response_topic, payload, 1, False, None, None, now_ms, "shadow",
                                              properties=message.properties))  # fmt: skip
            self.broker.route(message)

    # ---- MQTT
    def on_message(self, message: Message) -> None:
        topic = parse_shadow_topic(message.topic)
        if topic is None or not topic.is_request:
            return
        if not self._pending:
            self._inflight.clear()
            box: list[Batch] = []
            written = self.store.commit_soon(functools.partial(self._write_batch, box))
            self._batches[written] = box
            written.add_done_callback(self._batch_done)
        reply = _reply_properties(message.properties)
        if message.client_id is not None:
            # AWS answers 429 past 10 requests in flight on one connection; a batch's requests all are.
            count = self._inflight.get(message.client_id, 0) + 1
            self._inflight[message.client_id] = count
            if count > self.max_inflight:
                self._pending.append((topic, message.payload, TOO_MANY_REQUESTS, reply))
                return
        self._pending.append((topic, message.payload, None, reply))

    def _write_batch(self, box: list[Batch], db: object) -> Outgoing:
        """The store's group write: apply the requests received so far; their replies go out once it committed."""
        batch, self._pending = self._pending, []
        box.append((batch, dict(self.stats), dict(self.rejections)))
        return self._apply(batch)

    def flush(self) -> None:
        """Commit the requests received so far and publish their replies now (REST keeps its order with MQTT)."""
        self.store.flush()
        for written in [w for w in self._batches if w.done()]:
            self._batch_done(written)

    def _batch_done(self, written: asyncio.Future[Outgoing]) -> None:
        box = self._batches.pop(written, None)
        if not box:
            return  # handled by flush() already, or the write never ran
        batch, stats, rejections = box[0]
        if not written.cancelled() and written.exception() is None:
            self._publish(written.result())
            return
        # One request may have poisoned the shared commit: each again on its own, so only its sender fails.
        log.warning("shadow batch of %d failed to commit (%s); retrying one by one", len(batch), written.exception())
        self._cache.clear()  # the cache may hold changes that were rolled back
        self.stats, self.rejections = stats, rejections  # counted again below
        out: Outgoing = []
        for item in batch:
            try:
                out += self._commit([item])
            except Exception as item_exc:
                self._cache.clear()
                topic, payload, _, reply = item
                log.error("shadow %s of %s failed to commit: %s", topic.operation, topic.thing, item_exc)
                failure = ShadowRejected(500, "Internal service failure", client_token=_token_of(payload))
                self._rejected(500)
                document = error_document(failure, None, self.clock.wall_ms() // 1000)
                out.append((topic.reply("rejected"), document, reply))
        self._publish(out)

    def _commit(self, batch: list[Pending]) -> Outgoing:
        """Apply requests in a transaction of their own; the replies to publish (it has committed)."""
        with self.store.transaction():
            return self._apply(batch)

    def _apply(self, batch: list[Pending]) -> Outgoing:
        """Apply requests inside the caller's transaction; the replies to publish once it has committed."""
        out: Outgoing = []
        for topic, payload, refusal, reply in batch:
            try:
                if refusal is not None:
                    raise ShadowRejected(refusal[0], refusal[1], client_token=_token_of(payload))
                self._execute(topic, payload, out, reply)
            except ShadowRejected as err:
                self._rejected(err.code)
                if err.client_token is None:
                    err.client_token = _token_of(payload)
                document = error_document(err, None, self.clock.wall_ms() // 1000)
                out.append((topic.reply("rejected"), document, reply))
        return out

    # ---- REST (iot-data)
    def _rest(self, thing: str, shadow: str | None, operation: str, payload: bytes) -> bytes:
        if not is_valid_thing_name(thing):
            raise InvalidRequestException(f"Invalid thing name: {thing!r}")
        if shadow is not None and not is_valid_shadow_name(shadow):
            raise InvalidRequestException(f"Invalid shadow name: {shadow!r}")
        self.flush()  # keep the order with MQTT requests already received
        topic = ShadowTopic(thing, shadow, operation)  # type: ignore[arg-type]
        out: Outgoing = []
        try:
            with self.store.transaction():
                doc = self._execute(topic, payload, out)
        except ShadowRejected as err:
            self._rejected(err.code)
            raise err.to_aws_error() from err
        except Exception:
            self._cache.clear()  # it may hold the change that was rolled back
            raise
        # REST requests are answered in the HTTP body; subscribers still see delta and documents.
        self._publish([(t, d, None) for t, d, _ in out if not t.endswith("/accepted")])
        return _dumps(doc)

    def get_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        return self._rest(thing, shadow, "get", b"")

    def update_thing_shadow(self, thing: str, shadow: str | None, payload: bytes) -> bytes:
        return self._rest(thing, shadow, "update", payload)

    def delete_thing_shadow(self, thing: str, shadow: str | None) -> bytes:
        return self._rest(thing, shadow, "delete", b"")

    def list_named_shadows_for_thing(self, thing: str, next_token: str | None, page_size: int | None) -> dict[str, Any]:
        self.flush()
        rows = self.store.query(
            "SELECT name FROM shadows WHERE thing=? AND name<>'' AND deleted=0 ORDER BY name", (thing,)
        )
        page, token = paginate([r["name"] for r in rows], page_size, next_token, limit=100)
        out: dict[str, Any] = {"results": page, "timestamp": self.clock.wall_ms() // 1000}
        if token:
            out["nextToken"] = token
        return out
