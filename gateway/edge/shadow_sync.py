"""Greengrass ShadowManager sync as pure functions: sync config, three-way reconcile, real-time forwarding (§11.4)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from gateway.errors import ConfigError, EdgesimError
from gateway.shadow.document import JsonObject, ShadowState, compute_delta

_SECTIONS: Final = ("desired", "reported")


class ShadowSyncError(EdgesimError):
    """A damaged sync input: a persisted sync state or a shadow document that is not what it should be."""


class SyncConfigError(ConfigError):
    """The ShadowManager sync configuration is invalid; `paths` names every offending field."""

    def __init__(self, message: str, paths: tuple[str, ...]) -> None:
        super().__init__(message)
        self.paths = paths


# --- configuration --------------------------------------------------------------------------------


class SyncDirection(StrEnum):
    BETWEEN_DEVICE_AND_CLOUD = "betweenDeviceAndCloud"
    DEVICE_TO_CLOUD = "deviceToCloud"
    CLOUD_TO_DEVICE = "cloudToDevice"


BETWEEN: Final = SyncDirection.BETWEEN_DEVICE_AND_CLOUD
DEVICE_TO_CLOUD: Final = SyncDirection.DEVICE_TO_CLOUD
CLOUD_TO_DEVICE: Final = SyncDirection.CLOUD_TO_DEVICE

# The botocore model's ThingName and ShadowName constraints (reference §4.1, §4.5).
ThingName = Annotated[str, Field(strict=True, min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9:_-]+$")]
ShadowName = Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=r"^[$a-zA-Z0-9:_-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ThingShadowsConfig(_Model):
    classic: bool = Field(default=True, strict=True)  # ShadowManager syncs the classic shadow unless told not to
    named_shadows: tuple[ShadowName, ...] = Field(default=(), alias="namedShadows")


class ShadowDocumentConfig(ThingShadowsConfig):
    thing_name: ThingName = Field(alias="thingName")


class SynchronizeConfig(_Model):
    core_thing: ThingShadowsConfig | None = Field(default=None, alias="coreThing")
    shadow_documents: tuple[ShadowDocumentConfig, ...] = Field(default=(), alias="shadowDocuments")
    shadow_documents_map: dict[ThingName, ThingShadowsConfig] = Field(default_factory=dict, alias="shadowDocumentsMap")
    direction: SyncDirection = BETWEEN


class StrategyConfig(_Model):
    type: Literal["realTime", "periodic"] = "realTime"
    delay: int | None = Field(default=None, strict=True, ge=1, validate_default=True)  # seconds between syncs

    @field_validator("delay")
    @classmethod
    def _check_delay(cls, value: int | None, info: ValidationInfo) -> int | None:
        # No documented default for `delay`, so a periodic strategy must state it (unconfirmed; reference §11.4).
        if value is None and info.data.get("type") == "periodic":
            raise ValueError("Member must not be null when type is periodic")
        return value


class ShadowSyncConfig(_Model):
    """The `synchronize` and `strategy` keys of the ShadowManager configuration; its other keys are ignored here."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    synchronize: SynchronizeConfig = Field(default_factory=SynchronizeConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


# AWS's validation wording ("Value 'x' at 'path' failed to satisfy constraint: ..."), keyed by pydantic error type.
_CONSTRAINTS: Final = {
    "missing": "Member must not be null",
    "enum": "Member must satisfy enum value set: [{expected}]",
    "literal_error": "Member must satisfy enum value set: [{expected}]",
    "string_pattern_mismatch": "Member must satisfy regular expression pattern: {pattern}",
    "string_too_short": "Member must have length greater than or equal to {min_length}",
    "string_too_long": "Member must have length less than or equal to {max_length}",
    "extra_forbidden": "Member is not a recognised field",
    "greater_than_equal": "Member must have value greater than or equal to {ge}",
    "value_error": "{error}",
}


def _constraint(error: ErrorDetails) -> str:
    kind, ctx = error["type"], dict(error.get("ctx", {}))
    if "expected" in ctx:  # pydantic lists the choices as "'a', 'b' or 'c'"
        ctx["expected"] = ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
    if "pattern" in ctx:
        ctx["pattern"] = str(ctx["pattern"]).strip("^$")
    return _CONSTRAINTS[kind].format(**ctx) if kind in _CONSTRAINTS else str(error["msg"])


def _value(error: ErrorDetails) -> str:
    value = error.get("input")
    if error["type"] == "missing" or value is None:
        return "null"
    return f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)


def parse_sync_config(raw: object) -> ShadowSyncConfig:
    """Validate a ShadowManager configuration; errors use AWS's validation wording and name each field."""
    try:
        return ShadowSyncConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        paths = tuple(_path(error["loc"]) for error in errors)
        details = "; ".join(
            f"Value {_value(e)} at '{p}' failed to satisfy constraint: {_constraint(e)}"
            for e, p in zip(errors, paths, strict=True)
        )
        noun = "error" if len(errors) == 1 else "errors"
        raise SyncConfigError(f"{len(errors)} validation {noun} detected: {details}", paths) from None


def shadows_to_sync(config: ShadowSyncConfig, core_thing_name: str) -> tuple[tuple[str, str | None], ...]:
    """Every (thing, shadow name or None for classic) pair to sync, in configuration order, without repeats."""
    sync = config.synchronize
    entries: list[tuple[str, ThingShadowsConfig]] = []
    if sync.core_thing is not None:
        entries.append((core_thing_name, sync.core_thing))
    entries.extend((doc.thing_name, doc) for doc in sync.shadow_documents)
    entries.extend(sync.shadow_documents_map.items())
    pairs: dict[tuple[str, str | None], None] = {}
    for thing, shadows in entries:
        if shadows.classic:
            pairs[(thing, None)] = None
        pairs.update(((thing, name), None) for name in shadows.named_shadows)
    return tuple(pairs)


# --- documents and sync state ---------------------------------------------------------------------


def _pruned(obj: Mapping[str, Any]) -> JsonObject:
    # Empty objects collapse away in stored shadows (reference §4.3 step 3); drop any a caller built by hand.
    out: JsonObject = {}
    for key, value in obj.items():
        kept = _pruned(value) if isinstance(value, dict) else value
        if kept is not None and kept != {}:
            out[key] = kept
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDocument:
    """One side's shadow as the sync sees it: the `desired` and `reported` sections and the version."""

    version: int
    desired: JsonObject = field(default_factory=dict)
    reported: JsonObject = field(default_factory=dict)

    @property
    def state(self) -> JsonObject:
        """The non-empty sections, shaped like a shadow's `state`."""
        sections = {"desired": _pruned(self.desired), "reported": _pruned(self.reported)}
        return {name: value for name, value in sections.items() if value}

    @classmethod
    def from_shadow(cls, shadow: ShadowState | None) -> SyncDocument | None:
        """From the local store's ShadowState; a missing or deleted shadow is None."""
        if shadow is None or shadow.deleted:
            return None
        return cls(version=shadow.version, desired=shadow.desired or {}, reported=shadow.reported or {})

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> SyncDocument:
        """From a `/get/accepted` document or the `current` of `/update/documents`; `delta` is ignored."""
        state, version = doc.get("state", {}), doc.get("version")
        if not isinstance(state, dict) or not isinstance(version, int) or isinstance(version, bool):
            raise ShadowSyncError("shadow document needs an object `state` and an integer `version`")
        desired, reported = state.get("desired", {}), state.get("reported", {})
        if not isinstance(desired, dict) or not isinstance(reported, dict):
            raise ShadowSyncError("shadow document `desired` and `reported` must be objects")
        return cls(version=version, desired=desired, reported=reported)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncState:
    """What the sync remembers per shadow: `base`, the last state both sides agreed on (shaped like a shadow
    `state`; None when no document is agreed), and the last version seen on each side."""

    base: JsonObject | None = None
    local_version: int | None = None
    cloud_version: int | None = None

    def to_json(self) -> str:
        record = {"base": self.base, "localVersion": self.local_version, "cloudVersion": self.cloud_version}
        return json.dumps(record, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SyncState:
        try:
            record = json.loads(text)
        except ValueError:
            raise ShadowSyncError("sync state is not valid JSON") from None
        if not isinstance(record, dict):
            raise ShadowSyncError("sync state must be a JSON object")
        base, local, cloud = record.get("base"), record.get("localVersion"), record.get("cloudVersion")
        base_ok = base is None or (
            isinstance(base, dict) and all(k in _SECTIONS and isinstance(v, dict) for k, v in base.items())
        )
        if not (base_ok and all(v is None or type(v) is int for v in (local, cloud))):  # bool is not a version
            raise ShadowSyncError("sync state has a malformed base or version")
        return cls(base=base, local_version=local, cloud_version=cloud)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncPlan:
    """What to do on each side (an update request body, or a delete) and the sync state once that is done;
    real-time forwarding returns the same shape with only the other side's fields set."""

    new_state: SyncState
    cloud_update: JsonObject | None = None
    local_update: JsonObject | None = None
    delete_cloud: bool = False
    delete_local: bool = False

    @property
    def empty(self) -> bool:
        return not (self.cloud_update or self.local_update or self.delete_cloud or self.delete_local)


# --- three-way merge ------------------------------------------------------------------------------

_MISSING: Final = object()


def _same(a: object, b: object) -> bool:
    # Equal as the shadow service compares values (1 == 1.0, "1" != 1): neither shows a delta against the other.
    if a is _MISSING or b is _MISSING:
        return a is b
    return compute_delta({"v": a}, {"v": b}) is None and compute_delta({"v": b}, {"v": a}) is None


def _merge3(base: JsonObject, local: JsonObject, cloud: JsonObject, local_wins: bool) -> JsonObject:
    out: JsonObject = {}
    for key in dict.fromkeys([*local, *cloud, *base]):
        b, lv, cv = base.get(key, _MISSING), local.get(key, _MISSING), cloud.get(key, _MISSING)
        if _same(lv, cv) or _same(b, cv):  # both agree, or only local changed
            value = lv
        elif _same(b, lv):  # only the cloud changed
            value = cv
        elif isinstance(lv, dict) and isinstance(cv, dict):  # both changed one object: decide field by field
            merged = _merge3(b if isinstance(b, dict) else {}, lv, cv, local_wins)
            value = merged or _MISSING
        else:  # a conflict on a leaf (scalars and arrays are atomic, reference §4.1)
            value = lv if local_wins else cv
        if value is not _MISSING:
            out[key] = value
    return out


def _merge_state(base: JsonObject, local: JsonObject, cloud: JsonObject, direction: SyncDirection) -> JsonObject:
    out: JsonObject = {}
    for section in _SECTIONS:
        # Reference §11.4: bidirectional → cloud wins desired, local wins reported; one-way → the source wins.
        local_wins = direction is DEVICE_TO_CLOUD or (direction is BETWEEN and section == "reported")
        merged = _merge3(base.get(section, {}), local.get(section, {}), cloud.get(section, {}), local_wins)
        if merged:
            out[section] = merged
    return out


def _nulls(value: object) -> Any:
    # A removed object is deleted leaf by leaf, so fields the other side added without our knowing survive.
    return {key: _nulls(item) for key, item in value.items()} if isinstance(value, dict) and value else None


def _diff(have: JsonObject, want: JsonObject) -> JsonObject:
    """The smallest update patch turning `have` into `want`: changed leaves, and nulls for removed leaves."""
    patch: JsonObject = {key: _nulls(value) for key, value in have.items() if key not in want}
    for key, value in want.items():
        old = have.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = _diff(old, value)
            if sub:
                patch[key] = sub
        elif not _same(old, value):
            patch[key] = value
    return patch


def _change(have: JsonObject | None, want: JsonObject | None) -> tuple[JsonObject | None, bool]:
    """(update request body or None, delete?) taking one side from `have` to `want` (None = no document)."""
    if want is None:
        return None, have is not None
    if have is None:
        return {"state": dict(want)}, False  # an update creates a missing shadow
    patch = _diff(have, want)
    return ({"state": patch} if patch else None), False


def _one_sided(
    local: JsonObject | None, cloud: JsonObject | None, base: JsonObject | None, direction: SyncDirection
) -> JsonObject | None:
    """The state both sides should hold when at most one document exists (the reference is silent here)."""
    survivor = local if local is not None else cloud
    if survivor is None or base is None:
        return survivor  # never agreed on: a lone document is new, so it is copied
    # One-way: the source wins everything, its own deletion included. Otherwise a deletion wins over an unchanged
    # document, and an edit beats a deletion: the edited document is copied whole to the side that deleted it.
    source_deleted = direction is (DEVICE_TO_CLOUD if local is None else CLOUD_TO_DEVICE)
    return None if source_deleted or _same(survivor, base) else survivor


def reconcile(
    local: SyncDocument | None, cloud: SyncDocument | None, state: SyncState, direction: SyncDirection = BETWEEN
) -> SyncPlan:
    """Three-way merge of both sides against `state.base`, e.g. after reconnecting or on a periodic sync."""
    have_local = None if local is None else local.state
    have_cloud = None if cloud is None else cloud.state
    if have_local is not None and have_cloud is not None:
        want: JsonObject | None = _merge_state(state.base or {}, have_local, have_cloud, direction)
    else:
        want = _one_sided(have_local, have_cloud, state.base, direction)
    # One-way sync never writes the source.
    want_local = have_local if direction is DEVICE_TO_CLOUD else want
    want_cloud = have_cloud if direction is CLOUD_TO_DEVICE else want
    # The base is the source's state: edits made only on a one-way destination then never read as new.
    new_base = want_cloud if direction is CLOUD_TO_DEVICE else want_local
    local_update, delete_local = _change(have_local, want_local)
    cloud_update, delete_cloud = _change(have_cloud, want_cloud)
    return SyncPlan(
        new_state=SyncState(
            base=new_base,
            local_version=state.local_version if local is None else local.version,
            cloud_version=state.cloud_version if cloud is None else cloud.version,
        ),
        cloud_update=cloud_update,
        local_update=local_update,
        delete_cloud=delete_cloud,
        delete_local=delete_local,
    )


# --- real-time forwarding -------------------------------------------------------------------------


def _forward(state: SyncState, doc: SyncDocument | None, direction: SyncDirection, *, from_local: bool) -> SyncPlan:
    seen = state.local_version if from_local else state.cloud_version
    if doc is not None and seen is not None and doc.version <= seen:
        return SyncPlan(new_state=state)  # out of order or already seen: documents events may arrive late
    version = seen if doc is None else doc.version
    new = replace(state, local_version=version) if from_local else replace(state, cloud_version=version)
    if direction is (CLOUD_TO_DEVICE if from_local else DEVICE_TO_CLOUD):
        return SyncPlan(new_state=new)
    current = None if doc is None else doc.state
    # The other side is taken to hold `base`; forwarding only what changed since then leaves its other edits alone
    # and makes the echo of a forwarded change an empty diff.
    update, delete = _change(state.base, current)
    new = replace(new, base=current)
    if from_local:
        return SyncPlan(new_state=new, cloud_update=update, delete_cloud=delete)
    return SyncPlan(new_state=new, local_update=update, delete_local=delete)


def on_local_update(state: SyncState, local: SyncDocument | None, direction: SyncDirection = BETWEEN) -> SyncPlan:
    """The cloud update (or delete) to forward after the local shadow changed; None local = it was deleted."""
    return _forward(state, local, direction, from_local=True)


def on_cloud_update(state: SyncState, cloud: SyncDocument | None, direction: SyncDirection = BETWEEN) -> SyncPlan:
    """The local update (or delete) to forward after the cloud shadow changed; None cloud = it was deleted."""
    return _forward(state, cloud, direction, from_local=False)
