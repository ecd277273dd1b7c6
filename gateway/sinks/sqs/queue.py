"""One SQS queue as a pure in-memory model: `now` (epoch ms) is passed in; results and DLQ moves are returned."""

from __future__ import annotations

import base64
import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from gateway.sinks.sqs.attributes import (
    DEDUP_WINDOW_MS,
    MAX_BATCH_ENTRIES,
    MAX_VISIBILITY_TIMEOUT,
    PURGE_INTERVAL_MS,
    MessageAttribute,
    QueueAttributes,
    parse_queue_attributes,
    validate_attribute_names,
    validate_group_or_dedup_id,
    validate_message_attributes,
    validate_text,
)
from gateway.sinks.sqs.checksums import (
    ReceiptHandle,
    content_dedup_id,
    derive_message_id,
    md5_of_attributes,
    md5_of_body,
    queue_tag,
)
from gateway.sinks.sqs.exceptions import (
    InvalidParameterValue,
    MessageNotInflight,
    MissingParameter,
    PurgeQueueInProgress,
    ReceiptHandleIsInvalid,
)

READY, DELAYED, INFLIGHT = "ready", "delayed", "inflight"
DeleteOutcome = Literal["deleted", "stale", "gone"]
_SEQUENCE_BASE = 18_000_000_000_000_000_000  # FIFO sequence numbers are 20-digit strings


@dataclass(slots=True)
class Message:
    """A stored message: plain data, so the shell can persist it (see `Queue.to_state`)."""

    message_id: str
    body: str
    attributes: dict[str, MessageAttribute]
    system_attributes: dict[str, MessageAttribute]
    sent_at: int
    visible_at: int
    seq: int
    sender_id: str = ""
    group_id: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None
    receive_count: int = 0
    first_received_at: int | None = None
    received_at: int | None = None
    source_arn: str | None = None
    state: str = DELAYED
    version: int = 0


@dataclass(frozen=True, slots=True)
class QueueChanges:
    purged: bool
    upserts: list[list[Any]]  # message rows (`message_row`): the message id first
    removed: list[str]


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    md5_of_body: str
    md5_of_message_attributes: str | None
    md5_of_message_system_attributes: str | None
    sequence_number: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt_handle: str
    body: str
    md5_of_body: str
    md5_of_message_attributes: str | None
    message_attributes: dict[str, MessageAttribute]
    attributes: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Event: `message` left `source_arn` after too many receives and must be put into `target_arn`."""

    message: Message
    source_arn: str
    target_arn: str


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    messages: list[Received]
    moved: list[DeadLetter]


@dataclass(slots=True)
class _Group:
    ids: deque[str] = field(default_factory=deque)
    batch: list[str] = field(default_factory=list)  # received together last time; any in flight locks the group


def _expired(handle: str) -> InvalidParameterValue:
    return InvalidParameterValue(
        f"Value {handle} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
    )


class Queue:
    """A standard or FIFO queue. Assumes `now` never goes backwards (an earlier `now` is treated as the latest seen)."""

    def __init__(
        self,
        name: str,
        arn: str,
        attributes: QueueAttributes | None = None,
        fifo: bool | None = None,
        *,
        created_at: int = 0,
        id_seed: str | None = None,
    ) -> None:
        if attributes is None:
            attributes = parse_queue_attributes(name, {"FifoQueue": "true"} if fifo else {})
        self.name, self.arn, self.attributes = name, arn, attributes
        self.fifo = attributes.fifo_queue if fifo is None else fifo
        self.created_at = self.last_modified = created_at
        self.id_seed = id_seed if id_seed is not None else f"{arn}@{created_at}"
        self.last_purge: int | None = None
        self._tag = queue_tag(arn)
        self._seq = 0
        self._now = created_at
        self._dedup: dict[tuple[str, str], tuple[str, str | None, int]] = {}
        self._dedup_order: deque[tuple[int, tuple[str, str]]] = deque()
        # What changed since the shell last persisted: message id → message (upsert) or None (deleted).
        self._changed: dict[str, Message | None] = {}
        self._purged = False
        self._reset()

    def _reset(self) -> None:
        self._messages: dict[str, Message] = {}
        self._waiting: list[tuple[int, int, str, int]] = []  # (visible_at, seq, id, version): delayed and in flight
        self._ready: deque[tuple[str, int]] = deque()  # standard queues: (id, version) visible now
        self._groups: dict[str, _Group] = {}
        self._ready_groups: dict[str, None] = {}  # FIFO: groups whose head is receivable, in arrival order
        self._retention: list[tuple[int, int, str]] = []  # (sent_at, seq, id)
        self._counts = {READY: 0, DELAYED: 0, INFLIGHT: 0}

    # --- bookkeeping -------------------------------------------------------------------------------------------------

    def _clock(self, now: int) -> int:
        now = self._now = max(now, self._now)
        limit = now - self.attributes.message_retention_period * 1000
        while self._retention and self._retention[0][0] <= limit:
            _, _, mid = heapq.heappop(self._retention)
            if (msg := self._messages.get(mid)) is not None and msg.sent_at <= limit:
                self._remove(msg)
        while self._waiting and self._waiting[0][0] <= now:
            _, _, mid, version = heapq.heappop(self._waiting)
            if (msg := self._messages.get(mid)) is not None and msg.version == version:
                self._make_ready(msg, msg.visible_at)
        return now

    def _set_state(self, msg: Message, state: str) -> None:
        self._changed[msg.message_id] = msg
        self._counts[msg.state] -= 1
        self._counts[state] += 1
        msg.state = state
        msg.version += 1

    def _make_ready(self, msg: Message, now: int) -> None:
        msg.visible_at = min(msg.visible_at, now)
        self._set_state(msg, READY)
        if msg.group_id is not None and self.fifo:
            self._refresh_group(msg.group_id)
        else:
            self._ready.append((msg.message_id, msg.version))
            if len(self._ready) > 2 * self._counts[READY] + 64:
                self._ready = deque(e for e in self._ready if self._valid_ready(*e))

    def _valid_ready(self, mid: str, version: int) -> bool:
        msg = self._messages.get(mid)
        return msg is not None and msg.version == version and msg.state == READY

    def _schedule(self, msg: Message, visible_at: int, state: str) -> None:
        msg.visible_at = visible_at
        self._set_state(msg, state)
        heapq.heappush(self._waiting, (visible_at, msg.seq, msg.message_id, msg.version))
        if len(self._waiting) > 2 * len(self._messages) + 64:
            self._waiting = [
                (m.visible_at, m.seq, m.message_id, m.version) for m in self._messages.values() if m.state != READY
            ]
            heapq.heapify(self._waiting)

    def _insert(self, msg: Message, now: int) -> None:
        self._messages[msg.message_id] = msg
        self._changed[msg.message_id] = msg
        self._counts[msg.state] += 1
        heapq.heappush(self._retention, (msg.sent_at, msg.seq, msg.message_id))
        if self.fifo and msg.group_id is not None:
            self._groups.setdefault(msg.group_id, _Group()).ids.append(msg.message_id)
        if msg.visible_at > now:
            self._schedule(msg, msg.visible_at, msg.state)
        else:
            self._make_ready(msg, now)

    def _remove(self, msg: Message, refresh: bool = True) -> None:
        del self._messages[msg.message_id]
        self._changed[msg.message_id] = None
        self._counts[msg.state] -= 1
        msg.version += 1
        if refresh and self.fifo and msg.group_id is not None:
            self._refresh_group(msg.group_id)
        if len(self._retention) > 2 * len(self._messages) + 64:
            self._retention = [(m.sent_at, m.seq, m.message_id) for m in self._messages.values()]
            heapq.heapify(self._retention)

    def _group_available(self, group: _Group) -> bool:
        while group.ids and group.ids[0] not in self._messages:
            group.ids.popleft()
        if not group.ids or self._messages[group.ids[0]].state != READY:
            return False
        return not any((m := self._messages.get(mid)) is not None and m.state == INFLIGHT for mid in group.batch)

    def _refresh_group(self, group_id: str) -> None:
        group = self._groups.get(group_id)
        if group is not None and self._group_available(group):
            self._ready_groups[group_id] = None
            return
        self._ready_groups.pop(group_id, None)
        if group is not None and not group.ids:
            del self._groups[group_id]

    # --- operations --------------------------------------------------------------------------------------------------

    def send(
        self,
        body: str,
        attributes: Mapping[str, MessageAttribute] | None = None,
        delay_seconds: int | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        *,
        now: int,
        system_attributes: Mapping[str, MessageAttribute] | None = None,
        sender_id: str = "",
        message_id: str | None = None,
    ) -> SendResult:
        """SendMessage. A FIFO duplicate within 5 minutes is accepted (`duplicate=True`) but not enqueued."""
        now = self._clock(now)
        attrs, sys_attrs = dict(attributes or {}), dict(system_attributes or {})
        if not body:
            raise MissingParameter("The request must contain the parameter MessageBody.")
        validate_text(body)
        size = len(body.encode("utf-8")) + validate_message_attributes(attrs)
        validate_message_attributes(sys_attrs, system=True)
        if size > self.attributes.maximum_message_size:
            raise InvalidParameterValue(
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{self.attributes.maximum_message_size} bytes."
            )
        delay = self._check_send_ids(delay_seconds, group_id, dedup_id)
        md5_attrs = md5_of_attributes(attrs) if attrs else None
        md5_sys = md5_of_attributes(sys_attrs) if sys_attrs else None
        key: tuple[str, str] | None = None
        if self.fifo:
            dedup_id = dedup_id or content_dedup_id(body)
            scope = self.attributes.deduplication_scope
            key = ((group_id or "") if scope == "messageGroup" else "", dedup_id)
            while self._dedup_order and self._dedup_order[0][0] <= now:
                self._dedup.pop(self._dedup_order.popleft()[1], None)
            if (seen := self._dedup.get(key)) is not None and seen[2] > now:
                return SendResult(seen[0], md5_of_body(body), md5_attrs, md5_sys, seen[1], duplicate=True)
        self._seq += 1
        msg = Message(
            message_id=message_id or derive_message_id(self.id_seed, self._seq),
            body=body,
            attributes=attrs,
            system_attributes=sys_attrs,
            sent_at=now,
            visible_at=now + delay * 1000,
            seq=self._seq,
            sender_id=sender_id,
            group_id=group_id,
            dedup_id=dedup_id,
            sequence_number=str(_SEQUENCE_BASE + self._seq) if self.fifo else None,
        )
        if key is not None:
            self._dedup[key] = (msg.message_id, msg.sequence_number, now + DEDUP_WINDOW_MS)
            self._dedup_order.append((now + DEDUP_WINDOW_MS, key))
        self._insert(msg, now)
        return SendResult(msg.message_id, md5_of_body(body), md5_attrs, md5_sys, msg.sequence_number)

    def _check_send_ids(self, delay_seconds: int | None, group_id: str | None, dedup_id: str | None) -> int:
        if self.fifo:
            if delay_seconds:  # only a non-zero per-message delay is refused; 0 is accepted as "no delay"
                raise InvalidParameterValue(
                    f"Value {delay_seconds} for parameter DelaySeconds is invalid. Reason: The request include "
                    "parameter that is not valid for this queue type."
                )
            if group_id is None:
                raise MissingParameter("The request must contain the parameter MessageGroupId.")
            validate_group_or_dedup_id("MessageGroupId", group_id)
            if dedup_id is not None:
                validate_group_or_dedup_id("MessageDeduplicationId", dedup_id)
            elif not self.attributes.content_based_deduplication:
                raise InvalidParameterValue(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId "
                    "provided explicitly"
                )
            return self.attributes.delay_seconds
        if dedup_id is not None:
            raise InvalidParameterValue(
                f"Value {dedup_id} for parameter MessageDeduplicationId is invalid. Reason: The request include "
                "parameter that is not valid for this queue type."
            )
        if group_id is not None:
            validate_group_or_dedup_id("MessageGroupId", group_id)
        delay = self.attributes.delay_seconds if delay_seconds is None else delay_seconds
        if not 0 <= delay <= 900:
            raise InvalidParameterValue(
                f"Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
            )
        return delay

    def receive(
        self,
        max_messages: int = 1,
        visibility_timeout: int | None = None,
        *,
        now: int,
        attribute_names: Iterable[str] = (),
        message_attribute_names: Iterable[str] = (),
    ) -> ReceiveResult:
        """ReceiveMessage (one short poll over all messages). Messages past maxReceiveCount come back in `moved`."""
        now = self._clock(now)
        if not 1 <= max_messages <= MAX_BATCH_ENTRIES:
            raise InvalidParameterValue(
                f"Value {max_messages} for parameter MaxNumberOfMessages is invalid. "
                "Reason: Must be between 1 and 10, if provided."
            )
        timeout = self.attributes.visibility_timeout if visibility_timeout is None else visibility_timeout
        if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT:
            raise InvalidParameterValue(
                f"Value {timeout} for parameter VisibilityTimeout is invalid. "
                "Reason: Must be between 0 and 43200, if provided."
            )
        names, msg_names = set(attribute_names), list(message_attribute_names)
        validate_attribute_names(names, queue=False)
        taken: list[Message] = []
        moved: list[DeadLetter] = []
        if self.fifo:
            self._take_fifo(max_messages, taken, moved)
        else:
            while len(taken) < max_messages and self._ready:
                mid, version = self._ready.popleft()
                if self._valid_ready(mid, version):
                    self._take(self._messages[mid], taken, moved)
        out = [self._deliver(msg, timeout, now, names, msg_names) for msg in taken]
        for gid in {m.group_id for m in taken} | {d.message.group_id for d in moved}:
            if self.fifo and gid is not None:
                self._refresh_group(gid)
        return ReceiveResult(out, moved)

    def _take(self, msg: Message, taken: list[Message], moved: list[DeadLetter]) -> None:
        policy = self.attributes.redrive_policy
        if policy is not None and msg.receive_count >= policy.max_receive_count:
            self._remove(msg, refresh=False)
            moved.append(DeadLetter(msg, self.arn, policy.dead_letter_target_arn))
        else:
            taken.append(msg)

    def _take_fifo(self, limit: int, taken: list[Message], moved: list[DeadLetter]) -> None:
        while len(taken) < limit and self._ready_groups:
            gid = next(iter(self._ready_groups))
            del self._ready_groups[gid]
            group = self._groups.get(gid)
            if group is None or not self._group_available(group):
                continue
            start = len(taken)
            for mid in group.ids:
                msg = self._messages.get(mid)
                if len(taken) >= limit or (msg is not None and msg.state != READY):
                    break
                if msg is not None:
                    self._take(msg, taken, moved)
            group.batch = [m.message_id for m in taken[start:]]

    def _deliver(self, msg: Message, timeout: int, now: int, names: set[str], msg_names: list[str]) -> Received:
        msg.receive_count += 1
        msg.received_at = now
        if msg.first_received_at is None:
            msg.first_received_at = now
        self._schedule(msg, now + timeout * 1000, INFLIGHT)
        handle = ReceiptHandle(self._tag, msg.message_id, msg.receive_count, now).encode()
        system = {
            "SenderId": msg.sender_id,
            "SentTimestamp": str(msg.sent_at),
            "ApproximateReceiveCount": str(msg.receive_count),
            "ApproximateFirstReceiveTimestamp": str(msg.first_received_at),
        }
        extra = {
            "SequenceNumber": msg.sequence_number,
            "MessageDeduplicationId": msg.dedup_id,
            "MessageGroupId": msg.group_id,
            "DeadLetterQueueSourceArn": msg.source_arn,
        }
        system.update({k: v for k, v in extra.items() if v is not None})
        if (trace := msg.system_attributes.get("AWSTraceHeader")) is not None and trace.string_value:
            system["AWSTraceHeader"] = trace.string_value
        if "All" not in names:
            system = {k: v for k, v in system.items() if k in names}
        attrs = {k: v for k, v in msg.attributes.items() if _wanted(k, msg_names)}
        md5_attrs = md5_of_attributes(attrs) if attrs else None
        return Received(msg.message_id, handle, msg.body, md5_of_body(msg.body), md5_attrs, attrs, system)

    def _lookup(self, receipt_handle: str) -> tuple[ReceiptHandle, Message | None]:
        handle = ReceiptHandle.decode(receipt_handle, self._tag)
        msg = self._messages.get(handle.message_id)
        if msg is not None and handle.receive_count > msg.receive_count:
            raise ReceiptHandleIsInvalid(f'The input receipt handle "{receipt_handle}" is not a valid receipt handle.')
        return handle, msg

    def delete(self, receipt_handle: str, *, now: int) -> DeleteOutcome:
        """DeleteMessage. Standard: a handle from an older receive succeeds without deleting (AWS docs) → "stale";
        FIFO: an old or timed-out handle is rejected as expired. A message already gone → "gone" (idempotent)."""
        self._clock(now)
        handle, msg = self._lookup(receipt_handle)
        if msg is None:
            return "gone"
        if handle.receive_count != msg.receive_count or (self.fifo and msg.state != INFLIGHT):
            if self.fifo:
                raise _expired(receipt_handle)
            return "stale"
        self._remove(msg)
        return "deleted"

    def change_visibility(self, receipt_handle: str, timeout: int, *, now: int) -> None:
        """ChangeMessageVisibility: restart the timer from `now`; 0 makes the message visible at once."""
        now = self._clock(now)
        if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT:
            raise InvalidParameterValue(
                f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )
        handle, msg = self._lookup(receipt_handle)
        if msg is None or handle.receive_count != msg.receive_count:
            raise _expired(receipt_handle)
        if msg.state != INFLIGHT:
            raise MessageNotInflight("Message does not exist or is not available for visibility timeout change.")
        if now - (msg.received_at or now) + timeout * 1000 > MAX_VISIBILITY_TIMEOUT * 1000:
            raise InvalidParameterValue(
                f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the "
                f"message is beyond the limit [{MAX_VISIBILITY_TIMEOUT} seconds]"
            )
        if timeout == 0:
            self._make_ready(msg, now)
        else:
            self._schedule(msg, now + timeout * 1000, INFLIGHT)

    def accept_dead_letter(self, letter: DeadLetter, *, now: int) -> None:
        """Put a message moved from a source queue; its enqueue time (retention clock) is kept."""
        now = self._clock(now)
        self._seq += 1
        src = letter.message
        msg = Message(
            message_id=src.message_id,
            body=src.body,
            attributes=src.attributes,
            system_attributes=src.system_attributes,
            sent_at=src.sent_at,
            visible_at=now,
            seq=self._seq,
            sender_id=src.sender_id,
            group_id=src.group_id,
            dedup_id=src.dedup_id,
            sequence_number=str(_SEQUENCE_BASE + self._seq) if self.fifo else None,
            source_arn=letter.source_arn,
        )
        self._insert(msg, now)

    def take_available(self, limit: int, *, now: int) -> list[Message]:
        """Remove and return up to `limit` visible messages, oldest first (a message move task's read)."""
        now = self._clock(now)
        taken = sorted((m for m in self._messages.values() if m.state == READY), key=lambda m: m.seq)[:limit]
        for msg in taken:
            self._remove(msg)
        return taken

    def redrive_in(self, src: Message, *, now: int) -> str:
        """Enqueue a message moved here by a move task: a new message (new id, enqueue time, retention), same body
        and attributes, as AWS treats redriven messages."""
        now = self._clock(now)
        self._seq += 1
        group = (src.group_id or src.message_id) if self.fifo else None
        msg = Message(
            message_id=derive_message_id(self.id_seed, self._seq),
            body=src.body,
            attributes=src.attributes,
            system_attributes=src.system_attributes,
            sent_at=now,
            visible_at=now,
            seq=self._seq,
            sender_id=src.sender_id,
            group_id=group,
            dedup_id=(src.dedup_id or src.message_id) if self.fifo else None,
            sequence_number=str(_SEQUENCE_BASE + self._seq) if self.fifo else None,
        )
        self._insert(msg, now)
        return msg.message_id

    def purge(self, *, now: int) -> int:
        """PurgeQueue: drop every message (deduplication history is kept); at most once per 60 s."""
        now = self._clock(now)
        if self.last_purge is not None and now - self.last_purge < PURGE_INTERVAL_MS:
            raise PurgeQueueInProgress(f"Only one PurgeQueue operation on {self.name} is allowed every 60 seconds.")
        self.last_purge = now
        dropped = len(self._messages)
        self._reset()
        self._changed.clear()
        self._purged = True
        return dropped

    def counts(self, *, now: int) -> dict[str, int]:
        self._clock(now)
        return {
            "ApproximateNumberOfMessages": self._counts[READY],
            "ApproximateNumberOfMessagesNotVisible": self._counts[INFLIGHT],
            "ApproximateNumberOfMessagesDelayed": self._counts[DELAYED],
        }

    def get_attributes(self, names: Iterable[str] = ("All",), *, now: int) -> dict[str, str]:
        """GetQueueAttributes (timestamps in epoch seconds, as AWS returns them)."""
        wanted = set(names)
        validate_attribute_names(wanted, queue=True)
        out = {
            **self.attributes.to_wire(),
            **{k: str(v) for k, v in self.counts(now=now).items()},
            "QueueArn": self.arn,
            "CreatedTimestamp": str(self.created_at // 1000),
            "LastModifiedTimestamp": str(self.last_modified // 1000),
        }
        return out if "All" in wanted else {k: v for k, v in out.items() if k in wanted}

    def set_attributes(self, attrs: Mapping[str, str], *, now: int) -> None:
        self.attributes = self.attributes.updated(attrs)
        self.last_modified = self._clock(now)

    def next_visible_at(self, *, now: int) -> int | None:
        """When a long poll should look again: `now` if something is receivable, else no later than the next change."""
        now = self._clock(now)
        if self._ready_groups if self.fifo else self._counts[READY]:
            return now
        while self._waiting:
            visible_at, _, mid, version = self._waiting[0]
            if (msg := self._messages.get(mid)) is not None and msg.version == version:
                return visible_at
            heapq.heappop(self._waiting)
        return None

    # --- persistence -------------------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-compatible snapshot of everything but the messages (see `message_state` and `drain_changes`)."""
        return {
            "name": self.name,
            "arn": self.arn,
            "fifo": self.fifo,
            "attributes": self.attributes.to_wire(),
            "created_at": self.created_at,
            "last_modified": self.last_modified,
            "last_purge": self.last_purge,
            "id_seed": self.id_seed,
            "seq": self._seq,
            "now": self._now,
            "dedup": [[list(key), *self._dedup[key]] for _, key in self._dedup_order if key in self._dedup],
        }

    def messages_state(self) -> list[list[Any]]:
        return [message_row(m) for m in sorted(self._messages.values(), key=lambda m: m.seq)]

    def drain_changes(self) -> QueueChanges:
        """The messages added, changed and removed since the last call, for the shell to persist as rows."""
        changed, self._changed = self._changed, {}
        purged, self._purged = self._purged, False
        upserts = [message_row(m) for m in changed.values() if m is not None]
        removed = [mid for mid, m in changed.items() if m is None]
        return QueueChanges(purged, upserts, removed)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], messages: Iterable[Mapping[str, Any] | list[Any]] = ()) -> Queue:
        attrs = parse_queue_attributes(state["name"], state["attributes"])
        queue = cls(
            state["name"], state["arn"], attrs, state["fifo"], created_at=state["created_at"], id_seed=state["id_seed"]
        )
        queue.last_modified, queue.last_purge = state["last_modified"], state["last_purge"]
        queue._seq, queue._now = state["seq"], state["now"]
        for key, mid, seqnum, expires in state["dedup"]:
            queue._dedup[(key[0], key[1])] = (mid, seqnum, expires)
            queue._dedup_order.append((expires, (key[0], key[1])))
        for msg in sorted(map(_message_from_json, [*state.get("messages", ()), *messages]), key=lambda m: m.seq):
            queue._insert(msg, queue._now)
            if msg.state == INFLIGHT and msg.group_id is not None and queue.fifo:
                queue._groups[msg.group_id].batch.append(msg.message_id)
        for gid in list(queue._groups):
            queue._refresh_group(gid)
        if not state.get("messages"):
            queue._changed.clear()  # loaded from rows: nothing to write back (a legacy snapshot is rewritten as rows)
        return queue


def _wanted(name: str, patterns: list[str]) -> bool:
    return any(p in ("All", ".*") or p == name or (p.endswith(".*") and name.startswith(p[:-1])) for p in patterns)


def _attr_to_json(attr: MessageAttribute) -> dict[str, str]:
    if attr.binary_value is not None:
        return {"DataType": attr.data_type, "BinaryValue": base64.b64encode(attr.binary_value).decode()}
    return {"DataType": attr.data_type, "StringValue": attr.string_value or ""}


def _attr_from_json(raw: Mapping[str, str]) -> MessageAttribute:
    if "BinaryValue" in raw:
        return MessageAttribute(raw["DataType"], binary_value=base64.b64decode(raw["BinaryValue"]))
    return MessageAttribute(raw["DataType"], string_value=raw["StringValue"])


_MESSAGE_FIELDS = tuple(f.name for f in fields(Message))  # computed once: fields() is slow per message
_ATTRIBUTES = _MESSAGE_FIELDS.index("attributes")
_SYSTEM_ATTRIBUTES = _MESSAGE_FIELDS.index("system_attributes")


def message_row(msg: Message) -> list[Any]:
    """A message as a JSON-compatible list in field order (message id first): half the bytes of an object and
    quicker to encode, for the one row per message the shell stores."""
    row = [getattr(msg, name) for name in _MESSAGE_FIELDS]
    row[_ATTRIBUTES] = {k: _attr_to_json(v) for k, v in msg.attributes.items()} if msg.attributes else {}
    row[_SYSTEM_ATTRIBUTES] = (
        {k: _attr_to_json(v) for k, v in msg.system_attributes.items()} if msg.system_attributes else {}
    )
    return row


def _message_from_json(raw: Mapping[str, Any] | list[Any]) -> Message:
    """A message from its row (`message_row`) or from the object form earlier versions stored."""
    values = dict(zip(_MESSAGE_FIELDS, raw, strict=True)) if isinstance(raw, list) else dict(raw)
    values["attributes"] = {k: _attr_from_json(v) for k, v in values["attributes"].items()}
    values["system_attributes"] = {k: _attr_from_json(v) for k, v in values["system_attributes"].items()}
    return Message(**values)
