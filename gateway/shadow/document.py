"""Device Shadow documents as pure functions: parse, merge, delta, metadata and error documents (reference §4)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from gateway.shadow.exceptions import (
    ShadowRejected,
)

__all__ = [
    "DEFAULT_LIMITS",
    "JsonObject",
    "ShadowLimits",
    "ShadowRejected",
    "ShadowState",
    "UpdateRequest",
    "UpdateResult",
    "apply_update",
    "compute_delta",
    "delete",
    "error_document",
    "get_document",
    "not_found",
    "parse_get_or_delete",
    "parse_update",
    "update_request_from_json",
]

JsonObject = dict[str, Any]

# AWS's wording (reference §4.4); clients and tests compare these strings.
INVALID_JSON: Final = "Invalid JSON"
MISSING_STATE: Final = "Missing required node: state"
STATE_NOT_OBJECT: Final = "State node must be an object"
DESIRED_NOT_OBJECT: Final = "Desired node must be an object"
REPORTED_NOT_OBJECT: Final = "Reported node must be an object"
INVALID_VERSION: Final = "Invalid version"
INVALID_CLIENT_TOKEN: Final = "Invalid clientToken"
TOO_DEEP: Final = "JSON contains too many levels of nesting; maximum is {}"
INVALID_NODE: Final = "State contains an invalid node"
UNAUTHORIZED: Final = "Unauthorized"
FORBIDDEN: Final = "Forbidden"
THING_NOT_FOUND: Final = "Thing not found"
NO_SHADOW: Final = "No shadow exists with name: '{}'"
VERSION_CONFLICT: Final = "Version conflict"
PAYLOAD_TOO_LARGE: Final = "The payload exceeds the maximum size allowed"
UNSUPPORTED_ENCODING: Final = "Unsupported documented encoding; supported encoding is UTF-8"
TOO_MANY_REQUESTS: Final = "Too Many Requests"
INTERNAL_FAILURE: Final = "Internal service failure"

_SECTIONS: Final = ("desired", "reported")


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """Per-shadow limits with AWS's defaults (reference §4.1); all configurable."""

    max_state_bytes: int = 8192
    max_depth: int = 6
    max_client_token_bytes: int = 64
    deleted_version_retention_s: int = 48 * 3600


DEFAULT_LIMITS: Final = ShadowLimits()


@dataclass(frozen=True, slots=True)
class ShadowState:
    """One stored shadow. Dicts are shared between versions and must never be mutated in place.

    `state` and `metadata` hold only non-empty `desired`/`reported` sections. A deleted shadow keeps its
    `version` (and `updated_s` = deletion time) so that re-creation continues the numbering.
    """

    state: JsonObject
    metadata: JsonObject
    version: int
    deleted: bool = False
    created_s: int = 0
    updated_s: int = 0

    @property
    def desired(self) -> JsonObject | None:
        return self.state.get("desired")

    @property
    def reported(self) -> JsonObject | None:
        return self.state.get("reported")

    @property
    def exists(self) -> bool:
        return not self.deleted

    def to_record(self) -> JsonObject:
        return {
            "state": self.state,
            "metadata": self.metadata,
            "version": self.version,
            "deleted": self.deleted,
            "created_s": self.created_s,
            "updated_s": self.updated_s,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ShadowState:
        """Rebuild from `to_record()` output; a damaged record is a 500 for the client, as AWS would answer."""
        state, metadata = record.get("state"), record.get("metadata")
        version, deleted = record.get("version"), record.get("deleted", False)
        created_s, updated_s = record.get("created_s", 0), record.get("updated_s", 0)
        if not (
            isinstance(state, dict)
            and isinstance(metadata, dict)
            and _is_int(version)
            and isinstance(deleted, bool)
            and _is_int(created_s)
            and _is_int(updated_s)
            and all(k in _SECTIONS and isinstance(v, dict) for k, v in state.items())
            and all(k in _SECTIONS and isinstance(v, dict) for k, v in metadata.items())
        ):
            raise ShadowRejected(500, INTERNAL_FAILURE, path="record")
        return cls(state, metadata, version, deleted, created_s, updated_s)


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A validated `/update` request; `state` is kept as sent because `/update/accepted` echoes it.

    `state` None is `{"state": null}`: the whole state is cleared (the shadow and its version stay).
    """

    state: JsonObject | None
    version: int | None = None
    client_token: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """The new shadow and the payloads to publish; `delta` is None when there is nothing to publish."""

    shadow: ShadowState
    accepted: JsonObject
    delta: JsonObject | None
    documents: JsonObject


# --- parsing --------------------------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_constants(name: str) -> object:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _decode(payload: bytes, limits: ShadowLimits) -> object:
    try:
        # Decoded explicitly: json.loads(bytes) would also accept UTF-16/32, which AWS answers with 415.
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise ShadowRejected(415, UNSUPPORTED_ENCODING) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # orjson refuses integers beyond 64 bits, which are valid JSON: let the standard parser decide
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise ShadowRejected(400, TOO_DEEP.format(limits.max_depth)) from None
    except ValueError:
        raise ShadowRejected(400, INVALID_JSON) from None
    try:
        # orjson refused it, so it may hold an escaped lone surrogate ("\ud800"): valid JSON syntax, but no
        # Unicode text, so it could be neither stored nor sent on; refused here, with the caller's token.
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        token = doc.get("clientToken") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not _is_text(token):
            token = None
        raise ShadowRejected(400, INVALID_JSON, client_token=token) from None
    except RecursionError:
        raise ShadowRejected(400, TOO_DEEP.format(limits.max_depth)) from None
    return doc


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _client_token(doc: JsonObject, limits: ShadowLimits) -> str | None:
    if "clientToken" not in doc:
        return None
    token = doc["clientToken"]
    if not isinstance(token, str) or len(token.encode("utf-8", "surrogatepass")) > limits.max_client_token_bytes:
        raise ShadowRejected(400, INVALID_CLIENT_TOKEN, path="clientToken")
    return token


def _check_tree(node: JsonObject | list[Any], depth: int, path: str, limits: ShadowLimits, token: str | None) -> None:
    # Depth counts objects and arrays, with `state` itself as level 1 (Greengrass shadow manager, reference §4.1).
    if depth > limits.max_depth:
        raise ShadowRejected(400, TOO_DEEP.format(limits.max_depth), client_token=token, path=path)
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                _check_tree(value, depth + 1, f"{path}.{key}", limits, token)
        return
    for index, value in enumerate(node):
        if value is None:
            # AWS rejects nulls in arrays (reference §4.1); its wording for this case is undocumented.
            raise ShadowRejected(400, INVALID_JSON, client_token=token, path=f"{path}[{index}]")
        if isinstance(value, (dict, list)):
            _check_tree(value, depth + 1, f"{path}[{index}]", limits, token)


def update_request_from_json(doc: object, limits: ShadowLimits = DEFAULT_LIMITS) -> UpdateRequest:
    """Validate an already-decoded update document (reference §4.3 step 1); top-level extras are ignored."""
    if not isinstance(doc, dict):
        raise ShadowRejected(400, INVALID_JSON)
    token = _client_token(doc, limits)
    version = doc.get("version")
    if "version" in doc and not _is_int(version):
        raise ShadowRejected(400, INVALID_VERSION, client_token=token, path="version")
    if "state" not in doc:
        raise ShadowRejected(400, MISSING_STATE, client_token=token, path="state")
    state = doc["state"]
    if state is None:
        return UpdateRequest(state=None, version=version, client_token=token)
    if not isinstance(state, dict):
        raise ShadowRejected(400, STATE_NOT_OBJECT, client_token=token, path="state")
    for key, value in state.items():
        if key not in _SECTIONS:
            raise ShadowRejected(400, f"{INVALID_NODE}: '{key}'", client_token=token, path=f"state.{key}")
        if value is not None and not isinstance(value, dict):
            message = DESIRED_NOT_OBJECT if key == "desired" else REPORTED_NOT_OBJECT
            raise ShadowRejected(400, message, client_token=token, path=f"state.{key}")
    _check_tree(state, 1, "state", limits, token)
    return UpdateRequest(state=state, version=version, client_token=token)


def parse_update(payload: bytes, limits: ShadowLimits = DEFAULT_LIMITS) -> UpdateRequest:
    """Parse and validate an `/update` payload or an UpdateThingShadow body; raises ShadowRejected."""
    return update_request_from_json(_decode(payload, limits), limits)


def parse_get_or_delete(payload: bytes, limits: ShadowLimits = DEFAULT_LIMITS) -> str | None:
    """Return the clientToken of a `/get` or `/delete` request; an empty payload is allowed."""
    if not bytes(payload).strip():
        return None
    doc = _decode(payload, limits)
    if not isinstance(doc, dict):
        raise ShadowRejected(400, INVALID_JSON)
    return _client_token(doc, limits)


# --- merge, metadata, delta -----------------------------------------------------------------------


def _metadata_of(value: object, now_s: int) -> Any:
    if isinstance(value, dict):
        return {key: _metadata_of(item, now_s) for key, item in value.items()}
    if isinstance(value, list):
        return [_metadata_of(item, now_s) for item in value]
    return {"timestamp": now_s}


def _merge(
    old: JsonObject | None, old_meta: JsonObject | None, patch: JsonObject, now_s: int
) -> tuple[JsonObject, JsonObject]:
    # Copy-on-write: only objects on a patched path are copied; untouched subtrees are shared with `old`.
    state = dict(old) if old else {}
    meta = dict(old_meta) if old_meta else {}
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
            meta.pop(key, None)
            continue
        if not isinstance(value, dict):
            state[key] = value
            meta[key] = _metadata_of(value, now_s)
            continue
        prev = state.get(key)
        if not value:
            # An empty object is a value (AWS keeps it): it replaces a scalar or creates the key, and merging it
            # into an existing object changes nothing.
            if not isinstance(prev, dict):
                state[key], meta[key] = {}, {}
            continue
        if isinstance(prev, dict):
            sub, sub_meta = _merge(prev, meta.get(key), value, now_s)
        else:
            sub, sub_meta = _merge(None, None, value, now_s)
        if sub:
            state[key], meta[key] = sub, sub_meta
        else:  # an object emptied by its nulls collapses away (reference §4.3 step 3)
            state.pop(key, None)
            meta.pop(key, None)
    return state, meta


def _same(a: object, b: object) -> bool:
    # Numbers compare by value (1 == 1.0) but bool is not a number; strings never equal numbers (§4.3 step 6).
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return type(a) is type(b) and a == b


def _delta(
    desired: JsonObject, reported: JsonObject | None, meta: JsonObject | None
) -> tuple[JsonObject, JsonObject | None]:
    out: JsonObject = {}
    out_meta: JsonObject | None = None if meta is None else {}
    for key, want in desired.items():
        if reported is not None and key in reported:
            have = reported[key]
            if isinstance(want, dict) and isinstance(have, dict):
                sub, sub_meta = _delta(want, have, None if meta is None else meta.get(key))
                if sub:
                    out[key] = sub
                    if out_meta is not None:
                        out_meta[key] = sub_meta
                continue
            if _same(want, have):
                continue
        out[key] = want
        if out_meta is not None and meta is not None:
            out_meta[key] = meta.get(key)
    return out, out_meta


def compute_delta(desired: JsonObject | None, reported: JsonObject | None) -> JsonObject | None:
    """Desired leaves that reported lacks or contradicts, with their full paths; None when in sync."""
    if not desired:
        return None
    out, _ = _delta(desired, reported, None)
    return out or None


def _json_bytes(value: JsonObject | None) -> int:
    if not value:
        return 0
    try:
        return len(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))


def _sections(desired: JsonObject | None, reported: JsonObject | None) -> JsonObject:
    out: JsonObject = {}
    if desired:
        out["desired"] = desired
    if reported:
        out["reported"] = reported
    return out


def _snapshot(shadow: ShadowState) -> JsonObject:
    return {"state": shadow.state, "metadata": shadow.metadata, "version": shadow.version}


def _with_token(doc: JsonObject, client_token: str | None) -> JsonObject:
    if client_token is not None:
        doc["clientToken"] = client_token
    return doc


def _live(current: ShadowState | None) -> ShadowState | None:
    return current if current is not None and not current.deleted else None


# --- operations -----------------------------------------------------------------------------------


def apply_update(
    current: ShadowState | None, request: UpdateRequest, now_s: int, *, limits: ShadowLimits = DEFAULT_LIMITS
) -> UpdateResult:
    """Apply an accepted `/update`: the new shadow plus the accepted, delta and documents payloads.

    Returned payloads share structure with the stored shadow and the request: serialise, never mutate.
    """
    live = _live(current)
    token = request.client_token
    # A missing or deleted shadow has no version to lock against, so `version` is ignored there, as the
    # reference model does (§12.1); deletion only matters for where the numbering continues.
    if live is not None and request.version is not None and request.version != live.version:
        raise ShadowRejected(409, VERSION_CONFLICT, client_token=token, path="version")

    state = live.state if live else {}
    metadata = live.metadata if live else {}
    sections: dict[str, JsonObject | None] = {}
    section_meta: dict[str, JsonObject | None] = {}
    for name in _SECTIONS:
        old, old_meta = state.get(name), metadata.get(name)
        if request.state is None:
            old = old_meta = None  # `{"state": null}` clears everything
        elif name in request.state:
            patch = request.state[name]
            if patch is None:
                old = old_meta = None  # `desired: null` clears the section
            elif patch:
                old, old_meta = _merge(old, old_meta, patch, now_s)
        sections[name], section_meta[name] = old, old_meta
    desired, reported = sections["desired"], sections["reported"]
    if _json_bytes(desired) + _json_bytes(reported) > limits.max_state_bytes:
        raise ShadowRejected(413, PAYLOAD_TOO_LARGE, client_token=token, path="state")

    if current is None or (current.deleted and now_s - current.updated_s >= limits.deleted_version_retention_s):
        version = 1
    else:
        version = current.version + 1
    shadow = ShadowState(
        state=_sections(desired, reported),
        metadata=_sections(section_meta["desired"], section_meta["reported"]),
        version=version,
        created_s=live.created_s if live else now_s,
        updated_s=now_s,
    )

    accepted = _with_token(
        {
            "state": request.state,
            "metadata": _metadata_of(request.state, now_s),
            "version": version,
            "timestamp": now_s,
        },
        token,
    )
    delta_doc: JsonObject | None = None
    if desired:
        delta_state, delta_meta = _delta(desired, reported, shadow.metadata.get("desired", {}))
        if delta_state:
            delta_doc = _with_token(
                {"version": version, "timestamp": now_s, "state": delta_state, "metadata": delta_meta}, token
            )
    documents: JsonObject = {}
    if live is not None:
        documents["previous"] = _snapshot(live)
    documents["current"] = _snapshot(shadow)
    documents["timestamp"] = now_s
    return UpdateResult(shadow, accepted, delta_doc, _with_token(documents, token))


def not_found(thing_name: str, shadow_name: str | None = None, client_token: str | None = None) -> ShadowRejected:
    """AWS's 404: the classic shadow is named by its thing, a named shadow by its own name."""
    name = thing_name if shadow_name is None else shadow_name
    return ShadowRejected(404, NO_SHADOW.format(name), client_token=client_token)


def get_document(
    current: ShadowState | None,
    client_token: str | None,
    now_s: int,
    *,
    thing_name: str,
    shadow_name: str | None = None,
) -> JsonObject:
    """The `/get/accepted` document (also GetThingShadow's body); 404 when missing or deleted."""
    live = _live(current)
    if live is None:
        raise not_found(thing_name, shadow_name, client_token)
    state = dict(live.state)
    delta = compute_delta(live.desired, live.reported)
    if delta:
        state["delta"] = delta
    doc = {"state": state, "metadata": live.metadata, "version": live.version, "timestamp": now_s}
    return _with_token(doc, client_token)


def delete(
    current: ShadowState | None,
    client_token: str | None,
    now_s: int,
    *,
    thing_name: str,
    shadow_name: str | None = None,
) -> tuple[ShadowState, JsonObject]:
    """Delete a shadow, keeping its version so re-creation continues the numbering (reference §4.1)."""
    live = _live(current)
    if live is None:
        raise not_found(thing_name, shadow_name, client_token)
    gone = ShadowState(
        state={}, metadata={}, version=live.version, deleted=True, created_s=live.created_s, updated_s=now_s
    )
    return gone, _with_token({"version": live.version, "timestamp": now_s}, client_token)


def error_document(err: ShadowRejected, client_token: str | None, now_s: int) -> JsonObject:
    """The `/rejected` payload; the token falls back to the one the error captured from the request."""
    token = client_token if client_token is not None else err.client_token
    return _with_token({"code": err.code, "message": err.message, "timestamp": now_s}, token)
