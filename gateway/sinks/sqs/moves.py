"""Message move tasks (dead-letter queue redrive): StartMessageMoveTask, ListMessageMoveTasks, CancelMessageMoveTask.

A task takes the DLQ's visible messages and enqueues each, as a new message, in the destination queue (or, with no
destination, in the queue it was dead-lettered from), at most `MaxNumberOfMessagesPerSecond` a second. Each batch is
committed through the service's group commit like any other change. Tasks live in memory: a restart ends them
(messages already moved stay moved; the rest stay in the DLQ).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.sinks.sqs.exceptions import InvalidParameterValue, ResourceNotFoundException, UnsupportedOperation

if TYPE_CHECKING:
    from gateway.sinks.sqs.queue import Queue
    from gateway.sinks.sqs.service import SqsService

log = logging.getLogger("edgesim.sqs")

MAX_RATE = 500
DEFAULT_BATCH = 500  # "system optimized" rate when none is given: up to this many per turn, no pause
MAX_LIST_RESULTS = 10


@dataclass
class MoveTask:
    handle: str
    source_arn: str
    destination_arn: str | None
    rate: int | None
    started_ms: int
    to_move: int
    status: str = "RUNNING"
    moved: int = 0
    failure: str | None = None
    runner: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Status": self.status, "SourceArn": self.source_arn}
        if self.status == "RUNNING":
            out["TaskHandle"] = self.handle
            out["ApproximateNumberOfMessagesToMove"] = self.to_move
        if self.destination_arn is not None:
            out["DestinationArn"] = self.destination_arn
        if self.rate is not None:
            out["MaxNumberOfMessagesPerSecond"] = self.rate
        out["ApproximateNumberOfMessagesMoved"] = self.moved
        if self.failure is not None:
            out["FailureReason"] = self.failure
        out["StartedTimestamp"] = self.started_ms
        return out


class MessageMoves:
    def __init__(self, sqs: SqsService) -> None:
        self.sqs = sqs
        self.tasks: list[MoveTask] = []  # newest last

    def _is_dlq(self, queue: Queue) -> bool:
        return any(
            q.attributes.redrive_policy is not None and q.attributes.redrive_policy.dead_letter_target_arn == queue.arn
            for q in self.sqs.queues.values()
        )

    def start(self, source_arn: str, destination_arn: str | None, rate: int | None) -> dict[str, Any]:
        source = self.sqs.queue_by_arn(source_arn)
        if source is None:
            raise ResourceNotFoundException(
                "The resource that you specified for the SourceArn parameter doesn't exist."
            )
        if not self._is_dlq(source):
            raise InvalidParameterValue("Source queue must be configured as a Dead Letter Queue.")
        if destination_arn is not None and self.sqs.queue_by_arn(destination_arn) is None:
            raise ResourceNotFoundException(
                "The resource that you specified for the DestinationArn parameter doesn't exist."
            )
        if rate is not None and not 1 <= rate <= MAX_RATE:
            raise InvalidParameterValue(
                f"Value {rate} for parameter MaxNumberOfMessagesPerSecond is invalid. "
                f"Reason: Must be between 1 and {MAX_RATE}."
            )
        if any(t.source_arn == source_arn and t.status in ("RUNNING", "CANCELLING") for t in self.tasks):
            raise UnsupportedOperation(
                "There is already a task running. Only one active task is allowed for a source queue arn at a given "
                "time."
            )
        now = self.sqs.clock.wall_ms()
        handle = base64.b64encode(
            json.dumps({"taskId": str(uuid.uuid4()), "sourceArn": source_arn}, separators=(",", ":")).encode()
        ).decode()
        to_move = source.counts(now=now)["ApproximateNumberOfMessages"]
        task = MoveTask(handle, source_arn, destination_arn, rate, now, to_move)
        self.tasks.append(task)
        task.runner = asyncio.get_running_loop().create_task(self._run(task), name="sqs-move-task")
        return {"TaskHandle": handle}

    async def _run(self, task: MoveTask) -> None:
        batch = task.rate or DEFAULT_BATCH
        while task.status == "RUNNING":
            source = self.sqs.queue_by_arn(task.source_arn)
            if source is None:
                task.status, task.failure = "FAILED", "AWS.SimpleQueueService.NonExistentQueue"
                return
            now = self.sqs.clock.wall_ms()
            messages = source.take_available(batch, now=now)
            if not messages:
                task.status = "COMPLETED"
                return
            touched = {source.name: source}
            for index, msg in enumerate(messages):
                target_arn = task.destination_arn or msg.source_arn
                target = self.sqs.queue_by_arn(target_arn) if target_arn else None
                if target is None:
                    # Put back what was not moved, then stop: AWS fails the task when a destination is gone.
                    for rest in messages[index:]:
                        source.redrive_in(rest, now=now)
                    task.status = "FAILED"
                    task.failure = "AWS.SimpleQueueService.NonExistentQueue"
                    break
                target.redrive_in(msg, now=now)
                touched[target.name] = target
                task.moved += 1
            self.sqs.save_and_wake(*touched.values())
            if task.status == "RUNNING":
                await asyncio.sleep(1.0 if task.rate else 0)
        if task.status == "CANCELLING":
            task.status = "CANCELLED"

    def list(self, source_arn: str, max_results: int | None) -> dict[str, Any]:
        if self.sqs.queue_by_arn(source_arn) is None:
            raise ResourceNotFoundException(
                "The resource that you specified for the SourceArn parameter doesn't exist."
            )
        size = 1 if max_results is None else max_results
        if not 1 <= size <= MAX_LIST_RESULTS:
            raise InvalidParameterValue(
                f"Value {size} for parameter MaxResults is invalid. Reason: Must be between 1 and {MAX_LIST_RESULTS}."
            )
        mine = [t for t in reversed(self.tasks) if t.source_arn == source_arn]
        return {"Results": [t.to_wire() for t in mine[:size]]}

    def cancel(self, handle: str) -> dict[str, Any]:
        task = next((t for t in self.tasks if t.handle == handle), None)
        if task is None:
            raise ResourceNotFoundException("Task does not exist.")
        if task.status != "RUNNING":
            raise UnsupportedOperation(f"Only active tasks can be cancelled. Task status: {task.status}.")
        task.status = "CANCELLING"
        if task.runner is not None and task.runner.done():
            task.status = "CANCELLED"
        return {"ApproximateNumberOfMessagesMoved": task.moved}

    async def close(self) -> None:
        for task in self.tasks:
            if task.runner is not None and not task.runner.done():
                task.runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task.runner
