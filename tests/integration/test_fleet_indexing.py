"""Fleet indexing through boto3 `iot`: SearchIndex over registry, shadow and connectivity fields, dynamic thing
groups, UpdateThingGroupsForThing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from test_api_iot import client


def names(result: dict[str, Any]) -> list[str]:
    return [t["thingName"] for t in result["things"]]


def test_search_index_dynamic_groups_and_group_updates(gateway: GatewayProcess, unique: str) -> None:
    iot, data = client(gateway, "iot"), client(gateway, "iot-data")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.search_index(queryString="*")  # indexing is off until configured
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "thingConnectivityIndexingMode": "STATUS",
        },
        thingGroupIndexingConfiguration={"thingGroupIndexingMode": "ON"},
    )
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert config["thingIndexingMode"] == "REGISTRY_AND_SHADOW" and config["thingConnectivityIndexingMode"] == "STATUS"
    iot.create_thing_type(thingTypeName=f"lamp-{unique}")
    for i, floor in enumerate(["1", "2", "3"]):
        iot.create_thing(
            thingName=f"{unique}-lamp-{i}",
            thingTypeName=f"lamp-{unique}",
            attributePayload={"attributes": {"floor": floor, "room": f"r{i}"}},
        )
    iot.create_thing(thingName=f"{unique}-fan", attributePayload={"attributes": {"floor": "2"}})
    for i, temp in enumerate([18, 23, 30]):
        data.update_thing_shadow(
            thingName=f"{unique}-lamp-{i}",
            payload=json.dumps({"state": {"reported": {"temp": temp, "mode": "eco" if i else "boost"}}}).encode(),
        )
    data.update_thing_shadow(
        thingName=f"{unique}-lamp-2", payload=json.dumps({"state": {"desired": {"mode": "boost"}}}).encode()
    )

    def search(query: str, **kwargs: Any) -> list[str]:
        return names(iot.search_index(indexName="AWS_Things", queryString=query, **kwargs))

    assert search(f"thingName:{unique}-lamp-*") == [f"{unique}-lamp-{i}" for i in range(3)]
    assert search(f"{unique}-fan") == [f"{unique}-fan"]
    assert search(f"thingName:{unique}-* AND attributes.floor:2") == [f"{unique}-fan", f"{unique}-lamp-1"]
    assert search(f"thingTypeName:lamp-{unique} AND shadow.reported.temp > 20") == [
        f"{unique}-lamp-1",
        f"{unique}-lamp-2",
    ]
    assert search(f"thingName:{unique}-* AND attributes.floor:[2 TO 3}} AND NOT thingName:*fan") == [f"{unique}-lamp-1"]
    assert search(f"thingName:{unique}-* AND (shadow.reported.mode:boost OR shadow.hasDelta:true)") == [
        f"{unique}-lamp-0",
        f"{unique}-lamp-2",
    ]
    first = iot.search_index(queryString=f"thingName:{unique}-*", maxResults=2)
    rest = iot.search_index(queryString=f"thingName:{unique}-*", maxResults=2, nextToken=first["nextToken"])
    assert names(first) + names(rest) == sorted([f"{unique}-fan"] + [f"{unique}-lamp-{i}" for i in range(3)])
    hit = iot.search_index(queryString=f"thingName:{unique}-lamp-2")["things"][0]
    assert hit["attributes"] == {"floor": "3", "room": "r2"} and hit["thingTypeName"] == f"lamp-{unique}"
    assert json.loads(hit["shadow"])["reported"]["temp"] == 30 and hit["connectivity"] == {"connected": False}
    with pytest.raises(iot.exceptions.InvalidQueryException):
        iot.search_index(queryString="attributes.floor:[1 TO")
    # Named shadows are indexed when asked for, by name.
    data.update_thing_shadow(
        thingName=f"{unique}-lamp-1", shadowName="cfg", payload=b'{"state": {"reported": {"fw": "2.1"}}}'
    )
    assert search(f"thingName:{unique}-* AND shadow.name.cfg.reported.fw:2.*") == []
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "thingConnectivityIndexingMode": "STATUS",
            "namedShadowIndexingMode": "ON",
            "filter": {"namedShadowNames": ["cfg"]},
        }
    )
    assert search(f"thingName:{unique}-* AND shadow.name.cfg.reported.fw:2.*") == [f"{unique}-lamp-1"]

    # Connectivity: a device connected under its thing name is found as connected, then with its disconnect.
    creds = gateway.provision(f"{unique}-lamp-0", allow_all_policy())
    device = Device(gateway.ports["mqtts"], f"{unique}-lamp-0", creds.cert, creds.key, creds.ca).connect()
    assert search(f"thingName:{unique}-* AND connectivity.connected:true") == [f"{unique}-lamp-0"]
    device.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and search(f"thingName:{unique}-* AND connectivity.connected:true"):
        time.sleep(0.05)
    gone = iot.search_index(queryString=f"thingName:{unique}-lamp-0")["things"][0]["connectivity"]
    assert gone["connected"] is False and gone["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"

    # Dynamic thing groups follow their query; static membership through UpdateThingGroupsForThing.
    hot = f"hot-{unique}"
    created = iot.create_dynamic_thing_group(
        thingGroupName=hot, queryString=f"thingName:{unique}-* AND shadow.reported.temp >= 23"
    )
    assert created["queryString"].endswith(">= 23") and created["indexName"] == "AWS_Things"
    assert iot.list_things_in_thing_group(thingGroupName=hot)["things"] == [f"{unique}-lamp-1", f"{unique}-lamp-2"]
    described = iot.describe_thing_group(thingGroupName=hot)
    assert described["status"] == "ACTIVE" and described["queryString"] == created["queryString"]
    data.update_thing_shadow(
        thingName=f"{unique}-lamp-0", payload=json.dumps({"state": {"reported": {"temp": 40}}}).encode()
    )
    assert f"{unique}-lamp-0" in iot.list_things_in_thing_group(thingGroupName=hot)["things"]
    groups = [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=f"{unique}-lamp-0")["thingGroups"]]
    assert hot in groups
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.add_thing_to_thing_group(thingGroupName=hot, thingName=f"{unique}-fan")
    iot.create_thing_group(thingGroupName=f"a-{unique}")
    iot.create_thing_group(thingGroupName=f"b-{unique}")
    iot.update_thing_groups_for_thing(thingName=f"{unique}-fan", thingGroupsToAdd=[f"a-{unique}", f"b-{unique}"])
    iot.update_thing_groups_for_thing(thingName=f"{unique}-fan", thingGroupsToRemove=[f"a-{unique}"])
    fan_groups = iot.list_thing_groups_for_thing(thingName=f"{unique}-fan")["thingGroups"]
    assert [g["groupName"] for g in fan_groups] == [f"b-{unique}"]
    assert search(f"thingGroupNames:b-{unique}") == [f"{unique}-fan"]
    assert search(f"thingGroupNames:{hot}") == [f"{unique}-lamp-0", f"{unique}-lamp-1", f"{unique}-lamp-2"]
    groups_found = iot.search_index(indexName="AWS_ThingGroups", queryString=f"thingGroupName:*-{unique}")
    assert sorted(g["thingGroupName"] for g in groups_found["thingGroups"]) == [f"a-{unique}", f"b-{unique}", hot]
    iot.delete_dynamic_thing_group(thingGroupName=hot)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_group(thingGroupName=hot)
