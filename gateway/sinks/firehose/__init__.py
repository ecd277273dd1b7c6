"""Firehose sink: delivery streams buffering records into S3 objects (pure buffering rules, a writer, a service)."""

from gateway.sinks.firehose.buffer import BufferingHints, FlushPlan, Pending, due_at, object_key, plan_flush

__all__ = ["BufferingHints", "FlushPlan", "Pending", "due_at", "object_key", "plan_flush"]
