"""The `iot-data` plane: shadows over REST, HTTP publish, retained messages and connections."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.api import mqtt5_http
from gateway.errors import InternalFailureException, InvalidRequestException, ResourceNotFoundException

if TYPE_CHECKING:
    from gateway.api.parts import IotDataParts

Params = dict[str, Any]
Handler = Callable[["IotDataParts", Params], Any]


async def publish(gw: IotDataParts, p: Params) -> dict[str, Any]:
    qos = int(p.get("qos") or 0)
    if qos not in (0, 1):
        raise InvalidRequestException("qos must be 0 or 1")
    props = mqtt5_http.properties(
        p.get("contentType"),
        p.get("responseTopic"),
        p.get("messageExpiry"),
        p.get("userProperties"),
        p.get("payloadFormatIndicator"),
        p.get("correlationData"),
    )
    # The caller passed the API's own check (token or SigV4), as IAM would on AWS: no IoT policy applies here.
    message = gw.broker.intake.admit(
        p["topic"], p.get("payload") or b"", qos, bool(p.get("retain")), props, door="http", acknowledged=True
    )
    if message.hold is not None:
        await message.hold.settled()  # the 200 means the rule actions it started have committed
        if message.hold.failed:
            raise InternalFailureException("The message could not be stored; publish it again")
    return {}


def get_retained_message(gw: IotDataParts, p: Params) -> dict[str, Any]:
    stored = gw.broker.retained.get(p["topic"])
    if stored is None:
        raise ResourceNotFoundException(f"No retained message exists for topic {p['topic']}")
    payload, qos, modified_ms = stored
    return {
        "topic": p["topic"],
        "payload": base64.b64encode(payload).decode(),
        "qos": qos,
        "lastModifiedTime": modified_ms,
    }


def list_retained_messages(gw: IotDataParts, p: Params) -> dict[str, Any]:
    from gateway.registry.base import paginate

    items = []
    for topic in gw.broker.retained.topics():
        stored = gw.broker.retained.get(topic)
        if stored is not None:
            items.append(
                {"topic": topic, "payloadSize": len(stored[0]), "qos": stored[1], "lastModifiedTime": stored[2]}
            )
    page, token = paginate(items, p.get("maxResults"), p.get("nextToken"), limit=200)
    return {"retainedTopics": page, **({"nextToken": token} if token else {})}


def delete_connection(gw: IotDataParts, p: Params) -> dict[str, Any]:
    conn = gw.broker.sessions.get(p["clientId"])
    if conn is None:
        raise ResourceNotFoundException(f"No connection with client id {p['clientId']}")
    if p.get("preventWillMessage"):
        conn.will = None
    conn.close("DeleteConnection API")
    return {}


def _shadow_name(p: Params) -> str | None:
    name = p.get("shadowName")
    return str(name) if name else None


HANDLERS: dict[str, Handler] = {
    "GetThingShadow": lambda gw, p: gw.shadows.get_thing_shadow(p["thingName"], _shadow_name(p)),
    "UpdateThingShadow": lambda gw, p: gw.shadows.update_thing_shadow(
        p["thingName"], _shadow_name(p), p.get("payload") or b""
    ),
    "DeleteThingShadow": lambda gw, p: gw.shadows.delete_thing_shadow(p["thingName"], _shadow_name(p)),
    "ListNamedShadowsForThing": lambda gw, p: gw.shadows.list_named_shadows_for_thing(
        p["thingName"], p.get("nextToken"), p.get("pageSize")
    ),
    "Publish": publish,
    "GetRetainedMessage": get_retained_message,
    "ListRetainedMessages": list_retained_messages,
    "DeleteConnection": delete_connection,
}


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
