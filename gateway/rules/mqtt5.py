"""A message's MQTT 5 properties as the rules SQL reads them: get_mqtt_property('format' | 'content_type' |
'response_topic' | 'correlation_data') and get_user_properties(key). Pure."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from mqttwire import properties as mp


def sql_properties(props: Mapping[int, Any] | None) -> tuple[dict[str, Any] | None, tuple[tuple[str, str], ...]]:
    """(the get_mqtt_property names, the user property pairs) of a message's properties."""
    if not props:
        return None, ()
    named: dict[str, Any] = {}
    if mp.PAYLOAD_FORMAT_INDICATOR in props:
        named["format"] = "UTF8_DATA" if props[mp.PAYLOAD_FORMAT_INDICATOR] else "UNSPECIFIED_BYTES"
    if mp.CONTENT_TYPE in props:
        named["content_type"] = props[mp.CONTENT_TYPE]
    if mp.RESPONSE_TOPIC in props:
        named["response_topic"] = props[mp.RESPONSE_TOPIC]
    if mp.CORRELATION_DATA in props:
        named["correlation_data"] = base64.b64encode(props[mp.CORRELATION_DATA]).decode()
    pairs = tuple((str(k), str(v)) for k, v in props.get(mp.USER_PROPERTY, ()))
    return named or None, pairs
