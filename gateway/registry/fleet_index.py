"""Fleet indexing: Get/UpdateIndexingConfiguration, SearchIndex over things (registry, shadows, connectivity) and
thing groups, and dynamic thing groups whose members are a saved query's matches.

Searches read the registry and shadow tables as they are (no separate index to go stale). Settings and dynamic
group queries live in their own small tables, created on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequestException, ResourceNotFoundException
from gateway.registry.index_query import flatten, matches, parse
from gateway.shadow.document import compute_delta
from gateway.store import Store

THING_MODES = ("OFF", "REGISTRY", "REGISTRY_AND_SHADOW")
CONNECTIVITY_MODES = ("OFF", "STATUS")
QUERY_VERSION = "2017-09-30"
MAX_RESULTS = 500

Connectivity = Callable[[str], dict[str, Any]]


class FleetIndex:
    def __init__(self, store: Store, registry: Any, connectivity: Connectivity) -> None:
        self.store = store
        self.registry = registry
        self.connectivity = connectivity  # the tables come from gateway.store's migrations

    # ---- configuration
    def configuration(self) -> dict[str, Any]:
        row = self.store.one("SELECT value FROM fleet_indexing WHERE name='config'")
        saved = json.loads(row["value"]) if row else {}
        things = {
            "thingIndexingMode": "OFF",
            "thingConnectivityIndexingMode": "OFF",
            "deviceDefenderIndexingMode": "OFF",
            "namedShadowIndexingMode": "OFF",
            **saved.get("thingIndexingConfiguration", {}),
        }
        groups = {"thingGroupIndexingMode": "OFF", **saved.get("thingGroupIndexingConfiguration", {})}
        return {"thingIndexingConfiguration": things, "thingGroupIndexingConfiguration": groups}

    def update_configuration(self, params: dict[str, Any]) -> dict[str, Any]:
        current = self.configuration()
        things = params.get("thingIndexingConfiguration")
        if things is not None:
            mode = things.get("thingIndexingMode")
            if mode not in THING_MODES:
                raise InvalidRequestException(f"thingIndexingMode must be one of {', '.join(THING_MODES)}")
            connectivity = things.get("thingConnectivityIndexingMode", "OFF")
            if connectivity not in CONNECTIVITY_MODES:
                raise InvalidRequestException("thingConnectivityIndexingMode must be OFF or STATUS")
            if mode == "OFF" and (connectivity != "OFF" or things.get("namedShadowIndexingMode", "OFF") != "OFF"):
                raise InvalidRequestException(
                    "Thing connectivity and named shadow indexing need thingIndexingMode REGISTRY or "
                    "REGISTRY_AND_SHADOW"
                )
            kept = {k: v for k, v in things.items() if v is not None}
            current["thingIndexingConfiguration"] = {**current["thingIndexingConfiguration"], **kept}
        groups = params.get("thingGroupIndexingConfiguration")
        if groups is not None:
            if groups.get("thingGroupIndexingMode") not in ("OFF", "ON"):
                raise InvalidRequestException("thingGroupIndexingMode must be OFF or ON")
            current["thingGroupIndexingConfiguration"] = {"thingGroupIndexingMode": groups["thingGroupIndexingMode"]}
        if current["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF" and self._dynamic_names():
            raise InvalidRequestException("Thing indexing cannot be turned off while dynamic thing groups exist")
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO fleet_indexing(name, value) VALUES ('config', ?)", (json.dumps(current),)
            )
        return {}

    def _thing_mode(self) -> str:
        return str(self.configuration()["thingIndexingConfiguration"]["thingIndexingMode"])

    # ---- documents
    def _groups_of(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for row in self.store.query("SELECT group_name, thing_name FROM thing_group_members ORDER BY group_name"):
            out.setdefault(row["thing_name"], []).append(row["group_name"])
        return out

    def _shadows(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for row in self.store.query("SELECT thing, name, record FROM shadows WHERE deleted=0"):
            out[(row["thing"], row["name"])] = json.loads(row["record"])
        return out

    def thing_documents(self, with_dynamic: bool = True) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(flattened document for queries, the SearchIndex result entry) for every thing, by name."""
        config = self.configuration()["thingIndexingConfiguration"]
        with_shadow = config["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
        named = set((config.get("filter") or {}).get("namedShadowNames") or [])
        with_named = config.get("namedShadowIndexingMode") == "ON"
        with_connectivity = config.get("thingConnectivityIndexingMode") == "STATUS"
        groups = self._groups_of()
        shadows = self._shadows() if with_shadow or with_named else {}
        dynamic = self._dynamic_queries() if with_dynamic else {}
        out = []
        for row in self.store.query("SELECT * FROM things ORDER BY name"):
            name = row["name"]
            attributes = json.loads(row["attributes"])
            doc: dict[str, Any] = {
                "thingName": name,
                "thingId": row["thing_id"],
                "thingGroupNames": list(groups.get(name, [])),
                "registry.version": row["version"],
            }
            entry: dict[str, Any] = {"thingName": name, "thingId": row["thing_id"], "attributes": attributes}
            if row["type_name"]:
                doc["thingTypeName"] = entry["thingTypeName"] = row["type_name"]
            flatten("attributes", attributes, doc)
            if with_shadow and (record := shadows.get((name, ""))) is not None:
                shadow = _shadow_view(record)
                flatten("shadow", shadow, doc)
                entry["shadow"] = json.dumps(shadow)
            if with_named:
                for (thing, shadow_name), record in shadows.items():
                    if thing == name and shadow_name and shadow_name in named:
                        flatten(f"shadow.name.{shadow_name}", _shadow_view(record), doc)
            if with_connectivity:
                connectivity = self.connectivity(name)
                flatten("connectivity", connectivity, doc)
                entry["connectivity"] = connectivity
            for group, query in dynamic.items():
                if matches(query, doc):
                    doc["thingGroupNames"].append(group)
            entry["thingGroupNames"] = doc["thingGroupNames"]
            out.append((doc, entry))
        return out

    # ---- SearchIndex
    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        index = params.get("indexName") or "AWS_Things"
        query = parse(str(params.get("queryString") or ""))
        size = params.get("maxResults") or MAX_RESULTS
        if not isinstance(size, int) or not 1 <= size <= MAX_RESULTS:
            raise InvalidRequestException(f"maxResults must be between 1 and {MAX_RESULTS}")
        after = str(params.get("nextToken") or "")
        if index == "AWS_Things":
            if self._thing_mode() == "OFF":
                raise ResourceNotFoundException("Index AWS_Things does not exist")
            found = [(doc["thingName"], entry) for doc, entry in self.thing_documents() if matches(query, doc)]
            key = "things"
        elif index == "AWS_ThingGroups":
            mode = self.configuration()["thingGroupIndexingConfiguration"]["thingGroupIndexingMode"]
            if mode != "ON":
                raise ResourceNotFoundException("Index AWS_ThingGroups does not exist")
            found = [(doc["thingGroupName"], entry) for doc, entry in self._group_documents() if matches(query, doc)]
            key = "thingGroups"
        else:
            raise ResourceNotFoundException(f"Index {index} does not exist")
        page = [entry for name, entry in found if name > after][:size]
        out: dict[str, Any] = {key: page}
        if len([n for n, _ in found if n > after]) > size:
            out["nextToken"] = page[-1]["thingName" if key == "things" else "thingGroupName"]
        return out

    def _group_documents(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        out = []
        for row in self.store.query("SELECT * FROM thing_groups ORDER BY name"):
            parents = self.registry._ancestors(row["name"])[1:] if hasattr(self.registry, "_ancestors") else []
            attributes = json.loads(row["attributes"])
            entry: dict[str, Any] = {
                "thingGroupName": row["name"],
                "thingGroupId": row["group_id"],
                "attributes": attributes,
                "parentGroupNames": parents,
            }
            if row["description"]:
                entry["thingGroupDescription"] = row["description"]
            doc: dict[str, Any] = {**entry}
            flatten("attributes", attributes, doc)
            out.append((doc, entry))
        return out

    # ---- dynamic thing groups
    def _dynamic_queries(self) -> dict[str, Any]:
        return {r["name"]: parse(r["query"]) for r in self.store.query("SELECT name, query FROM dynamic_thing_groups")}

    def _dynamic_names(self) -> list[str]:
        return [r["name"] for r in self.store.query("SELECT name FROM dynamic_thing_groups ORDER BY name")]

    def dynamic(self, name: str) -> dict[str, Any] | None:
        row = self.store.one("SELECT * FROM dynamic_thing_groups WHERE name=?", (name,))
        if row is None:
            return None
        return {"queryString": row["query"], "indexName": row["index_name"], "queryVersion": row["query_version"]}

    def create_dynamic(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("thingGroupName") or "")
        query = str(params.get("queryString") or "")
        parse(query)
        if self._thing_mode() == "OFF":
            raise InvalidRequestException("Thing indexing must be enabled to create a dynamic thing group")
        index = params.get("indexName") or "AWS_Things"
        if index != "AWS_Things":
            raise InvalidRequestException("Dynamic thing groups can only use the AWS_Things index")
        props = params.get("thingGroupProperties") or {}
        with self.store.transaction() as db:
            created = self.registry.create_thing_group(
                name, None, props.get("thingGroupDescription"), (props.get("attributePayload") or {}).get("attributes")
            )
            db.execute(
                "INSERT INTO dynamic_thing_groups(name, query, index_name, query_version) VALUES (?,?,?,?)",
                (name, query, index, params.get("queryVersion") or QUERY_VERSION),
            )
        return {**created, "indexName": index, "queryString": query, "queryVersion": QUERY_VERSION}

    def update_dynamic(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("thingGroupName") or "")
        if self.dynamic(name) is None:
            raise ResourceNotFoundException(f"Dynamic thing group {name} does not exist")
        if params.get("queryString") is not None:
            parse(str(params["queryString"]))
            with self.store.transaction() as db:
                db.execute("UPDATE dynamic_thing_groups SET query=? WHERE name=?", (params["queryString"], name))
        version = self.registry.describe_thing_group(name).get("version", 1)
        return {"version": version}

    def delete_dynamic(self, name: str) -> dict[str, Any]:
        if self.dynamic(name) is None:
            return {}
        with self.store.transaction() as db:
            db.execute("DELETE FROM dynamic_thing_groups WHERE name=?", (name,))
            self.registry.delete_thing_group(name)
        return {}

    def dynamic_members(self, name: str) -> list[str]:
        query = parse((self.dynamic(name) or {"queryString": "NOT *"})["queryString"])
        return [doc["thingName"] for doc, _ in self.thing_documents(with_dynamic=False) if matches(query, doc)]

    def dynamic_groups_of(self, thing: str) -> list[str]:
        for doc, _ in self.thing_documents():
            if doc["thingName"] == thing:
                static = set(self._groups_of().get(thing, []))
                return [g for g in doc["thingGroupNames"] if g not in static]
        return []


def _shadow_view(record: dict[str, Any]) -> dict[str, Any]:
    state = record.get("state") or {}
    desired, reported = state.get("desired"), state.get("reported")
    view: dict[str, Any] = {}
    if desired is not None:
        view["desired"] = desired
    if reported is not None:
        view["reported"] = reported
    delta = compute_delta(desired, reported)
    view["hasDelta"] = delta is not None
    if delta is not None:
        view["delta"] = delta
    view["version"] = record.get("version", 0)
    return view
