"""Topic names and topic filters as the MQTT specification shapes them (§4.7), with `$share/<name>/<filter>`.

Each check returns what is wrong (None when nothing is): callers turn that into their own error, a reason code, an
HTTP 400 or an exception. Length limits are a server's business, not the wire's: see gateway/topics.py.
"""

from __future__ import annotations

SHARE_PREFIX = "$share/"
MAX_SHARE_NAME_CHARS = 128


def shorten(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _encoding_error(kind: str, text: str) -> str | None:
    if "\x00" in text:
        return f"{kind} must not contain the NUL character: {shorten(text)}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{kind} is not valid UTF-8: {shorten(text)}"
    return None


def topic_name_error(topic: str) -> str | None:
    if not topic:
        return "Topic name must not be empty"
    if "+" in topic or "#" in topic:
        return f"Topic name must not contain the wildcards '+' or '#': {shorten(topic)}"
    return _encoding_error("Topic name", topic)


def split_shared_filter(topic_filter: str) -> tuple[str | None, str]:
    """`$share/<name>/<filter>` as (name, filter); any other filter as (None, filter). A malformed shared filter comes
    back unchanged with None (`topic_filter_error` is what rejects it)."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX) :]
    slash = rest.find("/")
    if slash <= 0 or slash == len(rest) - 1:
        return None, topic_filter
    return rest[:slash], rest[slash + 1 :]


def topic_filter_error(topic_filter: str) -> str | None:
    """What is structurally wrong with a subscription filter; the inner filter of a shared one is what is checked."""
    if not topic_filter:
        return "Topic filter must not be empty"
    inner = topic_filter
    if topic_filter.startswith(SHARE_PREFIX):
        rest = topic_filter[len(SHARE_PREFIX) :]
        slash = rest.find("/")
        name = rest if slash < 0 else rest[:slash]
        if not name:
            return f"Shared subscription needs a share name: {shorten(topic_filter)}"
        if "+" in name or "#" in name:
            return f"Share name must not contain '/', '+' or '#': {shorten(topic_filter)}"
        if len(name) > MAX_SHARE_NAME_CHARS:
            return f"Share name is {len(name)} characters; the maximum is {MAX_SHARE_NAME_CHARS}"
        inner = rest[slash + 1 :] if slash >= 0 else ""
        if not inner:
            return f"Shared subscription needs a topic filter after the share name: {shorten(topic_filter)}"
    levels = inner.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "+" in level and level != "+":
            return f"'+' must occupy a whole topic level: {shorten(topic_filter)}"
        if "#" in level and (level != "#" or i != last):
            return f"'#' is only allowed as the whole last topic level: {shorten(topic_filter)}"
    return _encoding_error("Topic filter", topic_filter)
