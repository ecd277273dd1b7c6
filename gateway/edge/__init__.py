"""The Greengrass-style edge core: local broker, components, and the durable spool towards the cloud (reference §11)."""

from gateway.edge.spool import (
    Admission,
    Spool,
    SpooledMessage,
    SpoolEntry,
    SpoolPolicy,
    SpoolResult,
    SpoolStats,
    admit,
    dropped_on_interrupt,
)

__all__ = [
    "Admission",
    "Spool",
    "SpoolEntry",
    "SpoolPolicy",
    "SpoolResult",
    "SpoolStats",
    "SpooledMessage",
    "admit",
    "dropped_on_interrupt",
]
