"""Greengrass shadow sync core: config, three-way reconcile per direction (reference §11.4), real-time forwarding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge.shadow_sync import (
    ShadowSyncError,
    SyncConfigError,
    SyncDirection,
    SyncDocument,
    SyncPlan,
    SyncState,
    on_cloud_update,
    on_local_update,
    parse_sync_config,
    reconcile,
    shadows_to_sync,
)
from gateway.shadow.document import ShadowState, apply_update, delete, update_request_from_json

BETWEEN = SyncDirection.BETWEEN_DEVICE_AND_CLOUD
D2C = SyncDirection.DEVICE_TO_CLOUD
C2D = SyncDirection.CLOUD_TO_DEVICE
T0 = 1_700_000_000


def _doc(state: dict[str, Any] | None, version: int = 1) -> SyncDocument | None:
    if state is None:
        return None
    return SyncDocument(version=version, desired=state.get("desired", {}), reported=state.get("reported", {}))


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # keeps 1 and True apart, which == does not


def _shadow(state: dict[str, Any] | None) -> ShadowState | None:
    if state is None:
        return None
    return apply_update(None, update_request_from_json({"state": state}), T0).shadow


def _apply(shadow: ShadowState | None, body: dict[str, Any] | None, remove: bool, now: int) -> ShadowState | None:
    """Apply a plan step the way the shadow service would: through the project's own merge."""
    if remove:
        assert shadow is not None and shadow.exists, "a plan deleted a shadow that does not exist"
        return delete(shadow, None, now, thing_name="thing")[0]
    if body is None:
        return shadow
    return apply_update(shadow, update_request_from_json(body), now).shadow


def _state(shadow: ShadowState | None) -> dict[str, Any] | None:
    return None if shadow is None or shadow.deleted else shadow.state


def _run(
    base: dict[str, Any] | None,
    local: dict[str, Any] | None,
    cloud: dict[str, Any] | None,
    direction: SyncDirection = BETWEEN,
) -> SyncPlan:
    return reconcile(_doc(local, 4), _doc(cloud, 7), SyncState(base=base, local_version=3, cloud_version=6), direction)


# --- reconcile: field-level tables ----------------------------------------------------------------

B: dict[str, Any] = {"desired": {"color": "red", "power": "on"}, "reported": {"color": "red", "temp": 20}}

FIELD_CASES: list[tuple[str, SyncDirection, Any, Any, Any, Any, Any]] = [
    # (id, direction, base, local, cloud, expected local update, expected cloud update)
    ("in-sync", BETWEEN, B, B, B, None, None),
    (
        "desired-conflict-cloud-wins",
        BETWEEN,
        B,
        {**B, "desired": {"color": "blue", "power": "on"}},
        {**B, "desired": {"color": "green", "power": "on"}},
        {"state": {"desired": {"color": "green"}}},
        None,
    ),
    (
        "reported-conflict-local-wins",
        BETWEEN,
        B,
        {**B, "reported": {"color": "red", "temp": 21}},
        {**B, "reported": {"color": "red", "temp": 25}},
        None,
        {"state": {"reported": {"temp": 21}}},
    ),
    (
        "one-sided-changes-flow-both-ways",
        BETWEEN,
        B,
        {**B, "reported": {"color": "red", "temp": 22}},
        {**B, "desired": {"color": "red", "power": "off"}},
        {"state": {"desired": {"power": "off"}}},
        {"state": {"reported": {"temp": 22}}},
    ),
    (
        "nested-different-fields-merge",
        BETWEEN,
        {"desired": {"lights": {"r": 0, "g": 0, "b": 0}}},
        {"desired": {"lights": {"r": 255, "g": 0, "b": 0}}},
        {"desired": {"lights": {"r": 0, "g": 255, "b": 0}}},
        {"state": {"desired": {"lights": {"g": 255}}}},
        {"state": {"desired": {"lights": {"r": 255}}}},
    ),
    (
        "nested-same-leaf-conflict",
        BETWEEN,
        {"desired": {"lights": {"r": 0, "g": 0}}, "reported": {"lights": {"r": 0}}},
        {"desired": {"lights": {"r": 1, "g": 0}}, "reported": {"lights": {"r": 1}}},
        {"desired": {"lights": {"r": 2, "g": 0}}, "reported": {"lights": {"r": 2}}},
        {"state": {"desired": {"lights": {"r": 2}}}},
        {"state": {"reported": {"lights": {"r": 1}}}},
    ),
    (
        "arrays-are-leaves",
        BETWEEN,
        {"desired": {"modes": ["eco", "night"]}, "reported": {"modes": ["eco", "night"]}},
        {"desired": {"modes": ["eco", "night", "away"]}, "reported": {"modes": ["eco"]}},
        {"desired": {"modes": ["night"]}, "reported": {"modes": ["eco", "day"]}},
        {"state": {"desired": {"modes": ["night"]}}},
        {"state": {"reported": {"modes": ["eco"]}}},
    ),
    (
        "deleted-key-propagates-as-null",
        BETWEEN,
        B,
        {**B, "desired": {"color": "red"}},
        B,
        None,
        {"state": {"desired": {"power": None}}},
    ),
    (
        "cleared-section-propagates-as-null-leaves",
        BETWEEN,
        B,
        B,
        {"desired": B["desired"]},
        {"state": {"reported": {"color": None, "temp": None}}},
        None,
    ),
    (
        "delete-vs-edit-in-desired-cloud-edit-wins",
        BETWEEN,
        B,
        {**B, "desired": {"color": "red"}},
        {**B, "desired": {"color": "red", "power": "off"}},
        {"state": {"desired": {"power": "off"}}},
        None,
    ),
    (
        "delete-vs-edit-in-reported-local-delete-wins",
        BETWEEN,
        B,
        {**B, "reported": {"color": "red"}},
        {**B, "reported": {"color": "red", "temp": 30}},
        None,
        {"state": {"reported": {"temp": None}}},
    ),
    (
        "both-made-the-same-change",
        BETWEEN,
        B,
        {**B, "desired": {"color": "blue", "power": "on"}},
        {**B, "desired": {"color": "blue", "power": "on"}},
        None,
        None,
    ),
    (
        "object-replaced-by-scalar-on-one-side",
        BETWEEN,
        {"reported": {"gps": {"lat": 1, "lon": 2}}},
        {"reported": {"gps": "off"}},
        {"reported": {"gps": {"lat": 1, "lon": 2}}},
        None,
        {"state": {"reported": {"gps": "off"}}},
    ),
    (
        "first-sync-without-base-uses-the-conflict-rules",
        BETWEEN,
        None,
        {"desired": {"color": "blue"}, "reported": {"temp": 1, "fan": 2}},
        {"desired": {"color": "green", "power": "on"}, "reported": {"temp": 9}},
        {"state": {"desired": {"color": "green", "power": "on"}}},
        {"state": {"reported": {"temp": 1, "fan": 2}}},
    ),
    (
        "numbers-compare-by-value",
        BETWEEN,
        {"reported": {"level": 1}},
        {"reported": {"level": 1.0}},
        {"reported": {"level": 1}},
        None,
        None,
    ),
    (
        "bool-is-not-a-number",
        BETWEEN,
        {"reported": {"on": 1}},
        {"reported": {"on": True}},
        {"reported": {"on": 1}},
        None,
        {"state": {"reported": {"on": True}}},
    ),
    (
        "d2c-local-wins-desired-conflict-too",
        D2C,
        B,
        {**B, "desired": {"color": "blue", "power": "on"}},
        {**B, "desired": {"color": "green", "power": "on"}},
        None,
        {"state": {"desired": {"color": "blue"}}},
    ),
    (
        "d2c-cloud-only-change-stays-in-cloud-and-does-not-flow",
        D2C,
        B,
        {**B, "reported": {"color": "red", "temp": 22}},
        {**B, "desired": {"color": "red", "power": "off"}},
        None,
        {"state": {"reported": {"temp": 22}}},
    ),
    (
        "c2d-cloud-wins-reported-conflict-too",
        C2D,
        B,
        {**B, "reported": {"color": "red", "temp": 21}},
        {**B, "reported": {"color": "red", "temp": 25}},
        {"state": {"reported": {"temp": 25}}},
        None,
    ),
    (
        "c2d-local-only-change-is-not-sent",
        C2D,
        B,
        {**B, "reported": {"color": "red", "temp": 22}},
        {**B, "desired": {"color": "red", "power": "off"}},
        {"state": {"desired": {"power": "off"}}},
        None,
    ),
]


@pytest.mark.parametrize(
    ("direction", "base", "local", "cloud", "want_local", "want_cloud"),
    [case[1:] for case in FIELD_CASES],
    ids=[case[0] for case in FIELD_CASES],
)
def test_reconcile_fields(
    direction: SyncDirection, base: Any, local: Any, cloud: Any, want_local: Any, want_cloud: Any
) -> None:
    plan = _run(base, local, cloud, direction)
    assert (plan.local_update, plan.cloud_update) == (want_local, want_cloud)
    assert not plan.delete_local and not plan.delete_cloud
    assert plan.new_state.local_version == 4 and plan.new_state.cloud_version == 7
    assert plan.empty is (want_local is None and want_cloud is None)


def test_new_base_is_the_agreed_state() -> None:
    local = {**B, "desired": {"color": "blue", "power": "on"}}
    plan = _run(B, local, B)
    assert plan.new_state.base == local
    # Both sides made the same change: nothing to send, but the base moves on.
    assert _run(B, local, local).new_state.base == local


# --- reconcile: whole-shadow deletion -------------------------------------------------------------

EDITED = {**B, "desired": {"color": "blue", "power": "on"}}
DELETE_CASES: list[tuple[str, SyncDirection, Any, Any, Any, str, Any]] = [
    # (id, direction, base, local, cloud, expected action, expected new base)
    ("between-local-deleted-cloud-unchanged", BETWEEN, B, None, B, "delete_cloud", None),
    ("between-cloud-deleted-local-unchanged", BETWEEN, B, B, None, "delete_local", None),
    ("between-local-deleted-cloud-edited-edit-wins", BETWEEN, B, None, EDITED, "create_local", EDITED),
    ("between-cloud-deleted-local-edited-edit-wins", BETWEEN, B, EDITED, None, "create_cloud", EDITED),
    ("between-never-synced-cloud-only", BETWEEN, None, None, B, "create_local", B),
    ("between-never-synced-local-only", BETWEEN, None, B, None, "create_cloud", B),
    ("between-both-deleted", BETWEEN, B, None, None, "none", None),
    ("d2c-local-deleted-beats-cloud-edit", D2C, B, None, EDITED, "delete_cloud", None),
    ("d2c-cloud-deleted-local-unchanged-stays-deleted", D2C, B, B, None, "none", B),
    ("d2c-cloud-deleted-local-edited-recreates", D2C, B, EDITED, None, "create_cloud", EDITED),
    ("d2c-never-synced-cloud-only-is-left-alone", D2C, None, None, B, "none", None),
    ("d2c-never-synced-local-only-is-created", D2C, None, B, None, "create_cloud", B),
    ("c2d-cloud-deleted-beats-local-edit", C2D, B, EDITED, None, "delete_local", None),
    ("c2d-local-deleted-cloud-unchanged-stays-deleted", C2D, B, None, B, "none", B),
    ("c2d-never-synced-cloud-only-is-created", C2D, None, None, B, "create_local", B),
]


@pytest.mark.parametrize(
    ("direction", "base", "local", "cloud", "action", "new_base"),
    [case[1:] for case in DELETE_CASES],
    ids=[case[0] for case in DELETE_CASES],
)
def test_reconcile_deleted_shadows(
    direction: SyncDirection, base: Any, local: Any, cloud: Any, action: str, new_base: Any
) -> None:
    plan = _run(base, local, cloud, direction)
    got = {
        "delete_cloud": plan.delete_cloud,
        "delete_local": plan.delete_local,
        "create_local": plan.local_update is not None,
        "create_cloud": plan.cloud_update is not None,
    }
    assert got == {name: name == action for name in got}
    if action == "create_local":
        assert plan.local_update == {"state": cloud}
    if action == "create_cloud":
        assert plan.cloud_update == {"state": local}
    assert plan.new_state.base == new_base
    # A delete keeps the last version seen: shadow versions survive deletion (reference §4.1).
    assert plan.new_state.local_version == (3 if local is None else 4)


def test_plan_bodies_are_valid_update_requests() -> None:
    local = {"desired": {"color": "red"}, "reported": {"temp": 21, "modes": ["a", "b"]}}
    cloud = {"desired": {**B["desired"], "mode": {"eco": True}}, "reported": B["reported"]}
    plan = _run(B, local, cloud)
    assert plan.local_update == {"state": {"desired": {"mode": {"eco": True}}}}
    assert plan.cloud_update == {
        "state": {"desired": {"power": None}, "reported": {"color": None, "temp": 21, "modes": ["a", "b"]}}
    }
    for body in (plan.local_update, plan.cloud_update):
        update_request_from_json(body)  # raises ShadowRejected if the service would refuse it


# --- hypothesis: convergence, idempotence, direction ----------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])
LEAVES = st.one_of(
    st.integers(0, 2), st.booleans(), st.sampled_from(["x", "y"]), st.lists(st.integers(0, 2), max_size=2)
)
VALUES = st.recursive(LEAVES, lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=3), max_leaves=6)
PATCH_VALUES = st.one_of(st.none(), VALUES)
SECTION_PATCH = st.dictionaries(KEYS, PATCH_VALUES, max_size=3)
STATE_PATCH = st.fixed_dictionaries({}, optional={"desired": SECTION_PATCH, "reported": SECTION_PATCH})


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ShadowState | None, ShadowState | None, SyncState]:
    """A base both sides once agreed on, then independent (possibly conflicting) edits or deletions on each side."""
    base = _shadow(draw(STATE_PATCH)) if draw(st.booleans()) else None
    sides: list[ShadowState | None] = []
    for _ in range(2):
        choice = draw(st.sampled_from(["same", "edit", "edit", "gone", "fresh"]))
        if choice == "gone" or (choice != "fresh" and base is None and draw(st.booleans())):
            sides.append(None)
        elif choice == "fresh" or base is None:
            sides.append(_shadow(draw(STATE_PATCH)))
        elif choice == "same":
            sides.append(base)
        else:
            sides.append(apply_update(base, update_request_from_json({"state": draw(STATE_PATCH)}), T0 + 1).shadow)
    return sides[0], sides[1], SyncState(base=_state(base))


def _apply_plan(
    local: ShadowState | None, cloud: ShadowState | None, plan: SyncPlan
) -> tuple[ShadowState | None, ShadowState | None]:
    return (
        _apply(local, plan.local_update, plan.delete_local, T0 + 2),
        _apply(cloud, plan.cloud_update, plan.delete_cloud, T0 + 2),
    )


def _check_idempotent(local: ShadowState | None, cloud: ShadowState | None, plan: SyncPlan, d: SyncDirection) -> None:
    new_local, new_cloud = _apply_plan(local, cloud, plan)
    again = reconcile(SyncDocument.from_shadow(new_local), SyncDocument.from_shadow(new_cloud), plan.new_state, d)
    assert again.empty, again
    assert _canon(again.new_state.base) == _canon(plan.new_state.base)


@settings(max_examples=50, deadline=None)
@given(scenarios())
def test_bidirectional_sides_converge_and_reconcile_is_idempotent(
    scenario: tuple[ShadowState | None, ShadowState | None, SyncState],
) -> None:
    local, cloud, state = scenario
    plan = reconcile(SyncDocument.from_shadow(local), SyncDocument.from_shadow(cloud), state, BETWEEN)
    new_local, new_cloud = _apply_plan(local, cloud, plan)
    assert _canon(_state(new_local)) == _canon(_state(new_cloud))
    assert _canon(plan.new_state.base) == _canon(_state(new_local))
    _check_idempotent(local, cloud, plan, BETWEEN)


@settings(max_examples=50, deadline=None)
@given(scenarios(), st.sampled_from([D2C, C2D]))
def test_one_way_plans_never_write_the_source(
    scenario: tuple[ShadowState | None, ShadowState | None, SyncState], direction: SyncDirection
) -> None:
    local, cloud, state = scenario
    plan = reconcile(SyncDocument.from_shadow(local), SyncDocument.from_shadow(cloud), state, direction)
    if direction is D2C:
        assert plan.local_update is None and not plan.delete_local
    else:
        assert plan.cloud_update is None and not plan.delete_cloud
    _check_idempotent(local, cloud, plan, direction)


@settings(max_examples=50, deadline=None)
@given(scenarios(), st.sampled_from([D2C, C2D]))
def test_one_way_source_wins_every_field_it_holds(
    scenario: tuple[ShadowState | None, ShadowState | None, SyncState], direction: SyncDirection
) -> None:
    local, cloud, state = scenario
    plan = reconcile(SyncDocument.from_shadow(local), SyncDocument.from_shadow(cloud), state, direction)
    new_local, new_cloud = _apply_plan(local, cloud, plan)
    source, dest = (new_local, new_cloud) if direction is D2C else (new_cloud, new_local)
    if source is None or dest is None:
        return
    # Every change the source made since base (what real-time sync would forward) already holds on the destination.
    handler = on_local_update if direction is D2C else on_cloud_update
    update, remove = _sent(handler(SyncState(base=state.base), SyncDocument.from_shadow(source), direction), direction)
    assert not remove
    assert _canon(_state(_apply(dest, update, False, T0 + 3))) == _canon(_state(dest))


# --- real-time forwarding -------------------------------------------------------------------------


def _sent(plan: SyncPlan, direction: SyncDirection) -> tuple[dict[str, Any] | None, bool]:
    """What a real-time plan sends: to the cloud for a local change (D2C), to the local shadow otherwise (C2D)."""
    if direction is D2C:
        assert plan.local_update is None and not plan.delete_local, "a local change must never be sent back locally"
        return plan.cloud_update, plan.delete_cloud
    assert plan.cloud_update is None and not plan.delete_cloud, "a cloud change must never be sent back to the cloud"
    return plan.local_update, plan.delete_local


def test_local_update_forwards_only_what_changed_since_base() -> None:
    state = SyncState(base=B, local_version=3, cloud_version=6)
    local = {**B, "reported": {"color": "red", "temp": 22}}
    plan = on_local_update(state, _doc(local, version=4))
    assert _sent(plan, D2C) == ({"state": {"reported": {"temp": 22}}}, False)
    assert plan.new_state == SyncState(base=local, local_version=4, cloud_version=6)
    # The cloud echoes the change back: nothing more to forward, so no ping-pong.
    echo = on_cloud_update(plan.new_state, _doc(local, version=7))
    assert echo.empty and echo.new_state == SyncState(base=local, local_version=4, cloud_version=7)


def test_stale_or_seen_versions_are_ignored() -> None:
    state = SyncState(base=B, local_version=5, cloud_version=6)
    for version in (4, 5):
        assert on_local_update(state, _doc(EDITED, version=version)) == SyncPlan(new_state=state)
    assert on_cloud_update(state, _doc(EDITED, version=6)) == SyncPlan(new_state=state)
    assert not on_cloud_update(state, _doc(EDITED, version=7)).empty


@pytest.mark.parametrize(
    ("direction", "from_local", "forwards"),
    [
        (BETWEEN, True, True),
        (BETWEEN, False, True),
        (D2C, True, True),
        (D2C, False, False),
        (C2D, True, False),
        (C2D, False, True),
    ],
)
def test_real_time_respects_direction(direction: SyncDirection, from_local: bool, forwards: bool) -> None:
    state = SyncState(base=B, local_version=1, cloud_version=1)
    handler = on_local_update if from_local else on_cloud_update
    plan = handler(state, _doc(EDITED, version=2), direction)
    update, remove = _sent(plan, D2C if from_local else C2D)
    assert (update == {"state": {"desired": {"color": "blue"}}}) is forwards and not remove
    assert plan.empty is not forwards
    assert (plan.new_state.local_version if from_local else plan.new_state.cloud_version) == 2
    assert plan.new_state.base == (EDITED if forwards else B)


def test_real_time_deletion_and_creation() -> None:
    synced = SyncState(base=B, local_version=2, cloud_version=2)
    gone = on_cloud_update(synced, None)
    assert _sent(gone, C2D) == (None, True)
    assert gone.new_state == SyncState(local_version=2, cloud_version=2)  # versions survive deletion
    assert on_local_update(gone.new_state, None).empty  # the echo of the forwarded delete
    assert on_local_update(SyncState(), None).empty  # never synced: nothing to delete
    created = on_local_update(SyncState(), _doc({"desired": {"x": 1}}))
    assert _sent(created, D2C) == ({"state": {"desired": {"x": 1}}}, False)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.none(), STATE_PATCH), st.one_of(st.none(), STATE_PATCH), st.booleans())
def test_real_time_round_trip_keeps_sides_equal(start: Any, patch: Any, from_local: bool) -> None:
    """Both sides start equal; one changes (or deletes) its shadow; forwarding makes them equal, and the echo stops."""
    a, b = _shadow(start), _shadow(start)
    state = SyncState(base=_state(a), local_version=1 if a else None, cloud_version=1 if b else None)
    a = _apply(a, None if patch is None else {"state": patch}, patch is None and a is not None, T0 + 1)
    handler, echo_handler = (on_local_update, on_cloud_update) if from_local else (on_cloud_update, on_local_update)
    plan = handler(state, SyncDocument.from_shadow(a))
    b = _apply(b, *_sent(plan, D2C if from_local else C2D), T0 + 2)
    assert _canon(_state(a)) == _canon(_state(b))
    assert echo_handler(plan.new_state, SyncDocument.from_shadow(b)).empty


# --- documents and persisted state ----------------------------------------------------------------


def test_document_from_get_accepted_ignores_delta_and_empty_objects() -> None:
    doc = SyncDocument.from_document(
        {"state": {"desired": {"a": 1, "e": {}}, "delta": {"a": 1}}, "metadata": {}, "version": 3, "timestamp": T0}
    )
    assert doc.version == 3 and doc.state == {"desired": {"a": 1}}
    assert SyncDocument.from_shadow(delete(_shadow(B), None, T0, thing_name="t")[0]) is None


@pytest.mark.parametrize("bad", [{"state": {}}, {"state": [], "version": 1}, {"state": {"desired": 3}, "version": 1}])
def test_document_rejects_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(ShadowSyncError):
        SyncDocument.from_document(bad)


def test_sync_state_round_trips_through_json() -> None:
    state = SyncState(base={"desired": {"a": [1, 2]}, "reported": {"b": {"c": "x"}}}, local_version=4, cloud_version=9)
    assert SyncState.from_json(state.to_json()) == state
    assert SyncState.from_json(SyncState().to_json()) == SyncState()
    assert json.loads(state.to_json())["cloudVersion"] == 9


@pytest.mark.parametrize(
    "bad", ["not json", "[]", '{"base": {"delta": {}}}', '{"base": {"desired": 1}}', '{"localVersion": true}', b"\xff"]
)
def test_sync_state_rejects_damaged_json(bad: str | bytes) -> None:
    with pytest.raises(ShadowSyncError):
        SyncState.from_json(bad)


# --- configuration --------------------------------------------------------------------------------

DOC_EXAMPLE = {
    "strategy": {"type": "realTime"},
    "synchronize": {
        "coreThing": {"classic": True, "namedShadows": ["MyCoreShadow"]},
        "shadowDocuments": [
            {"thingName": "MyDevice1", "classic": False, "namedShadows": ["MyShadowA", "MyShadowB"]},
            {"thingName": "MyDevice2", "classic": True, "namedShadows": []},
        ],
        "direction": "betweenDeviceAndCloud",
    },
    "rateLimits": {"maxOutboundSyncUpdatesPerSecond": 50},
}


def test_documented_example_lists_its_shadows() -> None:
    config = parse_sync_config(DOC_EXAMPLE)
    assert config.synchronize.direction is BETWEEN and config.strategy.type == "realTime"
    assert shadows_to_sync(config, "MyCore") == (
        ("MyCore", None),
        ("MyCore", "MyCoreShadow"),
        ("MyDevice1", "MyShadowA"),
        ("MyDevice1", "MyShadowB"),
        ("MyDevice2", None),
    )


def test_defaults_dedupe_and_map_form() -> None:
    config = parse_sync_config(
        {
            "strategy": {"type": "periodic", "delay": 300},
            "synchronize": {
                "coreThing": {},
                "shadowDocuments": [{"thingName": "Dev"}, {"thingName": "Dev", "namedShadows": ["s"]}],
                "shadowDocumentsMap": {"Core": {"namedShadows": ["s"]}, "Other": {"classic": False}},
                "direction": "cloudToDevice",
            },
        }
    )
    assert config.synchronize.direction is C2D and config.strategy.delay == 300
    assert shadows_to_sync(config, "Core") == (("Core", None), ("Dev", None), ("Dev", "s"), ("Core", "s"))
    assert shadows_to_sync(parse_sync_config({}), "Core") == ()


CONFIG_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    (
        {"synchronize": {"direction": "both"}},
        "synchronize.direction",
        "Value 'both' at 'synchronize.direction' failed to satisfy constraint: Member must satisfy enum value set: "
        "[betweenDeviceAndCloud, deviceToCloud, cloudToDevice]",
    ),
    (
        {"synchronize": {"shadowDocuments": [{"thingName": "ok"}, {"thingName": "bad name"}]}},
        "synchronize.shadowDocuments[1].thingName",
        "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+",
    ),
    (
        {"synchronize": {"shadowDocuments": [{"classic": True}]}},
        "synchronize.shadowDocuments[0].thingName",
        "Value null at 'synchronize.shadowDocuments[0].thingName' failed to satisfy constraint: "
        "Member must not be null",
    ),
    (
        {"synchronize": {"coreThing": {"namedShadows": ["x" * 65]}}},
        "synchronize.coreThing.namedShadows[0]",
        "Member must have length less than or equal to 64",
    ),
    (
        {"synchronize": {"coreThing": {"namedShadows": [""]}}},
        "synchronize.coreThing.namedShadows[0]",
        "Member must have length greater than or equal to 1",
    ),
    (
        {"synchronize": {"coreThing": {"classic": "yes"}}},
        "synchronize.coreThing.classic",
        "Value 'yes' at 'synchronize.coreThing.classic'",
    ),
    (
        {"synchronize": {"coreThing": {"namedShadow": ["a"]}}},
        "synchronize.coreThing.namedShadow",
        "Member is not a recognised field",
    ),
    (
        {"strategy": {"type": "periodic"}},
        "strategy.delay",
        "Value null at 'strategy.delay' failed to satisfy constraint: Member must not be null when type is periodic",
    ),
    ({"strategy": {"type": "periodic", "delay": 0}}, "strategy.delay", "greater than or equal to 1"),
    (
        {"strategy": {"type": "sometimes"}},
        "strategy.type",
        "Member must satisfy enum value set: [realTime, periodic]",
    ),
]


@pytest.mark.parametrize(("raw", "path", "message"), CONFIG_ERRORS, ids=[case[1] for case in CONFIG_ERRORS])
def test_config_errors_name_the_field(raw: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SyncConfigError) as info:
        parse_sync_config(raw)
    assert info.value.paths == (path,)
    assert str(info.value).startswith("1 validation error detected: ")
    assert message in str(info.value)


def test_config_reports_every_error() -> None:
    with pytest.raises(SyncConfigError) as info:
        parse_sync_config({"synchronize": {"direction": "x", "shadowDocuments": [{}]}})
    assert str(info.value).startswith("2 validation errors detected: ")
    assert set(info.value.paths) == {"synchronize.direction", "synchronize.shadowDocuments[0].thingName"}
