"""SqsService persistence: messages as rows, legacy whole-queue snapshots rewritten as rows on start."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.clock import ManualClock
from gateway.sinks.sqs.attributes import parse_queue_attributes
from gateway.sinks.sqs.queue import Queue
from gateway.sinks.sqs.service import SendEntry, SqsService
from gateway.store import Store

ARN = "arn:aws:sqs:us-east-1:000000000000:"


def service(store: Store) -> SqsService:
    return SqsService(store, ManualClock(), "us-east-1", "000000000000", "127.0.0.1", lambda: 4566)


def test_legacy_snapshot_is_rewritten_as_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    queue = Queue("old", ARN + "old", parse_queue_attributes("old", {}), created_at=1_700_000_000_000)
    for i in range(3):
        queue.send(f"m{i}", now=1_700_000_000_000 + i)
    legacy = {**queue.to_state(), "messages": queue.messages_state()}
    with store.transaction() as db:
        db.execute("INSERT INTO sqs_queues(name, state) VALUES (?,?)", ("old", json.dumps(legacy)))
    svc = service(store)
    assert store.one("SELECT count(*) AS n FROM sqs_messages WHERE queue='old'")["n"] == 3
    assert "messages" not in json.loads(store.one("SELECT state FROM sqs_queues WHERE name='old'")["state"])
    assert svc.queues["old"].counts(now=1_700_000_000_010)["ApproximateNumberOfMessages"] == 3
    store.close()


def test_one_commit_per_loop_turn_and_changes_survive_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    svc = service(store)

    async def scenario() -> None:
        url = svc.create_queue("q")["QueueUrl"]
        await svc.durable()
        for i in range(50):
            svc.send_message(url, SendEntry(body=f"m{i}"))
        changes_before = store.total_changes
        await svc.durable()
        # 50 sends in one turn: one flush wrote 50 message rows and the queue row once.
        assert store.total_changes - changes_before == 51
        got = await svc.receive_message(url, 10)
        for m in got[:4]:
            svc.delete_message(url, m.receipt_handle)
        await svc.durable()

    asyncio.run(scenario())
    store.close()
    reopened = Store(tmp_path / "db.sqlite")
    counts = service(reopened).queues["q"].counts(now=ManualClock().wall_ms())
    assert counts["ApproximateNumberOfMessages"] == 40
    assert counts["ApproximateNumberOfMessagesNotVisible"] == 6
    reopened.close()
