"""boto3 `iot` fleet indexing operations (SearchIndex, indexing configuration, dynamic thing groups,
UpdateThingGroupsForThing), and the group operations that must know about dynamic groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.api.iot import HANDLERS as IOT_HANDLERS
from gateway.api.targets import REST_HANDLERS
from gateway.errors import InvalidRequestException
from gateway.registry.fleet_index import FleetIndex

if TYPE_CHECKING:
    from gateway.api.parts import FleetApiParts
    from gateway.broker.core import Broker

# Disconnects only: with no listener for connects, a connect builds no lifecycle event at all.
PRESENCE_FILTER = "$aws/events/presence/disconnected/+"
MAX_GROUPS_PER_CALL = 10


class ConnectivityTracker:
    """Connected now (the broker's live sessions), else the last disconnect seen: time and reason."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.last: dict[str, tuple[int, str]] = {}
        broker.subscribe_local("fleet-index-connectivity", [PRESENCE_FILTER], self._on_presence)

    def _on_presence(self, topic: str, payload: bytes, qos: int, client_id: str | None, _props: object = None) -> None:
        import json

        parts = topic.split("/")
        if len(parts) == 5 and parts[3] == "disconnected":
            try:
                body = json.loads(payload)
            except ValueError:
                return
            self.last[parts[4]] = (int(body.get("timestamp") or 0), str(body.get("disconnectReason") or ""))

    def __call__(self, thing: str) -> dict[str, Any]:
        conn = self.broker.sessions.get(thing)
        if conn is not None and getattr(conn, "connected", False):
            return {"connected": True, "timestamp": int(getattr(conn, "connected_ms", 0))}
        if thing in self.last:
            timestamp, reason = self.last[thing]
            return {"connected": False, "timestamp": timestamp, "disconnectReason": reason}
        return {"connected": False}


def fleet_index(gw: FleetApiParts) -> FleetIndex:
    return gw.fleet_index


def _not_dynamic(gw: FleetApiParts, group: str) -> None:
    if fleet_index(gw).dynamic(group) is not None:
        raise InvalidRequestException(f"Cannot add or remove things of dynamic thing group {group} by hand")


def _describe_group(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    out = gw.registry.describe_thing_group(p["thingGroupName"])
    dynamic = fleet_index(gw).dynamic(p["thingGroupName"])
    if dynamic is not None:
        out.update(dynamic, status="ACTIVE")
    return out


def _list_things_in_group(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    index = fleet_index(gw)
    if index.dynamic(p["thingGroupName"]) is None:
        return IOT_HANDLERS["ListThingsInThingGroup"](gw.registry, p)
    members = [m for m in index.dynamic_members(p["thingGroupName"]) if m > str(p.get("nextToken") or "")]
    size = p.get("maxResults") or 25
    out: dict[str, Any] = {"things": members[:size]}
    if len(members) > size:
        out["nextToken"] = members[size - 1]
    return out


def _groups_for_thing(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    out = gw.registry.list_thing_groups_for_thing(p["thingName"])
    for group in fleet_index(gw).dynamic_groups_of(p["thingName"]):
        out["thingGroups"].append({"groupName": group, "groupArn": gw.registry.arn("thinggroup", group)})
    out["thingGroups"].sort(key=lambda g: g["groupName"])
    return out


def _add(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    _not_dynamic(gw, p.get("thingGroupName") or "")
    return IOT_HANDLERS["AddThingToThingGroup"](gw.registry, p)


def _remove(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    _not_dynamic(gw, p.get("thingGroupName") or "")
    return IOT_HANDLERS["RemoveThingFromThingGroup"](gw.registry, p)


def _update_groups_for_thing(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    thing = p.get("thingName")
    if not thing:
        raise InvalidRequestException("thingName is required")
    adding, removing = list(p.get("thingGroupsToAdd") or []), list(p.get("thingGroupsToRemove") or [])
    if len(adding) > MAX_GROUPS_PER_CALL or len(removing) > MAX_GROUPS_PER_CALL:
        raise InvalidRequestException(f"At most {MAX_GROUPS_PER_CALL} thing groups to add and to remove per call")
    for group in adding + removing:
        _not_dynamic(gw, group)
    with gw.store.transaction():
        for group in adding:
            gw.registry.add_thing_to_thing_group(group, thing)
        for group in removing:
            gw.registry.remove_thing_from_thing_group(group, thing)
    return {}


def _delete_group(gw: FleetApiParts, p: dict[str, Any]) -> Any:
    if fleet_index(gw).dynamic(p["thingGroupName"]) is not None:
        return fleet_index(gw).delete_dynamic(p["thingGroupName"])
    return IOT_HANDLERS["DeleteThingGroup"](gw.registry, p)


HANDLERS: dict[str, Callable[[FleetApiParts, dict[str, Any]], Any]] = {
    "GetIndexingConfiguration": lambda gw, p: fleet_index(gw).configuration(),
    "UpdateIndexingConfiguration": lambda gw, p: fleet_index(gw).update_configuration(p),
    "SearchIndex": lambda gw, p: fleet_index(gw).search(p),
    "CreateDynamicThingGroup": lambda gw, p: fleet_index(gw).create_dynamic(p),
    "UpdateDynamicThingGroup": lambda gw, p: fleet_index(gw).update_dynamic(p),
    "DeleteDynamicThingGroup": lambda gw, p: fleet_index(gw).delete_dynamic(p["thingGroupName"]),
    "UpdateThingGroupsForThing": _update_groups_for_thing,
    "DescribeThingGroup": _describe_group,
    "ListThingsInThingGroup": _list_things_in_group,
    "ListThingGroupsForThing": _groups_for_thing,
    "AddThingToThingGroup": _add,
    "RemoveThingFromThingGroup": _remove,
    "DeleteThingGroup": _delete_group,
}

for _name, _handler in HANDLERS.items():
    REST_HANDLERS[("iot", _name)] = _handler
