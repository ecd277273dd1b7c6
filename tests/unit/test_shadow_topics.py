"""Shadow topic parsing and formatting for classic and named shadows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.shadow import ShadowTopic, parse_shadow_topic, response_topic, shadow_prefix
from gateway.shadow.topics import SUFFIXES, is_valid_shadow_name, is_valid_thing_name


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("$aws/things/lamp/shadow/update", ShadowTopic("lamp", None, "update")),
        ("$aws/things/lamp/shadow/get", ShadowTopic("lamp", None, "get")),
        ("$aws/things/lamp/shadow/delete", ShadowTopic("lamp", None, "delete")),
        ("$aws/things/lamp/shadow/update/accepted", ShadowTopic("lamp", None, "update", "accepted")),
        ("$aws/things/lamp/shadow/update/rejected", ShadowTopic("lamp", None, "update", "rejected")),
        ("$aws/things/lamp/shadow/update/delta", ShadowTopic("lamp", None, "update", "delta")),
        ("$aws/things/lamp/shadow/update/documents", ShadowTopic("lamp", None, "update", "documents")),
        ("$aws/things/lamp/shadow/get/accepted", ShadowTopic("lamp", None, "get", "accepted")),
        ("$aws/things/lamp/shadow/delete/rejected", ShadowTopic("lamp", None, "delete", "rejected")),
        ("$aws/things/lamp/shadow/name/config/update", ShadowTopic("lamp", "config", "update")),
        ("$aws/things/lamp/shadow/name/config/get/accepted", ShadowTopic("lamp", "config", "get", "accepted")),
        ("$aws/things/lamp/shadow/name/config/update/delta", ShadowTopic("lamp", "config", "update", "delta")),
        ("$aws/things/a:b_c-1/shadow/name/$x:y_z-9/delete", ShadowTopic("a:b_c-1", "$x:y_z-9", "delete")),
        # A shadow may be called like an operation or "name": the position decides.
        ("$aws/things/t/shadow/name/update/update", ShadowTopic("t", "update", "update")),
        ("$aws/things/t/shadow/name/name/get", ShadowTopic("t", "name", "get")),
        ("$aws/things/" + "t" * 128 + "/shadow/get", ShadowTopic("t" * 128, None, "get")),
        ("$aws/things/t/shadow/name/" + "s" * 64 + "/get", ShadowTopic("t", "s" * 64, "get")),
    ],
)
def test_parse_valid(topic: str, expected: ShadowTopic) -> None:
    parsed = parse_shadow_topic(topic)
    assert parsed == expected
    assert parsed.topic == topic
    assert parsed.is_request == (parsed.suffix is None)
    assert response_topic(parsed.thing, parsed.shadow, parsed.operation, parsed.suffix) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "sensors/lamp/update",
        "$aws/things/lamp/shadow",
        "$aws/things/lamp/shadow/",
        "$aws/things/lamp/shadow/list",
        "$aws/things/lamp/shadow/update/",
        "$aws/things/lamp/shadow/update/other",
        "$aws/things/lamp/shadow/get/delta",
        "$aws/things/lamp/shadow/get/documents",
        "$aws/things/lamp/shadow/delete/delta",
        "$aws/things/lamp/shadow/update/accepted/extra",
        "$aws/things/lamp/shadows/update",
        "$aws/things/lamp/jobs/get",
        "$aws/things//shadow/update",
        "$aws/things/la mp/shadow/update",
        "$aws/things/la$mp/shadow/update",
        "$aws/things/lamp+/shadow/update",
        "$aws/things/+/shadow/update",
        "$aws/things/#",
        "$aws/things/" + "t" * 129 + "/shadow/get",
        "$aws/things/lamp/shadow/name/update",
        "$aws/things/lamp/shadow/name//update",
        "$aws/things/lamp/shadow/name/bad name/update",
        "$aws/things/lamp/shadow/name/" + "s" * 65 + "/get",
        "$aws/things/lamp/shadow/name/cfg/update/accepted/x",
        "$aws/things/lamp/shadow/name/cfg",
        "$AWS/things/lamp/shadow/update",
        "$aws/things/lämp/shadow/update",
        "",
    ],
)
def test_parse_rejects_non_shadow_and_invalid_names(topic: str) -> None:
    assert parse_shadow_topic(topic) is None


def test_reply_topics() -> None:
    request = parse_shadow_topic("$aws/things/lamp/shadow/name/cfg/update")
    assert request is not None and request.is_request
    assert request.reply("accepted") == "$aws/things/lamp/shadow/name/cfg/update/accepted"
    assert request.reply("documents") == "$aws/things/lamp/shadow/name/cfg/update/documents"
    get = ShadowTopic("lamp", None, "get")
    assert get.reply("rejected") == "$aws/things/lamp/shadow/get/rejected"
    with pytest.raises(ValueError, match="no delta topic"):
        get.reply("delta")


def test_prefix() -> None:
    assert shadow_prefix("lamp", None) == "$aws/things/lamp/shadow"
    assert shadow_prefix("lamp", "cfg") == "$aws/things/lamp/shadow/name/cfg"


@pytest.mark.parametrize(
    ("thing", "shadow", "op", "suffix", "match"),
    [
        ("bad/thing", None, "get", None, "thing name"),
        ("", None, "get", None, "thing name"),
        ("lamp", "", "get", None, "shadow name"),
        ("lamp", "a/b", "get", None, "shadow name"),
        ("lamp", None, "list", None, "operation"),
        ("lamp", None, "delete", "documents", "no documents topic"),
    ],
)
def test_response_topic_rejects_invalid_input(
    thing: str, shadow: str | None, op: str, suffix: str | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        response_topic(thing, shadow, op, suffix)  # type: ignore[arg-type]


def test_name_validators() -> None:
    assert is_valid_thing_name("a:b_c-D9") and not is_valid_thing_name("$a")
    assert is_valid_shadow_name("$a:b_c-D9") and not is_valid_shadow_name("a.b")


THING_NAMES = st.text("abcXYZ019:_-", min_size=1, max_size=128)
SHADOW_NAMES = st.none() | st.text("$abcXYZ019:_-", min_size=1, max_size=64)
PAIRS = st.sampled_from([(op, s) for op, suffixes in SUFFIXES.items() for s in (None, *suffixes)])


@given(thing=THING_NAMES, shadow=SHADOW_NAMES, pair=PAIRS)
def test_format_then_parse_round_trips(thing: str, shadow: str | None, pair: tuple[str, str | None]) -> None:
    op, suffix = pair
    topic = response_topic(thing, shadow, op, suffix)  # type: ignore[arg-type]
    assert parse_shadow_topic(topic) == ShadowTopic(thing, shadow, op, suffix)  # type: ignore[arg-type]


@given(topic=st.text(max_size=60) | st.builds("$aws/things/{}".format, st.text("ab/$:_-+#", max_size=40)))
def test_parse_never_raises(topic: str) -> None:
    parsed = parse_shadow_topic(topic)
    assert parsed is None or parsed.topic == topic
