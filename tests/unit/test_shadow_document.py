"""Device Shadow document rules: the §12.1 vectors, edge cases, and hypothesis properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import AwsError, ConflictException, InvalidRequestException, ResourceNotFoundException
from gateway.shadow import (
    DEFAULT_LIMITS,
    ShadowLimits,
    ShadowRejected,
    ShadowState,
    UpdateResult,
    apply_update,
    compute_delta,
    delete,
    error_document,
    get_document,
    parse_get_or_delete,
    parse_update,
)

VECTORS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "shadow_vectors.json").read_text())[
    "vectors"
]
THING = "lamp"
T0 = 1_700_000_000


def _canon(value: Any) -> str:
    # json.dumps keeps 1 and 1.0 (and True and 1) apart, which == does not.
    return json.dumps(value, sort_keys=True)


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _update(current: ShadowState | None, doc: Any, now: int, limits: ShadowLimits = DEFAULT_LIMITS) -> UpdateResult:
    return apply_update(current, parse_update(_bytes(doc), limits), now, limits=limits)


def _reject(
    current: ShadowState | None, payload: bytes, now: int, limits: ShadowLimits = DEFAULT_LIMITS
) -> ShadowRejected:
    with pytest.raises(ShadowRejected) as info:
        apply_update(current, parse_update(payload, limits), now, limits=limits)
    return info.value


def _run(shadow: ShadowState | None, step: dict[str, Any]) -> tuple[ShadowState | None, dict[str, Any]]:
    payload = step["raw"].encode() if step.get("raw") is not None else _bytes(step["payload"])
    now = step["now"]
    try:
        if step["op"] == "get":
            token = parse_get_or_delete(payload)
            return shadow, {"get": get_document(shadow, token, now, thing_name=THING)}
        result = apply_update(shadow, parse_update(payload), now)
    except ShadowRejected as err:
        return shadow, {"rejected": error_document(err, None, now)}
    return result.shadow, {"accepted": result.accepted, "delta": result.delta, "documents": result.documents}


# --- §12.1 vectors --------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_reference_vector(vector: dict[str, Any]) -> None:
    shadow: ShadowState | None = None
    for step in vector["setup"]:
        shadow, out = _run(shadow, step)
        assert "rejected" not in out, out
    before = None if shadow is None else _canon(shadow.to_record())
    shadow, out = _run(shadow, vector)
    expect = vector["expect"]
    if "rejected" in expect:
        assert set(out) == {"rejected"}
        got, want = out["rejected"], dict(expect["rejected"])
        prefix = want.pop("message_startswith", None)
        if prefix is not None:
            assert got["message"].startswith(prefix)
        assert {k: got[k] for k in want} == want
        assert set(got) <= {"code", "message", "timestamp", "clientToken"}
        # A rejected request changes nothing.
        assert (None if shadow is None else _canon(shadow.to_record())) == before
    else:
        for key, want in expect.items():
            assert _canon(out[key]) == _canon(want), key
    if vector["stored"] is not None:
        assert shadow is not None
        assert _canon(shadow.state) == _canon(vector["stored"]["state"])
        assert shadow.version == vector["stored"]["version"]


def test_vectors_cover_s1_to_s14() -> None:
    ids = {v["id"].rstrip("ab") for v in VECTORS}
    assert ids == {f"S{i}" for i in range(1, 15)}


def test_invalid_node_names_the_node() -> None:
    err = _reject(None, b'{"state":{"desired":{"x":1},"delta":{"x":2}}}', T0)
    assert (err.code, err.message, err.path) == (400, "State contains an invalid node: 'delta'", "state.delta")


# --- clientToken ----------------------------------------------------------------------------------


def test_client_token_is_echoed_everywhere() -> None:
    first = _update(None, {"state": {"desired": {"a": 1}}, "clientToken": "t-1"}, T0)
    assert first.accepted["clientToken"] == "t-1"
    assert first.delta is not None and first.delta["clientToken"] == "t-1"
    assert first.documents["clientToken"] == "t-1"
    second = _update(first.shadow, {"state": {"reported": {"b": 2}}, "clientToken": "t-2"}, T0 + 1)
    assert second.delta is not None and second.delta["clientToken"] == "t-2"
    assert get_document(second.shadow, "g", T0 + 2, thing_name=THING)["clientToken"] == "g"
    _, deleted = delete(second.shadow, "d", T0 + 3, thing_name=THING)
    assert deleted == {"version": 2, "timestamp": T0 + 3, "clientToken": "d"}


def test_no_client_token_means_no_key() -> None:
    result = _update(None, {"state": {"desired": {"a": 1}}}, T0)
    assert "clientToken" not in result.accepted
    assert result.delta is not None and "clientToken" not in result.delta
    assert "clientToken" not in result.documents
    assert "clientToken" not in get_document(result.shadow, None, T0, thing_name=THING)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"state":{"bad":1},"clientToken":"c"}', "State contains an invalid node: 'bad'"),
        (b'{"state":{"desired":1},"clientToken":"c"}', "Desired node must be an object"),
        (b'{"state":{"desired":{"a":1}},"version":"1","clientToken":"c"}', "Invalid version"),
        (b'{"clientToken":"c"}', "Missing required node: state"),
        (b'{"state":{"desired":{"a":[null]}},"clientToken":"c"}', "Invalid JSON"),
    ],
)
def test_rejections_echo_client_token(payload: bytes, message: str) -> None:
    err = _reject(None, payload, T0)
    assert err.message == message
    assert error_document(err, None, T0) == {"code": 400, "message": message, "timestamp": T0, "clientToken": "c"}


def test_error_document_prefers_explicit_token() -> None:
    err = ShadowRejected(409, "Version conflict", client_token="from-request")
    assert error_document(err, "explicit", T0)["clientToken"] == "explicit"


def test_version_conflict_echoes_token_and_changes_nothing() -> None:
    shadow = _update(None, {"state": {"desired": {"a": 1}}}, T0).shadow
    shadow = _update(shadow, {"state": {"desired": {"a": 2}}, "version": 1}, T0 + 1).shadow
    before = _canon(shadow.to_record())
    err = _reject(shadow, b'{"state":{"desired":{"a":3}},"version":1,"clientToken":"stale"}', T0 + 2)
    assert (err.code, err.message, err.rest_error_type) == (409, "Version conflict", "ConflictException")
    assert isinstance(err.to_aws_error(), ConflictException)
    assert error_document(err, None, T0 + 2) == {
        "code": 409,
        "message": "Version conflict",
        "timestamp": T0 + 2,
        "clientToken": "stale",
    }
    assert _canon(shadow.to_record()) == before and shadow.version == 2
    assert _update(shadow, {"state": {"desired": {"a": 3}}, "version": 2}, T0 + 3).shadow.version == 3


def test_version_is_ignored_for_a_new_shadow() -> None:
    assert _update(None, {"state": {"desired": {"a": 1}}, "version": 7}, T0).shadow.version == 1


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b"not json", 400, "Invalid JSON"),
        (b"", 400, "Invalid JSON"),
        (b"[1]", 400, "Invalid JSON"),
        (b'"state"', 400, "Invalid JSON"),
        (b'{"state":{"desired":{"a":NaN}}}', 400, "Invalid JSON"),
        (b'{"state":{"desired":{"a":Infinity}}}', 400, "Invalid JSON"),
        (b"\xff\xfe{}", 415, "Unsupported documented encoding; supported encoding is UTF-8"),
        ('{"state":{}}'.encode("utf-16"), 415, "Unsupported documented encoding; supported encoding is UTF-8"),
        (b"{}", 400, "Missing required node: state"),
        (b'{"desired":{"a":1}}', 400, "Missing required node: state"),
        (b'{"state":[1]}', 400, "State node must be an object"),
        (b'{"state":{"desired":[1]}}', 400, "Desired node must be an object"),
        (b'{"state":{"reported":"on"}}', 400, "Reported node must be an object"),
        (b'{"state":{"delta":{}}}', 400, "State contains an invalid node: 'delta'"),
        (b'{"state":{"metadata":{}}}', 400, "State contains an invalid node: 'metadata'"),
        (b'{"state":{},"version":"3"}', 400, "Invalid version"),
        (b'{"state":{},"version":3.0}', 400, "Invalid version"),
        (b'{"state":{},"version":true}', 400, "Invalid version"),
        (b'{"state":{},"version":null}', 400, "Invalid version"),
        (b'{"state":{},"clientToken":7}', 400, "Invalid clientToken"),
        (b'{"state":{},"clientToken":"' + b"x" * 65 + b'"}', 400, "Invalid clientToken"),
        ('{"state":{},"clientToken":"' + "é" * 33 + '"}', 400, "Invalid clientToken"),
        (b'{"state":{"reported":{"a":[1,[2,null]]}}}', 400, "Invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "JSON contains too many levels of nesting; maximum is 6"),
    ],
)
def test_parse_update_rejections(payload: bytes | str, code: int, message: str) -> None:
    raw = payload.encode() if isinstance(payload, str) else payload
    with pytest.raises(ShadowRejected) as info:
        parse_update(raw)
    assert (info.value.code, info.value.message) == (code, message)


def test_client_token_of_64_bytes_is_fine() -> None:
    assert parse_update(_bytes({"state": {}, "clientToken": "é" * 32})).client_token == "é" * 32


def test_unknown_top_level_fields_are_ignored_and_not_echoed() -> None:
    doc = {"state": {"desired": {"a": 1}}, "metadata": {"x": 1}, "timestamp": 5, "extra": [None]}
    result = _update(None, doc, T0)
    assert set(result.accepted) == {"state", "metadata", "version", "timestamp"}
    assert result.accepted["metadata"] == {"desired": {"a": {"timestamp": T0}}}


@pytest.mark.parametrize(
    ("payload", "token"),
    [(b"", None), (b"  \n", None), (b"{}", None), (b'{"clientToken":"abc"}', "abc"), (b'{"other":1}', None)],
)
def test_parse_get_or_delete(payload: bytes, token: str | None) -> None:
    assert parse_get_or_delete(payload) == token


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"nope", "Invalid JSON"), (b"[]", "Invalid JSON"), (b'{"clientToken":1}', "Invalid clientToken")],
)
def test_parse_get_or_delete_rejections(payload: bytes, message: str) -> None:
    with pytest.raises(ShadowRejected) as info:
        parse_get_or_delete(payload)
    assert (info.value.code, info.value.message) == (400, message)


# --- limits ---------------------------------------------------------------------------------------


def test_depth_counts_state_as_level_one_and_arrays_as_levels() -> None:
    parse_update(b'{"state":{"desired":{"a":[[[[1]]]]}}}')  # state, desired and four arrays: 6 levels
    with pytest.raises(ShadowRejected) as info:
        parse_update(b'{"state":{"desired":{"a":[[[[[1]]]]]}}}')
    assert info.value.message == "JSON contains too many levels of nesting; maximum is 6"
    assert info.value.path == "state.desired.a[0][0][0][0]"


def test_depth_limit_is_configurable() -> None:
    limits = ShadowLimits(max_depth=3)
    parse_update(b'{"state":{"desired":{"a":{"b":1}}}}', limits)
    with pytest.raises(ShadowRejected) as info:
        parse_update(b'{"state":{"desired":{"a":{"b":{"c":1}}}}}', limits)
    assert info.value.message == "JSON contains too many levels of nesting; maximum is 3"


def _sized(n: int) -> dict[str, str]:
    # {"k":"xxx"} is n bytes of compact JSON.
    return {"k": "x" * (n - 8)}


def test_state_size_limit_counts_desired_plus_reported_after_merge() -> None:
    limits = ShadowLimits(max_state_bytes=100)
    shadow = _update(None, {"state": {"desired": _sized(60)}}, T0, limits).shadow
    req = parse_update(_bytes({"state": {"reported": _sized(41)}, "clientToken": "big"}), limits)
    with pytest.raises(ShadowRejected) as info:
        apply_update(shadow, req, T0 + 1, limits=limits)
    err = info.value
    assert (err.code, err.message) == (413, "The payload exceeds the maximum size allowed")
    assert err.rest_error_type == "RequestEntityTooLargeException"
    assert err.to_aws_error().http_status == 413
    assert error_document(err, None, T0)["clientToken"] == "big"
    assert _update(shadow, {"state": {"reported": _sized(40)}}, T0 + 1, limits).shadow.version == 2


def test_default_size_limit_is_8_kib_of_utf8() -> None:
    assert DEFAULT_LIMITS.max_state_bytes == 8192
    _update(None, {"state": {"desired": _sized(8192)}}, T0)
    big = parse_update(_bytes({"state": {"desired": {"k": "é" * 4093}}}))  # 8 + 2 * 4093 = 8194 bytes
    with pytest.raises(ShadowRejected):
        apply_update(None, big, T0)


def test_metadata_is_not_counted_toward_the_size() -> None:
    limits = ShadowLimits(max_state_bytes=40)
    many = {"state": {"reported": {"a": [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3]}}}  # 37 bytes, big metadata
    assert _update(None, many, T0, limits).shadow.version == 1


# --- merge and metadata ---------------------------------------------------------------------------


def test_untouched_leaves_keep_their_timestamps() -> None:
    s1 = _update(None, {"state": {"reported": {"a": 1, "n": {"x": 1, "y": 2}, "l": [1, 2]}}}, T0).shadow
    s2 = _update(s1, {"state": {"reported": {"n": {"y": 3}, "z": True}}}, T0 + 5).shadow
    assert s2.metadata == {
        "reported": {
            "a": {"timestamp": T0},
            "n": {"x": {"timestamp": T0}, "y": {"timestamp": T0 + 5}},
            "l": [{"timestamp": T0}, {"timestamp": T0}],
            "z": {"timestamp": T0 + 5},
        }
    }
    s3 = _update(s2, {"state": {"reported": {"l": ["only"], "n": "flat"}}}, T0 + 9).shadow
    assert s3.state["reported"] == {"a": 1, "n": "flat", "l": ["only"], "z": True}
    assert s3.metadata["reported"]["l"] == [{"timestamp": T0 + 9}]
    assert s3.metadata["reported"]["n"] == {"timestamp": T0 + 9}


def test_objects_emptied_by_nulls_collapse() -> None:
    s1 = _update(None, {"state": {"desired": {"a": {"b": 1}, "c": 2}}}, T0).shadow
    s2 = _update(s1, {"state": {"desired": {"a": {"b": None}}}}, T0 + 1).shadow
    assert s2.state == {"desired": {"c": 2}}
    assert s2.metadata == {"desired": {"c": {"timestamp": T0}}}
    s3 = _update(s2, {"state": {"desired": {"c": None}}}, T0 + 2).shadow
    assert s3.state == {} and s3.metadata == {} and s3.version == 3
    doc = get_document(s3, None, T0 + 3, thing_name=THING)
    assert doc == {"state": {}, "metadata": {}, "version": 3, "timestamp": T0 + 3}


def test_new_object_is_pruned_of_nulls() -> None:
    result = _update(None, {"state": {"desired": {"a": {"b": None, "c": {"d": None}}, "e": {"f": None, "g": 1}}}}, T0)
    assert result.shadow.state == {"desired": {"e": {"g": 1}}}
    assert result.accepted["metadata"]["desired"]["a"] == {"b": {"timestamp": T0}, "c": {"d": {"timestamp": T0}}}


def test_empty_objects_are_values_kept_in_desired_and_delta() -> None:
    first = _update(None, {"state": {"desired": {"a": 1, "b": {"c": 3}, "d": {}}}}, T0)
    assert first.shadow.state == {"desired": {"a": 1, "b": {"c": 3}, "d": {}}}
    assert first.accepted["state"] == {"desired": {"a": 1, "b": {"c": 3}, "d": {}}}
    assert first.delta is not None and first.delta["state"] == {"a": 1, "b": {"c": 3}, "d": {}}
    assert first.delta["metadata"]["d"] == {}
    # Replacing a scalar with {} keeps the empty object too.
    second = _update(first.shadow, {"state": {"desired": {"b": {"c": {}}}}}, T0 + 1)
    assert second.shadow.state == {"desired": {"a": 1, "b": {"c": {}}, "d": {}}}
    assert second.delta is not None and second.delta["state"] == {"a": 1, "b": {"c": {}}, "d": {}}
    doc = get_document(second.shadow, None, T0 + 2, thing_name=THING)
    assert doc["state"]["delta"] == {"a": 1, "b": {"c": {}}, "d": {}}
    # Reported {} matches desired {}; merging {} into an existing object changes nothing.
    third = _update(second.shadow, {"state": {"reported": {"a": 1, "b": {"c": {}}, "d": {"x": 1}}}}, T0 + 3)
    assert third.delta is None
    fourth = _update(third.shadow, {"state": {"reported": {"d": {}}, "desired": {}}}, T0 + 4).shadow
    assert fourth.state == third.shadow.state and fourth.version == third.shadow.version + 1


def test_objects_emptied_by_nulls_still_collapse_and_null_deletes() -> None:
    s1 = _update(None, {"state": {"desired": {"a": {"b": 1}, "c": {}}}}, T0).shadow
    s2 = _update(s1, {"state": {"desired": {"a": {"b": None}, "c": None}}}, T0 + 1).shadow
    assert s2.state == {}


def test_state_null_clears_the_whole_state() -> None:
    s1 = _update(None, {"state": {"desired": {"a": 1}, "reported": {"a": 2}}}, T0).shadow
    result = _update(s1, {"state": None, "clientToken": "t"}, T0 + 1)
    assert result.shadow.state == {} and result.shadow.metadata == {} and result.shadow.version == 2
    assert result.accepted == {
        "state": None,
        "metadata": {"timestamp": T0 + 1},
        "version": 2,
        "timestamp": T0 + 1,
        "clientToken": "t",
    }
    assert result.delta is None
    assert result.documents["current"]["state"] == {} and result.documents["previous"]["version"] == 1
    # The shadow still exists (AWS: a null state does not delete the shadow).
    assert get_document(result.shadow, None, T0 + 2, thing_name=THING)["version"] == 2
    # The optimistic lock still applies.
    with pytest.raises(ShadowRejected) as info:
        _update(result.shadow, {"state": None, "version": 1}, T0 + 3)
    assert info.value.code == 409


def test_arrays_are_replaced_whole() -> None:
    s1 = _update(None, {"state": {"reported": {"l": [{"a": 1}, 2, 3]}}}, T0).shadow
    s2 = _update(s1, {"state": {"reported": {"l": [{"b": 2}]}}}, T0 + 1).shadow
    assert s2.state == {"reported": {"l": [{"b": 2}]}}
    assert s2.metadata == {"reported": {"l": [{"b": {"timestamp": T0 + 1}}]}}


def test_documents_previous_and_current() -> None:
    first = _update(None, {"state": {"desired": {"a": 1}}}, T0)
    assert set(first.documents) == {"current", "timestamp"}
    second = _update(first.shadow, {"state": {"reported": {"a": 1}}, "clientToken": "c"}, T0 + 1)
    assert second.documents == {
        "previous": {"state": {"desired": {"a": 1}}, "metadata": {"desired": {"a": {"timestamp": T0}}}, "version": 1},
        "current": {
            "state": {"desired": {"a": 1}, "reported": {"a": 1}},
            "metadata": {"desired": {"a": {"timestamp": T0}}, "reported": {"a": {"timestamp": T0 + 1}}},
            "version": 2,
        },
        "timestamp": T0 + 1,
        "clientToken": "c",
    }
    assert "delta" not in second.documents["current"]["state"]


def test_reported_only_update_publishes_complete_nested_delta() -> None:
    s1 = _update(None, {"state": {"desired": {"n": {"x": 1, "y": 2}, "m": 5}}}, T0).shadow
    result = _update(s1, {"state": {"reported": {"n": {"x": 1}}}}, T0 + 1)
    assert result.delta == {
        "version": 2,
        "timestamp": T0 + 1,
        "state": {"n": {"y": 2}, "m": 5},
        "metadata": {"n": {"y": {"timestamp": T0}}, "m": {"timestamp": T0}},
    }
    synced = _update(result.shadow, {"state": {"reported": {"n": {"y": 2}, "m": 5.0}}}, T0 + 2)
    assert synced.delta is None


def test_get_includes_delta_when_not_empty() -> None:
    shadow = _update(None, {"state": {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}}}, T0).shadow
    doc = get_document(shadow, None, T0 + 1, thing_name=THING)
    assert doc["state"] == {"desired": {"a": 1, "b": 2}, "reported": {"a": 1}, "delta": {"b": 2}}
    assert set(doc["metadata"]) == {"desired", "reported"}
    assert "delta" not in shadow.state  # the stored state is not touched by the read


@pytest.mark.parametrize(
    ("desired", "reported", "delta"),
    [
        (None, {"a": 1}, None),
        ({}, None, None),
        ({"a": 1}, None, {"a": 1}),
        ({"a": 1}, {"a": 1.0}, None),
        ({"a": 1}, {"a": "1"}, {"a": 1}),
        ({"a": True}, {"a": 1}, {"a": True}),
        ({"a": 0}, {"a": False}, {"a": 0}),
        ({"a": None}, {"a": None}, None),
        ({"a": [1, True]}, {"a": [1.0, True]}, None),
        ({"a": [True]}, {"a": [1]}, {"a": [True]}),
        ({"a": [1, 2]}, {"a": [2, 1]}, {"a": [1, 2]}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": {"b": 1}}),
        ({"a": 5}, {"a": {"b": 1}}, {"a": 5}),
        ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}, {"a": {"b": {"d": 2}}}),
        ({"a": [{"x": 1}]}, {"a": [{"x": 1.0}]}, None),
        ({"a": 1}, {"a": 1, "b": 2}, None),
    ],
)
def test_compute_delta(desired: Any, reported: Any, delta: Any) -> None:
    assert _canon(compute_delta(desired, reported)) == _canon(delta)


# --- delete and the version sequence --------------------------------------------------------------


def test_delete_keeps_the_version_sequence() -> None:
    shadow = _update(None, {"state": {"desired": {"a": 1}}}, T0).shadow
    shadow = _update(shadow, {"state": {"desired": {"a": 2}}}, T0 + 1).shadow
    gone, payload = delete(shadow, None, T0 + 2, thing_name=THING)
    assert payload == {"version": 2, "timestamp": T0 + 2}
    assert gone.deleted and not gone.exists and gone.version == 2 and gone.state == {}
    with pytest.raises(ShadowRejected) as info:
        get_document(gone, "g", T0 + 3, thing_name=THING)
    assert (info.value.code, info.value.message) == (404, "No shadow exists with name: 'lamp'")
    assert info.value.rest_error_type == "ResourceNotFoundException"
    assert isinstance(info.value.to_aws_error(), ResourceNotFoundException)
    assert error_document(info.value, None, T0 + 3)["clientToken"] == "g"
    with pytest.raises(ShadowRejected):
        delete(gone, None, T0 + 3, thing_name=THING)
    # A stale version does not block re-creation: there is nothing to lock against.
    again = _update(gone, {"state": {"reported": {"b": 1}}, "version": 1}, T0 + 4)
    assert again.shadow.version == 3 and again.accepted["version"] == 3
    assert "previous" not in again.documents
    assert again.shadow.state == {"reported": {"b": 1}}
    assert again.shadow.created_s == T0 + 4


def test_version_restarts_after_the_retention_period() -> None:
    shadow = _update(None, {"state": {"desired": {"a": 1}}}, T0).shadow
    gone, _ = delete(shadow, None, T0 + 10, thing_name=THING)
    retention = DEFAULT_LIMITS.deleted_version_retention_s
    assert retention == 48 * 3600
    assert _update(gone, {"state": {"desired": {"a": 1}}}, T0 + 10 + retention - 1).shadow.version == 2
    assert _update(gone, {"state": {"desired": {"a": 1}}}, T0 + 10 + retention).shadow.version == 1


def test_missing_shadow_messages() -> None:
    with pytest.raises(ShadowRejected) as classic:
        get_document(None, None, T0, thing_name="lamp")
    assert classic.value.message == "No shadow exists with name: 'lamp'"
    with pytest.raises(ShadowRejected) as named:
        delete(None, "tok", T0, thing_name="lamp", shadow_name="config")
    assert named.value.message == "No shadow exists with name: 'config'"
    assert named.value.client_token == "tok"


# --- errors and records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "rest_type"),
    [
        (400, "InvalidRequestException"),
        (401, "UnauthorizedException"),
        (403, "ForbiddenException"),
        (404, "ResourceNotFoundException"),
        (409, "ConflictException"),
        (413, "RequestEntityTooLargeException"),
        (415, "UnsupportedDocumentEncodingException"),
        (429, "ThrottlingException"),
        (500, "InternalFailureException"),
    ],
)
def test_rest_error_types(code: int, rest_type: str) -> None:
    err = ShadowRejected(code, "m")
    aws = err.to_aws_error()
    assert err.rest_error_type == rest_type == aws.code
    assert isinstance(aws, AwsError) and aws.http_status == code == err.http_status and aws.message == "m"


def test_invalid_request_maps_to_the_shared_error_class() -> None:
    with pytest.raises(ShadowRejected) as info:
        parse_update(b"{}")
    assert isinstance(info.value.to_aws_error(), InvalidRequestException)
    assert str(info.value) == "400 Missing required node: state (at state)"


def test_record_round_trip() -> None:
    shadow = _update(None, {"state": {"desired": {"a": [1, {"b": 2.5}]}, "reported": {"c": "x"}}}, T0).shadow
    shadow = _update(shadow, {"state": {"reported": {"c": None, "d": False}}}, T0 + 1).shadow
    record = json.loads(json.dumps(shadow.to_record()))
    assert ShadowState.from_record(record) == shadow
    gone, _ = delete(shadow, None, T0 + 2, thing_name=THING)
    assert ShadowState.from_record(json.loads(json.dumps(gone.to_record()))) == gone


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"state": {}, "metadata": {}, "version": "1"},
        {"state": {}, "metadata": {}, "version": True},
        {"state": {"delta": {}}, "metadata": {}, "version": 1},
        {"state": {"desired": 1}, "metadata": {}, "version": 1},
        {"state": {}, "metadata": {}, "version": 1, "deleted": "no"},
    ],
)
def test_damaged_record_is_an_internal_failure(record: dict[str, Any]) -> None:
    with pytest.raises(ShadowRejected) as info:
        ShadowState.from_record(record)
    assert (info.value.code, info.value.message) == (500, "Internal service failure")


# --- properties -----------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False, allow_infinity=False).map(lambda f: round(f, 1)),
    st.sampled_from(["", "x", "1"]),
)


def _values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return SCALARS
    inner = _values(depth - 1)
    return st.one_of(
        SCALARS,
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, st.one_of(inner, st.none()), max_size=3),
    )


# state (1) + section (2) + up to four more levels stays within the depth limit of 6.
PATCHES = st.dictionaries(KEYS, st.one_of(_values(3), st.none()), max_size=4)
SECTION_PATCHES = st.fixed_dictionaries({}, optional={"desired": PATCHES, "reported": PATCHES})


def _build(patches: list[dict[str, Any]]) -> ShadowState | None:
    shadow: ShadowState | None = None
    for i, state in enumerate(patches):
        shadow = _update(shadow, {"state": state}, T0 + i).shadow
    return shadow


def _assert_mirrors(value: Any, meta: Any) -> None:
    if isinstance(value, dict):
        assert isinstance(meta, dict) and meta.keys() == value.keys()
        for key, item in value.items():
            _assert_mirrors(item, meta[key])
    elif isinstance(value, list):
        assert isinstance(meta, list) and len(meta) == len(value)
        for item, item_meta in zip(value, meta, strict=True):
            _assert_mirrors(item, item_meta)
    else:
        assert set(meta) == {"timestamp"}


@settings(max_examples=200, deadline=None)
@given(history=st.lists(SECTION_PATCHES, min_size=1, max_size=4))
def test_reporting_the_delta_empties_it(history: list[dict[str, Any]]) -> None:
    shadow = _build(history)
    assert shadow is not None
    delta = compute_delta(shadow.desired, shadow.reported)
    if delta is None:
        return
    result = _update(shadow, {"state": {"reported": delta}}, T0 + 100)
    assert result.delta is None
    assert compute_delta(result.shadow.desired, result.shadow.reported) is None


@settings(max_examples=200, deadline=None)
@given(history=st.lists(SECTION_PATCHES, min_size=1, max_size=4), patch=SECTION_PATCHES, offset=st.integers(1, 5))
def test_rejected_update_changes_nothing(history: list[dict[str, Any]], patch: dict[str, Any], offset: int) -> None:
    shadow = _build(history)
    assert shadow is not None
    before = _canon(shadow.to_record())
    request = parse_update(_bytes({"state": patch, "version": shadow.version + offset}))
    with pytest.raises(ShadowRejected) as info:
        apply_update(shadow, request, T0 + 100)
    assert info.value.code == 409
    request = parse_update(_bytes({"state": patch}))
    if apply_update(shadow, request, T0 + 100).shadow.state:
        with pytest.raises(ShadowRejected) as info:
            apply_update(shadow, request, T0 + 100, limits=ShadowLimits(max_state_bytes=0))
        assert info.value.code == 413
    assert _canon(shadow.to_record()) == before


@settings(max_examples=200, deadline=None)
@given(history=st.lists(SECTION_PATCHES, max_size=3), patch=SECTION_PATCHES)
def test_same_update_twice_only_bumps_the_version(history: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    shadow = _build(history)
    before = None if shadow is None else _canon(shadow.to_record())
    once = _update(shadow, {"state": patch}, T0 + 100)
    twice = _update(once.shadow, {"state": patch}, T0 + 100)
    assert _canon(twice.shadow.state) == _canon(once.shadow.state)
    assert _canon(twice.shadow.metadata) == _canon(once.shadow.metadata)
    assert twice.shadow.version == once.shadow.version + 1
    # The input shadow is never mutated, accepted or not.
    assert (None if shadow is None else _canon(shadow.to_record())) == before
    # Metadata mirrors the stored state leaf for leaf, and accepted echoes the request.
    _assert_mirrors(once.shadow.state, once.shadow.metadata)
    assert once.accepted["state"] == patch
    _assert_mirrors(patch, once.accepted["metadata"])
