"""Firehose errors (JSON 1.1: client errors are HTTP 400); the same classes as Kinesis's, from the root."""

from __future__ import annotations

from gateway.errors import InvalidArgumentException, JsonResourceNotFoundException, ResourceInUseException

__all__ = ["FirehoseResourceInUseException", "FirehoseResourceNotFoundException", "InvalidArgumentException"]

FirehoseResourceNotFoundException = JsonResourceNotFoundException
FirehoseResourceInUseException = ResourceInUseException
