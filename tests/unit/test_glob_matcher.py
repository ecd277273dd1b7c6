"""Policy globs without regexes: `*`-only patterns match exactly as the regex reading of the glob would."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.identity.authorizer import _Matcher

ALPHABET = "ab/*?$+#"


def reference(pattern: str, text: str) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@given(pattern=st.text(alphabet=ALPHABET, max_size=8), text=st.text(alphabet="ab/*?$+#", max_size=10))
def test_a_glob_matches_as_its_regex_reading(pattern: str, text: str) -> None:
    assert _Matcher([[(False, pattern)]])(text) == reference(pattern, text)


@given(
    prefix=st.text(alphabet="ab/*", max_size=4),
    value=st.text(alphabet="ab*?", max_size=4),
    text=st.text(alphabet="ab/*?", max_size=10),
)
def test_substituted_variable_values_are_literal_even_with_wildcard_characters(
    prefix: str, value: str, text: str
) -> None:
    pieces = [(False, prefix), (True, value), (False, "/*")]
    escaped = "".join(re.escape(ch) if ch not in "*" else ".*" for ch in prefix) + re.escape(value) + "/.*"
    assert _Matcher([pieces])(text) == (re.fullmatch(escaped, text, re.DOTALL) is not None)


def test_actions_ignore_case_and_star_alone_matches_everything() -> None:
    actions = _Matcher([[(False, "iot:publish")], [(False, "iot:sub*")]], ignore_case=True)
    assert actions("IOT:Publish") and actions("iot:SUBSCRIBE") and not actions("iot:Receive")
    assert _Matcher([[(False, "*")]])("anything/at/all")
    assert not _Matcher([])("x")
