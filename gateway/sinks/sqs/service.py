"""SQS over the store: queues, durable messages, long polling and dead-letter redrive (boto3 `sqs` operations).

A queue's settings and counters are a small `Queue.to_state()` snapshot in `sqs_queues`; its messages are rows in
`sqs_messages`. Operations change the in-memory core and mark the queue dirty; one flush per event-loop turn writes
every dirty queue's changed rows in one transaction (group commit: one fsync for all concurrent requests).
The API awaits `durable()` before it answers, so anything a caller is told about is committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway import jsonutil
from gateway.clock import Clock
from gateway.sinks.sqs.attributes import (
    MAX_WAIT_TIME_SECONDS,
    MessageAttribute,
    parse_queue_attributes,
    validate_batch_ids,
    validate_batch_size,
)
from gateway.sinks.sqs.exceptions import InvalidParameterValue, QueueDoesNotExist, QueueNameExists, SqsError
from gateway.sinks.sqs.moves import MessageMoves
from gateway.sinks.sqs.queue import Queue, Received, SendResult
from gateway.store import OffLoop, Store, insert_rows

log = logging.getLogger("edgesim.sqs")

MAX_LIST_RESULTS = 1000


@dataclass(frozen=True, slots=True)
class SendEntry:
    """One message to send (SendMessage or one SendMessageBatch entry), attributes already decoded."""

    body: str
    attributes: Mapping[str, MessageAttribute] | None = None
    delay_seconds: int | None = None
    group_id: str | None = None
    dedup_id: str | None = None
    system_attributes: Mapping[str, MessageAttribute] | None = None

    def size(self) -> int:
        total = len(self.body.encode("utf-8"))
        for name, attr in (self.attributes or {}).items():
            total += attr.wire_size(name)
        return total


class _Undone(sqlite3.OperationalError):
    """Changes made on top of a failed commit's in-memory state, failed with it (never acknowledged)."""


def _no_queue() -> QueueDoesNotExist:
    return QueueDoesNotExist("The specified queue does not exist.")


class SqsService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        region: str,
        account: str,
        host: str,
        api_port: Callable[[], int],
    ) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.host = host
        self._api_port = api_port  # read lazily: the port is known only after the API server has bound
        self.queues: dict[str, Queue] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        self._dirty: dict[str, Queue] = {}
        self._flushed: asyncio.Future[None] | None = None  # the store's write that takes the dirty queues
        self._poisoned = False  # an earlier commit failed: the pending write must fail too
        self.moves = MessageMoves(self)
        for row in store.query("SELECT name, state FROM sqs_queues"):
            rows = store.query("SELECT state FROM sqs_messages WHERE queue=?", (row["name"],))
            queue = Queue.from_state(json.loads(row["state"]), (json.loads(r["state"]) for r in rows))
            self.queues[row["name"]] = queue
            if "messages" in json.loads(row["state"]):  # saved before messages were rows: rewrite them as rows
                self._dirty[queue.name] = queue
        if self._dirty:
            with store.transaction() as db:
                self._flush_into(db)

    # ---- helpers
    def queue_url(self, name: str) -> str:
        return f"http://{self.host}:{self._api_port()}/{self.account}/{name}"

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{name}"

    @staticmethod
    @functools.lru_cache(maxsize=1024)  # the rule action asks for the same few URLs per message
    def name_from_url(queue_url: str) -> str:
        """The queue name in `http://host:port/<account>/<name>` (a bare name is accepted too)."""
        path = urlsplit(queue_url).path if "://" in queue_url else queue_url
        parts = [p for p in path.split("/") if p]
        return parts[-1] if parts else ""

    def _queue(self, queue_url: str | None) -> Queue:
        if not queue_url:
            raise InvalidParameterValue("Value for parameter QueueUrl is invalid. Reason: QueueUrl is required.")
        queue = self.queues.get(self.name_from_url(queue_url))
        if queue is None:
            raise _no_queue()
        return queue

    def _queue_by_arn(self, arn: str) -> Queue | None:
        queue = self.queues.get(arn.rsplit(":", 1)[-1])
        return queue if queue is not None and queue.arn == arn else None

    def queue_by_arn(self, arn: str) -> Queue | None:
        return self._queue_by_arn(arn)

    def save_and_wake(self, *queues: Queue) -> None:
        self._save(*queues)
        for queue in queues:
            self._wake(queue.name)

    def _save(self, *queues: Queue) -> None:
        """Mark queues changed; their rows are written by one store write per loop turn (the group commit)."""
        for queue in queues:
            self._dirty[queue.name] = queue
        if self._flushed is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop (scripts, tests of the service): write through
                with self.store.transaction() as db:
                    self._flush_into(db)
                return
            written: list[str] = []
            self._flushed = self.store.commit_soon(functools.partial(self._write, written))
            self._flushed.add_done_callback(functools.partial(self._after_commit, written))

    def _write(self, written: list[str], db: sqlite3.Connection) -> OffLoop:
        self._flushed = None  # changes from now on go into the next write
        if self._poisoned:
            raise _Undone("an earlier SQS commit failed; these changes were undone with it")
        written.extend(self._dirty)
        ops = self._take_changes()
        return OffLoop(lambda writer: _apply(writer, ops))  # the SQLite work on the commit thread

    def _after_commit(self, written: list[str], done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is None:
            return
        # Nobody's change is durable. Changes made since (their write not run yet) were made on the same in-memory
        # queues: that write fails too, so nothing is acknowledged that the reload below undoes.
        log.error("SQS commit of %d queue(s) failed: %s", len(written), done.exception())
        names = [*written, *self._dirty]
        self._dirty = {}
        if self._flushed is not None and not isinstance(done.exception(), _Undone):
            self._poisoned = True
            self._flushed.add_done_callback(self._unpoison)
        self._reload(list(dict.fromkeys(names)))

    def _unpoison(self, _: asyncio.Future[None]) -> None:
        self._poisoned = False

    async def durable(self) -> None:
        """Wait until every change made so far is committed (returns at once when nothing is pending)."""
        if self._flushed is not None:
            await self._flushed  # shared; a store commit future cannot be cancelled

    def committed(self) -> asyncio.Future[None]:
        """A future done once every change made so far is committed (already done when nothing is pending)."""
        if self._flushed is not None:
            return self._flushed
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _reload(self, names: list[str]) -> None:
        """Undo in memory what a failed commit did not store: the queues as the database has them, so nothing a
        caller was told failed can be received (or stay deleted)."""
        for name in names:
            row = self.store.one("SELECT state FROM sqs_queues WHERE name=?", (name,))
            if row is None:
                self.queues.pop(name, None)
                continue
            rows = self.store.query("SELECT state FROM sqs_messages WHERE queue=?", (name,))
            self.queues[name] = Queue.from_state(json.loads(row["state"]), (json.loads(r["state"]) for r in rows))

    def _flush_into(self, db: sqlite3.Connection) -> None:
        _apply(db, self._take_changes())

    def _take_changes(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The dirty queues' changes as statements and their rows, encoded now (on the loop)."""
        dirty, self._dirty = self._dirty, {}
        ops: list[tuple[str, list[tuple[Any, ...]]]] = []
        for name, queue in dirty.items():
            if self.queues.get(name) is not queue:
                continue  # deleted since it was marked
            changes = queue.drain_changes()
            if changes.purged:
                ops.append(("DELETE FROM sqs_messages WHERE queue=?", [(name,)]))
            if changes.upserts:
                ops.append((_UPSERT_HEAD, [(name, row[0], _compact(row)) for row in changes.upserts]))
            if changes.removed:
                ops.append((_DELETE, [(name, message_id) for message_id in changes.removed]))
            ops.append((_SAVE_QUEUE, [(name, _compact(queue.to_state()))]))
        return ops

    def _wake(self, name: str) -> None:
        event = self._wakers.pop(name, None)
        if event is not None:
            event.set()

    def _check_redrive_target(self, queue_name: str, attrs: Mapping[str, str]) -> None:
        raw = attrs.get("RedrivePolicy")
        if not raw:
            return
        try:
            target = json.loads(raw).get("deadLetterTargetArn")
        except (ValueError, AttributeError):
            return  # the core reports the malformed policy
        missing = isinstance(target, str) and target.startswith("arn:") and self._queue_by_arn(target) is None
        if missing and str(target).rsplit(":", 1)[-1] != queue_name:
            raise InvalidParameterValue(
                f"Value {raw} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist."
            )

    # ---- queues
    def create_queue(self, name: str, attributes: Mapping[str, str] | None = None) -> dict[str, Any]:
        attrs = dict(attributes or {})
        wanted = parse_queue_attributes(name, attrs)  # validates the name and every attribute
        existing = self.queues.get(name)
        if existing is not None:
            have, want = existing.attributes.to_wire(), wanted.to_wire()
            if any(have.get(key) != want.get(key) for key in attrs):
                raise QueueNameExists(
                    f"A queue already exists with the same name and a different value for attribute(s) "
                    f"{', '.join(k for k in attrs if have.get(k) != want.get(k))}"
                )
            return {"QueueUrl": self.queue_url(name)}
        self._check_redrive_target(name, attrs)
        now = self.clock.wall_ms()
        queue = Queue(name, self.arn(name), wanted, created_at=now)
        self.queues[name] = queue
        self._save(queue)
        return {"QueueUrl": self.queue_url(name)}

    def get_queue_url(self, name: str) -> dict[str, Any]:
        if name not in self.queues:
            raise _no_queue()
        return {"QueueUrl": self.queue_url(name)}

    def list_queues(
        self, prefix: str | None = None, max_results: int | None = None, next_token: str | None = None
    ) -> dict[str, Any]:
        if max_results is not None and not 1 <= max_results <= MAX_LIST_RESULTS:
            raise InvalidParameterValue(
                f"Value {max_results} for parameter MaxResults is invalid. Reason: MaxResults must be an integer "
                "between 1 and 1000."
            )
        after = ""
        if next_token:
            try:
                after = base64.urlsafe_b64decode(next_token.encode()).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidParameterValue("Invalid NextToken value.") from exc
        names = sorted(n for n in self.queues if n.startswith(prefix or "") and n > after)
        size = max_results or MAX_LIST_RESULTS
        page = names[:size]
        out: dict[str, Any] = {}
        if page:
            out["QueueUrls"] = [self.queue_url(n) for n in page]
        if max_results is not None and len(names) > size:
            out["NextToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return out

    def delete_queue(self, queue_url: str) -> None:
        queue = self._queue(queue_url)
        del self.queues[queue.name]
        self._dirty.pop(queue.name, None)
        with self.store.transaction() as db:
            db.execute("DELETE FROM sqs_queues WHERE name=?", (queue.name,))
            db.execute("DELETE FROM sqs_messages WHERE queue=?", (queue.name,))
        self._wake(queue.name)

    def get_queue_attributes(self, queue_url: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        queue = self._queue(queue_url)
        wanted = list(names or [])
        if not wanted:
            return {}
        attrs = queue.get_attributes(wanted, now=self.clock.wall_ms())
        return {"Attributes": attrs} if attrs else {}

    def set_queue_attributes(self, queue_url: str, attributes: Mapping[str, str]) -> None:
        queue = self._queue(queue_url)
        self._check_redrive_target(queue.name, attributes)
        queue.set_attributes(attributes, now=self.clock.wall_ms())
        self._save(queue)
        self._wake(queue.name)  # a shorter wait or visibility may let a long poll return

    def list_dead_letter_source_queues(self, queue_url: str) -> dict[str, Any]:
        queue = self._queue(queue_url)
        sources = sorted(
            q.name
            for q in self.queues.values()
            if q.attributes.redrive_policy is not None
            and q.attributes.redrive_policy.dead_letter_target_arn == queue.arn
        )
        return {"queueUrls": [self.queue_url(n) for n in sources]}

    def purge_queue(self, queue_url: str) -> None:
        queue = self._queue(queue_url)
        queue.purge(now=self.clock.wall_ms())
        self._save(queue)

    # ---- messages
    def _send(self, queue: Queue, entry: SendEntry, now: int) -> SendResult:
        return queue.send(
            entry.body,
            entry.attributes,
            entry.delay_seconds,
            entry.group_id,
            entry.dedup_id,
            now=now,
            system_attributes=entry.system_attributes,
            sender_id=self.account,
        )

    def send_message(self, queue_url: str, entry: SendEntry) -> SendResult:
        queue = self._queue(queue_url)
        result = self._send(queue, entry, self.clock.wall_ms())
        if not result.duplicate:
            self._save(queue)
        self._wake(queue.name)
        return result

    def send_message_batch(
        self, queue_url: str, entries: list[tuple[str, SendEntry]]
    ) -> tuple[list[tuple[str, SendResult]], list[tuple[str, SqsError]]]:
        queue = self._queue(queue_url)
        validate_batch_ids(entry_id for entry_id, _ in entries)
        validate_batch_size(sum(e.size() for _, e in entries), queue.attributes.maximum_message_size)
        ok: list[tuple[str, SendResult]] = []
        failed: list[tuple[str, SqsError]] = []
        now = self.clock.wall_ms()
        for entry_id, entry in entries:
            try:
                ok.append((entry_id, self._send(queue, entry, now)))
            except SqsError as exc:
                failed.append((entry_id, exc))
        if ok:
            self._save(queue)
        self._wake(queue.name)
        return ok, failed

    def _receive_once(
        self,
        queue: Queue,
        max_messages: int,
        visibility_timeout: int | None,
        attribute_names: Iterable[str],
        message_attribute_names: Iterable[str],
    ) -> list[Received]:
        now = self.clock.wall_ms()
        result = queue.receive(
            max_messages,
            visibility_timeout,
            now=now,
            attribute_names=attribute_names,
            message_attribute_names=message_attribute_names,
        )
        if not result.messages and not result.moved:
            return []
        touched = [queue]
        for letter in result.moved:
            target = self._queue_by_arn(letter.target_arn)
            if target is None:
                log.warning(
                    "dead-letter queue %s of %s does not exist; message %s dropped",
                    letter.target_arn,
                    queue.name,
                    letter.message.message_id,
                )
                continue
            target.accept_dead_letter(letter, now=now)
            touched.append(target)
        self._save(*touched)
        for target in touched[1:]:
            self._wake(target.name)
        return result.messages

    async def receive_message(
        self,
        queue_url: str,
        max_messages: int | None = None,
        visibility_timeout: int | None = None,
        wait_time_seconds: int | None = None,
        attribute_names: Iterable[str] = (),
        message_attribute_names: Iterable[str] = (),
    ) -> list[Received]:
        """ReceiveMessage; with a wait time, a long poll that returns as soon as any message can be received."""
        queue = self._queue(queue_url)
        wait = queue.attributes.receive_message_wait_time_seconds if wait_time_seconds is None else wait_time_seconds
        if not 0 <= wait <= MAX_WAIT_TIME_SECONDS:
            raise InvalidParameterValue(
                f"Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
            )
        names, msg_names = list(attribute_names), list(message_attribute_names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            messages = self._receive_once(
                queue, 1 if max_messages is None else max_messages, visibility_timeout, names, msg_names
            )
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return messages
            now = self.clock.wall_ms()
            next_at = queue.next_visible_at(now=now)
            timeout = remaining if next_at is None else min(remaining, max(0.01, (next_at - now) / 1000 + 0.001))
            event = self._wakers.setdefault(queue.name, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            current = self.queues.get(queue.name)
            if current is None:
                raise _no_queue()
            queue = current  # reloaded after a failed commit: the same queue as stored

    def delete_message(self, queue_url: str, receipt_handle: str) -> None:
        queue = self._queue(queue_url)
        if queue.delete(receipt_handle, now=self.clock.wall_ms()) == "deleted":
            self._save(queue)
        if queue.fifo:
            self._wake(queue.name)  # the group's next message may now be receivable

    def delete_message_batch(
        self, queue_url: str, entries: list[tuple[str, str]]
    ) -> tuple[list[str], list[tuple[str, SqsError]]]:
        queue = self._queue(queue_url)
        validate_batch_ids((entry_id for entry_id, _ in entries), "DeleteMessageBatchRequestEntry")
        ok: list[str] = []
        failed: list[tuple[str, SqsError]] = []
        now = self.clock.wall_ms()
        changed = False
        for entry_id, handle in entries:
            try:
                changed |= queue.delete(handle, now=now) == "deleted"
                ok.append(entry_id)
            except SqsError as exc:
                failed.append((entry_id, exc))
        if changed:
            self._save(queue)
        if queue.fifo:
            self._wake(queue.name)
        return ok, failed

    def change_message_visibility(self, queue_url: str, receipt_handle: str, timeout: int) -> None:
        queue = self._queue(queue_url)
        queue.change_visibility(receipt_handle, timeout, now=self.clock.wall_ms())
        self._save(queue)
        self._wake(queue.name)

    def change_message_visibility_batch(
        self, queue_url: str, entries: list[tuple[str, str, int]]
    ) -> tuple[list[str], list[tuple[str, SqsError]]]:
        queue = self._queue(queue_url)
        validate_batch_ids((entry_id for entry_id, _, _ in entries), "ChangeMessageVisibilityBatchRequestEntry")
        ok: list[str] = []
        failed: list[tuple[str, SqsError]] = []
        now = self.clock.wall_ms()
        for entry_id, handle, timeout in entries:
            try:
                queue.change_visibility(handle, timeout, now=now)
                ok.append(entry_id)
            except SqsError as exc:
                failed.append((entry_id, exc))
        if ok:
            self._save(queue)
        self._wake(queue.name)
        return ok, failed


_UPSERT_HEAD = "INSERT OR REPLACE INTO sqs_messages(queue, message_id, state) VALUES "
_DELETE = "DELETE FROM sqs_messages WHERE queue=? AND message_id=?"
_SAVE_QUEUE = "INSERT OR REPLACE INTO sqs_queues(name, state) VALUES (?,?)"


def _compact(value: Any) -> str:
    return jsonutil.dumps(value).decode()


def _apply(db: sqlite3.Connection, ops: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    for sql, rows in ops:
        if sql is _UPSERT_HEAD:
            insert_rows(db, sql, rows)
        elif len(rows) == 1:
            db.execute(sql, rows[0])
        else:
            db.executemany(sql, rows)
