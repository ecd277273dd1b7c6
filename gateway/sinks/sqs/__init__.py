"""SQS sink: pure queue model, checksums, and attribute validation (reference §8)."""

from __future__ import annotations

from gateway.sinks.sqs.attributes import MessageAttribute, QueueAttributes, parse_queue_attributes
from gateway.sinks.sqs.checksums import md5_of_attributes, md5_of_body
from gateway.sinks.sqs.exceptions import SqsError
from gateway.sinks.sqs.queue import DeadLetter, Queue, Received, ReceiveResult, SendResult

__all__ = [
    "DeadLetter",
    "MessageAttribute",
    "Queue",
    "QueueAttributes",
    "ReceiveResult",
    "Received",
    "SendResult",
    "SqsError",
    "md5_of_attributes",
    "md5_of_body",
    "parse_queue_attributes",
]
