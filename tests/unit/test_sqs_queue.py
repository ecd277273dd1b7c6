"""The pure SQS queue model: visibility, delay, FIFO order and dedup, redrive, retention, purge, validation."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sinks.sqs.attributes import (
    MessageAttribute,
    parse_queue_attributes,
    validate_batch_ids,
    validate_message_attributes,
)
from gateway.sinks.sqs.exceptions import (
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidMessageContents,
    InvalidParameterValue,
    MessageNotInflight,
    MissingParameter,
    PurgeQueueInProgress,
    QueueDoesNotExist,
    ReceiptHandleIsInvalid,
)
from gateway.sinks.sqs.queue import DeadLetter, Queue

T0 = 1_700_000_000_000
ARN = "arn:aws:sqs:us-east-1:123456789012:"
DLQ_ARN = ARN + "dlq"


def std(**attrs: str) -> Queue:
    return Queue("q", ARN + "q", parse_queue_attributes("q", attrs), created_at=T0)


def fifo(**attrs: str) -> Queue:
    return Queue(
        "q.fifo", ARN + "q.fifo", parse_queue_attributes("q.fifo", {"FifoQueue": "true", **attrs}), created_at=T0
    )


def bodies(q: Queue, now: int, n: int = 10, vt: int | None = None) -> list[str]:
    return [m.body for m in q.receive(n, vt, now=now).messages]


# --- errors ----------


def test_error_codes_carry_query_codes() -> None:
    err = QueueDoesNotExist("The specified queue does not exist.")
    assert (err.code, err.query_code, err.http_status) == (
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        400,
    )
    assert PurgeQueueInProgress.http_status == 403


# --- visibility ----------


def test_visibility_timeout_hides_then_reappears() -> None:
    q = std(VisibilityTimeout="30")
    q.send("a", now=T0)
    first = q.receive(now=T0).messages
    assert [m.body for m in first] == ["a"]
    assert q.receive(now=T0 + 29_999).messages == []
    again = q.receive(now=T0 + 30_000, attribute_names=["All"]).messages
    assert [m.body for m in again] == ["a"]
    assert again[0].receipt_handle != first[0].receipt_handle
    assert again[0].attributes["ApproximateReceiveCount"] == "2"
    assert again[0].attributes["ApproximateFirstReceiveTimestamp"] == str(T0)
    assert again[0].attributes["SentTimestamp"] == str(T0)


def test_change_visibility_restarts_timer_and_zero_releases() -> None:
    q = std()
    q.send("a", now=T0)
    (m,) = q.receive(now=T0, visibility_timeout=10).messages
    q.change_visibility(m.receipt_handle, 100, now=T0 + 5_000)
    assert bodies(q, T0 + 104_999) == []
    (m2,) = q.receive(now=T0 + 105_000).messages
    q.change_visibility(m2.receipt_handle, 0, now=T0 + 106_000)
    assert bodies(q, T0 + 106_000) == ["a"]


def test_change_visibility_errors() -> None:
    q = std()
    q.send("a", now=T0)
    (m,) = q.receive(now=T0, visibility_timeout=10).messages
    with pytest.raises(InvalidParameterValue):
        q.change_visibility(m.receipt_handle, 43_201, now=T0)
    with pytest.raises(ReceiptHandleIsInvalid):
        q.change_visibility("garbage", 5, now=T0)
    with pytest.raises(MessageNotInflight):
        q.change_visibility(m.receipt_handle, 5, now=T0 + 10_000)
    (m2,) = q.receive(now=T0 + 10_000, visibility_timeout=43_200).messages
    with pytest.raises(InvalidParameterValue, match="expired"):
        q.change_visibility(m.receipt_handle, 5, now=T0 + 10_000)
    with pytest.raises(InvalidParameterValue, match="beyond the limit"):
        q.change_visibility(m2.receipt_handle, 43_200, now=T0 + 11_000)  # 12 h counts from the receive


def test_delete_with_stale_handle_after_rereceive_does_not_delete_standard() -> None:
    q = std()
    q.send("a", now=T0)
    (old,) = q.receive(now=T0, visibility_timeout=1).messages
    (new,) = q.receive(now=T0 + 1_000, visibility_timeout=1).messages
    assert q.delete(old.receipt_handle, now=T0 + 1_500) == "stale"
    assert q.counts(now=T0 + 1_500)["ApproximateNumberOfMessagesNotVisible"] == 1
    assert q.delete(new.receipt_handle, now=T0 + 1_500) == "deleted"
    assert q.delete(new.receipt_handle, now=T0 + 1_500) == "gone"
    assert bodies(q, T0 + 10_000) == []


def test_delete_after_timeout_standard_succeeds_fifo_expired() -> None:
    q = std()
    q.send("a", now=T0)
    (m,) = q.receive(now=T0, visibility_timeout=1).messages
    assert q.delete(m.receipt_handle, now=T0 + 5_000) == "deleted"
    f = fifo(ContentBasedDeduplication="true")
    f.send("a", group_id="g", now=T0)
    (m,) = f.receive(now=T0, visibility_timeout=1).messages
    with pytest.raises(InvalidParameterValue, match="expired"):
        f.delete(m.receipt_handle, now=T0 + 5_000)


def test_handle_from_other_queue_is_invalid() -> None:
    a, b = std(), fifo(ContentBasedDeduplication="true")
    a.send("x", now=T0)
    (m,) = a.receive(now=T0).messages
    with pytest.raises(ReceiptHandleIsInvalid):
        b.delete(m.receipt_handle, now=T0)


# --- delay, counts, long-poll wake-up ----------


def test_delay_seconds_and_counts() -> None:
    q = std(DelaySeconds="5")
    q.send("queue-delay", now=T0)
    q.send("no-delay", delay_seconds=0, now=T0)
    q.send("msg-delay", delay_seconds=10, now=T0)
    assert q.counts(now=T0) == {
        "ApproximateNumberOfMessages": 1,
        "ApproximateNumberOfMessagesNotVisible": 0,
        "ApproximateNumberOfMessagesDelayed": 2,
    }
    assert bodies(q, T0) == ["no-delay"]
    assert q.next_visible_at(now=T0) == T0 + 5_000
    assert bodies(q, T0 + 5_000) == ["queue-delay"]
    assert q.counts(now=T0 + 5_000)["ApproximateNumberOfMessagesNotVisible"] == 2
    assert q.next_visible_at(now=T0 + 5_000) == T0 + 10_000
    assert bodies(q, T0 + 10_000) == ["msg-delay"]
    with pytest.raises(InvalidParameterValue):
        q.send("x", delay_seconds=901, now=T0)


# --- FIFO ----------


def test_fifo_order_per_group_and_group_lock() -> None:
    q = fifo(ContentBasedDeduplication="true")
    for body, group in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"), ("b2", "b")]:
        q.send(body, group_id=group, now=T0)
    first = q.receive(2, 30, now=T0).messages
    assert [m.body for m in first] == ["a1", "a2"]
    assert bodies(q, T0, 10, 30) == ["b1", "b2"]  # group a is locked while a1 and a2 are in flight
    assert bodies(q, T0) == []
    q.delete(first[0].receipt_handle, now=T0 + 1)
    assert bodies(q, T0 + 1) == []  # a2 still in flight
    q.delete(first[1].receipt_handle, now=T0 + 1)
    assert bodies(q, T0 + 2, 10, 30) == ["a3"]
    assert bodies(q, T0 + 30_000, 10) == ["b1", "b2"]


def test_fifo_redelivers_same_order_after_timeout() -> None:
    q = fifo(ContentBasedDeduplication="true")
    for i in range(3):
        q.send(f"m{i}", group_id="g", now=T0)
    assert bodies(q, T0, 1, 5) == ["m0"]
    assert bodies(q, T0 + 1_000) == []
    assert bodies(q, T0 + 5_000, 10, 5) == ["m0", "m1", "m2"]
    result = q.receive(10, 5, now=T0 + 10_000, attribute_names=["MessageGroupId", "SequenceNumber"])
    assert [m.attributes["MessageGroupId"] for m in result.messages] == ["g"] * 3
    seqs = [int(m.attributes["SequenceNumber"]) for m in result.messages]
    assert seqs == sorted(seqs) and len(str(seqs[0])) == 20


def test_fifo_dedup_window_is_exactly_five_minutes() -> None:
    q = fifo()
    r1 = q.send("a", group_id="g", dedup_id="d", now=T0)
    r2 = q.send("b", group_id="g", dedup_id="d", now=T0 + 299_999)
    assert r2.duplicate and r2.message_id == r1.message_id
    r3 = q.send("c", group_id="g", dedup_id="d", now=T0 + 300_000)
    assert not r3.duplicate and r3.message_id != r1.message_id
    assert bodies(q, T0 + 300_000, 10) == ["a", "c"]


def test_content_based_dedup_and_scope() -> None:
    q = fifo(ContentBasedDeduplication="true")
    assert not q.send("same", group_id="g1", now=T0).duplicate
    assert q.send("same", group_id="g2", now=T0).duplicate
    assert not q.send("other", group_id="g1", now=T0).duplicate
    scoped = fifo(ContentBasedDeduplication="true", DeduplicationScope="messageGroup")
    scoped.send("same", group_id="g1", now=T0)
    assert not scoped.send("same", group_id="g2", now=T0).duplicate
    plain = fifo()
    with pytest.raises(InvalidParameterValue, match="ContentBasedDeduplication"):
        plain.send("x", group_id="g", now=T0)
    with pytest.raises(MissingParameter):
        plain.send("x", dedup_id="d", now=T0)
    with pytest.raises(InvalidParameterValue):
        plain.send("x", delay_seconds=1, group_id="g", dedup_id="d", now=T0)
    with pytest.raises(InvalidParameterValue):
        std().send("x", dedup_id="d", now=T0)


# --- redrive, retention, purge ----------


def test_redrive_after_max_receive_count() -> None:
    policy = json.dumps({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 2})
    q = std(RedrivePolicy=policy)
    dlq = Queue("dlq", DLQ_ARN, created_at=T0)
    q.send("poison", now=T0)
    assert bodies(q, T0, 1, 1) == ["poison"]
    assert bodies(q, T0 + 1_000, 1, 1) == ["poison"]
    third = q.receive(1, 1, now=T0 + 2_000)
    assert third.messages == []
    (letter,) = third.moved
    assert isinstance(letter, DeadLetter) and letter.target_arn == DLQ_ARN and letter.source_arn == ARN + "q"
    assert q.counts(now=T0 + 2_000) == dict.fromkeys(q.counts(now=T0 + 2_000), 0)
    dlq.accept_dead_letter(letter, now=T0 + 2_000)
    (m,) = dlq.receive(now=T0 + 2_000, attribute_names=["All"]).messages
    assert m.message_id == letter.message.message_id
    assert m.attributes["SentTimestamp"] == str(T0)  # enqueue time is kept
    assert m.attributes["DeadLetterQueueSourceArn"] == ARN + "q"


def test_retention_expiry() -> None:
    q = std(MessageRetentionPeriod="60")
    q.send("old", now=T0)
    q.send("new", now=T0 + 30_000)
    (m,) = q.receive(now=T0 + 59_999, visibility_timeout=0).messages
    assert m.body == "old"
    assert bodies(q, T0 + 60_000) == ["new"]
    assert q.counts(now=T0 + 90_000)["ApproximateNumberOfMessagesNotVisible"] == 0
    assert q.delete(m.receipt_handle, now=T0 + 90_000) == "gone"


def test_purge_once_per_minute() -> None:
    q = std()
    for i in range(5):
        q.send(str(i), now=T0)
    assert q.purge(now=T0) == 5
    assert bodies(q, T0) == []
    with pytest.raises(PurgeQueueInProgress):
        q.purge(now=T0 + 59_999)
    q.send("after", now=T0 + 1)
    assert q.purge(now=T0 + 60_000) == 1


# --- validation ----------


@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"DelaySeconds": "901"}, InvalidAttributeValue),
        ({"DelaySeconds": "x"}, InvalidAttributeValue),
        ({"MaximumMessageSize": "1023"}, InvalidAttributeValue),
        ({"MaximumMessageSize": "1048577"}, InvalidAttributeValue),
        ({"MessageRetentionPeriod": "59"}, InvalidAttributeValue),
        ({"MessageRetentionPeriod": "1209601"}, InvalidAttributeValue),
        ({"ReceiveMessageWaitTimeSeconds": "21"}, InvalidAttributeValue),
        ({"VisibilityTimeout": "43201"}, InvalidAttributeValue),
        ({"RedrivePolicy": "not json"}, InvalidAttributeValue),
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": DLQ_ARN})}, InvalidAttributeValue),
        ({"RedrivePolicy": json.dumps({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 0})}, InvalidAttributeValue),
        (
            {"RedrivePolicy": json.dumps({"deadLetterTargetArn": DLQ_ARN + ".fifo", "maxReceiveCount": 1})},
            InvalidAttributeValue,
        ),
        ({"ContentBasedDeduplication": "true"}, InvalidAttributeName),
        ({"Bogus": "1"}, InvalidAttributeName),
        ({"QueueArn": "x"}, InvalidAttributeName),
    ],
)
def test_queue_attribute_errors(attrs: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_queue_attributes("q", attrs)


def test_queue_attributes_round_trip_and_names() -> None:
    attrs = parse_queue_attributes("q.fifo", {"FifoQueue": "true", "DeduplicationScope": "messageGroup"})
    wire = attrs.to_wire()
    assert wire["FifoQueue"] == "true" and wire["VisibilityTimeout"] == "30" and wire["MaximumMessageSize"] == "1048576"
    assert parse_queue_attributes("q.fifo", wire) == attrs
    with pytest.raises(InvalidParameterValue):
        parse_queue_attributes("q.fifo", {})
    with pytest.raises(InvalidParameterValue):
        parse_queue_attributes("bad name", {})
    with pytest.raises(InvalidAttributeValue):
        attrs.updated({"FifoQueue": "false"})
    q = std()
    q.set_attributes({"VisibilityTimeout": "5"}, now=T0 + 1_000)
    got = q.get_attributes(["VisibilityTimeout", "ApproximateNumberOfMessages"], now=T0 + 1_000)
    assert got == {"VisibilityTimeout": "5", "ApproximateNumberOfMessages": "0"}


@pytest.mark.parametrize(
    "attrs",
    [
        {f"a{i}": MessageAttribute("String", string_value="v") for i in range(11)},
        {"AWS.x": MessageAttribute("String", string_value="v")},
        {"a..b": MessageAttribute("String", string_value="v")},
        {"a": MessageAttribute("Text", string_value="v")},
        {"a": MessageAttribute("Number", string_value="one")},
        {"a": MessageAttribute("String", string_value="")},
        {"a": MessageAttribute("Binary", string_value="v")},
    ],
)
def test_message_attribute_errors(attrs: dict[str, MessageAttribute]) -> None:
    with pytest.raises(InvalidParameterValue):
        validate_message_attributes(attrs)


def test_message_size_and_contents() -> None:
    q = std(MaximumMessageSize="1024")
    q.send("x" * 1024, now=T0)
    with pytest.raises(InvalidParameterValue, match="shorter than 1024"):
        q.send("x" * 1020, {"ab": MessageAttribute("String", string_value="cd")}, now=T0)
    with pytest.raises(InvalidMessageContents):
        q.send("bad \x00", now=T0)
    with pytest.raises(MissingParameter):
        q.send("", now=T0)
    with pytest.raises(InvalidParameterValue):
        q.receive(11, now=T0)


def test_received_attributes_filter_and_md5() -> None:
    q = std()
    attrs = {
        "City": MessageAttribute("String", string_value="Any City"),
        "x.y": MessageAttribute("Number", string_value="1"),
    }
    sent = q.send("b", attrs, now=T0)
    (m,) = q.receive(now=T0, message_attribute_names=["City"]).messages
    assert list(m.message_attributes) == ["City"]
    assert m.md5_of_message_attributes == "0c32cb5c844c01fbd5b6b434b52cf670"
    assert m.attributes == {}
    q.change_visibility(m.receipt_handle, 0, now=T0)
    (m,) = q.receive(now=T0, message_attribute_names=["All"]).messages
    assert m.md5_of_message_attributes == sent.md5_of_message_attributes


def test_batch_id_validation() -> None:
    from gateway.sinks.sqs import attributes as a

    for ids, err in [
        ([], a.EmptyBatchRequest),
        ([str(i) for i in range(11)], a.TooManyEntriesInBatchRequest),
        (["bad id"], a.InvalidBatchEntryId),
        (["a", "a"], a.BatchEntryIdsNotDistinct),
    ]:
        with pytest.raises(err):
            validate_batch_ids(ids)
    validate_batch_ids(["a", "b-1", "c_2"])


def test_state_round_trip() -> None:
    q = fifo(ContentBasedDeduplication="true")
    for i in range(4):
        q.send(f"m{i}", {"n": MessageAttribute("Binary", binary_value=bytes([i + 1]))}, group_id=f"g{i % 2}", now=T0)
    (m,) = q.receive(1, 30, now=T0).messages
    state = json.loads(json.dumps(q.to_state()))
    r = Queue.from_state(state, json.loads(json.dumps(q.messages_state())))
    assert r.counts(now=T0) == q.counts(now=T0)
    assert r.send("m0", group_id="g0", now=T0 + 1).duplicate
    r.delete(m.receipt_handle, now=T0 + 1)
    assert sorted(bodies(r, T0 + 1)) == ["m1", "m2", "m3"]


# --- properties ----------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "receive", "delete", "change", "advance", "purge"]),
        st.integers(0, 10),
        st.integers(0, 40),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, is_fifo=st.booleans(), redrive=st.booleans())
def test_no_double_delivery_and_nothing_lost(ops: list[tuple[str, int, int]], is_fifo: bool, redrive: bool) -> None:
    extra = {"MessageRetentionPeriod": "600"}
    if redrive:
        target = DLQ_ARN + (".fifo" if is_fifo else "")
        extra["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": 3})
    q = fifo(ContentBasedDeduplication="true", **extra) if is_fifo else std(**extra)
    now = T0
    sent: dict[str, int] = {}  # message id -> sent at
    gone: set[str] = set()  # deleted, expired, purged or moved to the DLQ
    holders: dict[str, tuple[str, int]] = {}  # message id -> (latest handle, invisible until)
    counter = 0
    for op, a, b in ops:
        if op == "send":
            counter += 1
            r = q.send(f"m{counter}", group_id=f"g{a % 3}" if is_fifo else None, now=now)
            sent[r.message_id] = now
        elif op == "receive":
            vt = b % 8  # short timeouts and steps so expiries and receives collide often
            result = q.receive(a % 10 + 1, vt, now=now)
            for m in result.messages:
                held = holders.get(m.message_id)
                assert held is None or held[1] <= now, "delivered while another receiver still holds it"
                assert m.message_id not in gone
                holders[m.message_id] = (m.receipt_handle, now + vt * 1000)
            for d in result.moved:
                gone.add(d.message.message_id)
        elif op in ("delete", "change") and holders:
            mid = sorted(holders)[a % len(holders)]
            handle, until = holders[mid]
            try:
                if op == "delete":
                    outcome = q.delete(handle, now=now)
                    assert outcome != "stale"  # we always hold the latest handle
                    if outcome == "deleted":
                        gone.add(mid)
                        del holders[mid]
                else:
                    q.change_visibility(handle, b % 8, now=now)
                    holders[mid] = (handle, now + b % 8 * 1000)
            except (InvalidParameterValue, MessageNotInflight):
                # Only a handle whose visibility ran out, or a message that is gone, may be refused.
                assert until <= now or mid in gone or now - sent[mid] >= 600_000
        elif op == "advance":
            now += (b % 5) * 1000 if a else b * 20_000  # occasionally far enough for retention to expire
        elif op == "purge":
            try:
                q.purge(now=now)
                gone.update(sent)
            except PurgeQueueInProgress:
                pass
    # Drain: far enough ahead for every visibility timeout, but within retention of recent sends.
    now += 45_000
    for mid, at in sent.items():
        if at + 600_000 <= now:
            gone.add(mid)
    seen: set[str] = set()
    for _ in range(len(sent) * 4 + 4):
        result = q.receive(10, 30, now=now)
        for d in result.moved:
            gone.add(d.message.message_id)
        for m in result.messages:
            seen.add(m.message_id)
            q.delete(m.receipt_handle, now=now)
        if not result.messages and not result.moved:
            break
    assert set(sent) <= gone | seen, "a message was lost"
    assert not (seen & gone)


def _apply(rows: dict[str, list[object]], q: Queue) -> None:
    changes = q.drain_changes()
    if changes.purged:
        rows.clear()
    for raw in changes.upserts:
        rows[str(raw[0])] = raw
    for mid in changes.removed:
        rows.pop(mid, None)


@settings(max_examples=100, deadline=None)
@given(ops=OPS, is_fifo=st.booleans())
def test_incremental_rows_mirror_the_queue(ops: list[tuple[str, int, int]], is_fifo: bool) -> None:
    """Persisting only `drain_changes()` after each operation keeps a row store equal to a full snapshot, and a queue
    rebuilt from those rows behaves the same."""
    q = (
        fifo(ContentBasedDeduplication="true", MessageRetentionPeriod="600")
        if is_fifo
        else std(MessageRetentionPeriod="600")
    )
    rows: dict[str, list[object]] = {}
    handles: list[str] = []
    now = T0
    for n, (op, a, b) in enumerate(ops):
        if op == "send":
            q.send(f"m{n}", group_id=f"g{a % 3}" if is_fifo else None, now=now)
        elif op == "receive":
            handles += [m.receipt_handle for m in q.receive(a % 10 + 1, b % 8, now=now).messages]
        elif op in ("delete", "change") and handles:
            handle = handles[a % len(handles)]
            try:
                if op == "delete":
                    q.delete(handle, now=now)
                else:
                    q.change_visibility(handle, b % 8, now=now)
            except (InvalidParameterValue, MessageNotInflight):
                pass
        elif op == "advance":
            now += (b % 5) * 1000 if a else b * 20_000
        elif op == "purge":
            with contextlib.suppress(PurgeQueueInProgress):
                q.purge(now=now)
        _apply(rows, q)
    assert rows == {m[0]: m for m in q.messages_state()}
    rebuilt = Queue.from_state(json.loads(json.dumps(q.to_state())), json.loads(json.dumps(list(rows.values()))))
    assert rebuilt.drain_changes().upserts == []  # loaded from rows: nothing to write back
    assert rebuilt.counts(now=now) == q.counts(now=now)
