"""Device Shadow service core: pure document rules and topic names (reference §4)."""

from __future__ import annotations

from gateway.shadow.document import (
    DEFAULT_LIMITS,
    JsonObject,
    ShadowLimits,
    ShadowState,
    UpdateRequest,
    UpdateResult,
    apply_update,
    compute_delta,
    delete,
    error_document,
    get_document,
    not_found,
    parse_get_or_delete,
    parse_update,
    update_request_from_json,
)
from gateway.shadow.exceptions import ShadowRejected
from gateway.shadow.topics import (
    Operation,
    ShadowTopic,
    Suffix,
    is_valid_shadow_name,
    is_valid_thing_name,
    parse_shadow_topic,
    response_topic,
    shadow_prefix,
)

__all__ = [
    "DEFAULT_LIMITS",
    "JsonObject",
    "Operation",
    "ShadowLimits",
    "ShadowRejected",
    "ShadowState",
    "ShadowTopic",
    "Suffix",
    "UpdateRequest",
    "UpdateResult",
    "apply_update",
    "compute_delta",
    "delete",
    "error_document",
    "get_document",
    "is_valid_shadow_name",
    "is_valid_thing_name",
    "not_found",
    "parse_get_or_delete",
    "parse_shadow_topic",
    "parse_update",
    "response_topic",
    "shadow_prefix",
    "update_request_from_json",
]
