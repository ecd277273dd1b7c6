"""Things, thing types and thing groups, shaped as AWS IoT's control plane returns them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from gateway import limits
from gateway.errors import (
    InvalidRequestException,
    ResourceAlreadyExistsException,
    VersionConflictException,
)
from gateway.registry.base import RegistryBase, paginate
from gateway.registry.validation import check_attributes, check_name


class ThingsRegistry(RegistryBase):
    # ---- things
    def create_thing(
        self, thing_name: str, thing_type_name: str | None = None, attributes: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        check_name(thing_name, "thingName")
        attrs = check_attributes(attributes or {})
        with self.store.transaction():
            if thing_type_name is not None:
                ttype = self._thing_type_row(thing_type_name)
                if ttype["deprecated"]:
                    raise InvalidRequestException(
                        f"Can not create new thing with deprecated thing type:{thing_type_name}"
                    )
            self._check_attribute_count(attrs, thing_type_name)
            existing = self.store.one("SELECT * FROM things WHERE name=?", (thing_name,))
            if existing is not None:
                # AWS: identical re-creation is idempotent, a different configuration conflicts.
                if existing["type_name"] == thing_type_name and json.loads(existing["attributes"]) == attrs:
                    return self._thing_ref(thing_name, existing["thing_id"])
                raise ResourceAlreadyExistsException(f"Thing {thing_name} already exists with different attributes")
            thing_id = str(uuid.uuid4())
            self.store.db.execute(
                "INSERT INTO things(name, thing_id, type_name, attributes, version, created_ms) VALUES (?,?,?,?,1,?)",
                (thing_name, thing_id, thing_type_name, json.dumps(attrs), self.clock.wall_ms()),
            )
        self._changed("thing", thing_name)
        self.events.thing("CREATED", self._thing_row(thing_name))
        return self._thing_ref(thing_name, thing_id)

    def _thing_ref(self, name: str, thing_id: str) -> dict[str, Any]:
        return {"thingName": name, "thingArn": self.arn("thing", name), "thingId": thing_id}

    def _check_attribute_count(self, attrs: Mapping[str, str], thing_type_name: str | None) -> None:
        cap = limits.MAX_ATTRIBUTES_WITH_TYPE if thing_type_name else limits.MAX_ATTRIBUTES_WITHOUT_TYPE
        if len(attrs) > cap:
            kind = "with" if thing_type_name else "without"
            raise InvalidRequestException(f"A thing {kind} a thing type can have at most {cap} attributes")

    def _thing_row(self, thing_name: str) -> Any:
        return self._require("things", thing_name, f"Thing {thing_name} cannot be found.")

    def thing_exists(self, thing_name: str) -> bool:
        return self.store.one("SELECT 1 FROM things WHERE name=?", (thing_name,)) is not None

    def describe_thing(self, thing_name: str) -> dict[str, Any]:
        row = self._thing_row(thing_name)
        out: dict[str, Any] = {
            "defaultClientId": row["name"],
            "thingName": row["name"],
            "thingId": row["thing_id"],
            "thingArn": self.arn("thing", row["name"]),
            "attributes": json.loads(row["attributes"]),
            "version": row["version"],
        }
        if row["type_name"]:
            out["thingTypeName"] = row["type_name"]
        return out

    def list_things(
        self,
        max_results: int | None = None,
        next_token: str | None = None,
        attribute_name: str | None = None,
        attribute_value: str | None = None,
        thing_type_name: str | None = None,
        use_prefix_attribute_value: bool = False,
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM things ORDER BY name")
        selected = []
        for row in rows:
            attrs = json.loads(row["attributes"])
            if thing_type_name is not None and row["type_name"] != thing_type_name:
                continue
            if attribute_name is not None:
                value = attrs.get(attribute_name)
                if value is None:
                    continue
                if attribute_value is not None and not (
                    value.startswith(attribute_value) if use_prefix_attribute_value else value == attribute_value
                ):
                    continue
            item: dict[str, Any] = {
                "thingName": row["name"],
                "thingArn": self.arn("thing", row["name"]),
                "attributes": attrs,
                "version": row["version"],
            }
            if row["type_name"]:
                item["thingTypeName"] = row["type_name"]
            selected.append(item)
        page, token = paginate(selected, max_results, next_token)
        out: dict[str, Any] = {"things": page}
        if token:
            out["nextToken"] = token
        return out

    def update_thing(
        self,
        thing_name: str,
        thing_type_name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        merge: bool = False,
        expected_version: int | None = None,
        remove_thing_type: bool = False,
    ) -> None:
        with self.store.transaction():
            row = self._thing_row(thing_name)
            if expected_version is not None and expected_version != row["version"]:
                raise VersionConflictException(
                    f"The version for thing {thing_name} does not match the expected version."
                )
            if remove_thing_type and thing_type_name:
                raise InvalidRequestException("Cannot set thingTypeName and removeThingType together")
            type_name = None if remove_thing_type else (thing_type_name or row["type_name"])
            if thing_type_name:
                self._thing_type_row(thing_type_name)
            attrs = json.loads(row["attributes"])
            if attributes is not None:
                if merge:
                    for key, value in attributes.items():
                        if value == "":
                            attrs.pop(key, None)
                        else:
                            attrs[key] = value
                else:
                    attrs = dict(attributes)
            attrs = check_attributes(attrs)
            self._check_attribute_count(attrs, type_name)
            self.store.db.execute(
                "UPDATE things SET type_name=?, attributes=?, version=version+1 WHERE name=?",
                (type_name, json.dumps(attrs), thing_name),
            )
        self._changed("thing", thing_name)
        after = self._thing_row(thing_name)
        self.events.thing("UPDATED", after)
        if row["type_name"] != type_name:
            if row["type_name"]:
                self.events.thing_type_association("DELETED", after, row["type_name"])
            if type_name:
                self.events.thing_type_association("CREATED", after, type_name)

    def delete_thing(self, thing_name: str, expected_version: int | None = None) -> None:
        with self.store.transaction():
            row = self.store.one("SELECT * FROM things WHERE name=?", (thing_name,))
            if row is None:
                return  # AWS: deleting a thing that does not exist succeeds
            if expected_version is not None and expected_version != row["version"]:
                raise VersionConflictException(
                    f"The version for thing {thing_name} does not match the expected version."
                )
            if self.store.one("SELECT 1 FROM thing_principals WHERE thing_name=?", (thing_name,)):
                raise InvalidRequestException(
                    f"Cannot delete. Thing {thing_name} is still attached to one or more principals"
                )
            self.store.db.execute("DELETE FROM things WHERE name=?", (thing_name,))
        self._changed("thing", thing_name)
        self.events.thing("DELETED", row)

    # ---- thing types
    def create_thing_type(
        self, thing_type_name: str, description: str | None = None, searchable_attributes: list[str] | None = None
    ) -> dict[str, Any]:
        check_name(thing_type_name, "thingTypeName")
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM thing_types WHERE name=?", (thing_type_name,)):
                raise ResourceAlreadyExistsException(f"Thing Type {thing_type_name} already exists")
            type_id = str(uuid.uuid4())
            self.store.db.execute(
                "INSERT INTO thing_types(name, type_id, description, searchable_attributes, created_ms)"
                " VALUES (?,?,?,?,?)",
                (thing_type_name, type_id, description, json.dumps(searchable_attributes or []), self.clock.wall_ms()),
            )
        self.events.thing_type("CREATED", self._thing_type_row(thing_type_name))
        return {
            "thingTypeName": thing_type_name,
            "thingTypeArn": self.arn("thingtype", thing_type_name),
            "thingTypeId": type_id,
        }

    def _thing_type_row(self, name: str) -> Any:
        return self._require("thing_types", name, f"Thing Type {name} cannot be found.")

    def _thing_type_out(self, row: Any) -> dict[str, Any]:
        props: dict[str, Any] = {"searchableAttributes": json.loads(row["searchable_attributes"])}
        if row["description"]:
            props["thingTypeDescription"] = row["description"]
        meta: dict[str, Any] = {"deprecated": bool(row["deprecated"]), "creationDate": row["created_ms"] / 1000}
        if row["deprecation_ms"]:
            meta["deprecationDate"] = row["deprecation_ms"] / 1000
        return {
            "thingTypeName": row["name"],
            "thingTypeId": row["type_id"],
            "thingTypeArn": self.arn("thingtype", row["name"]),
            "thingTypeProperties": props,
            "thingTypeMetadata": meta,
        }

    def describe_thing_type(self, thing_type_name: str) -> dict[str, Any]:
        return self._thing_type_out(self._thing_type_row(thing_type_name))

    def list_thing_types(
        self, max_results: int | None = None, next_token: str | None = None, thing_type_name: str | None = None
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM thing_types ORDER BY name")
        items = [self._thing_type_out(r) for r in rows if thing_type_name in (None, r["name"])]
        for item in items:
            item.pop("thingTypeId")
        page, token = paginate(items, max_results, next_token)
        return {"thingTypes": page, **({"nextToken": token} if token else {})}

    def deprecate_thing_type(self, thing_type_name: str, undo_deprecate: bool = False) -> None:
        with self.store.transaction():
            self._thing_type_row(thing_type_name)
            self.store.db.execute(
                "UPDATE thing_types SET deprecated=?, deprecation_ms=? WHERE name=?",
                (0 if undo_deprecate else 1, None if undo_deprecate else self.clock.wall_ms(), thing_type_name),
            )
        self.events.thing_type("UPDATED", self._thing_type_row(thing_type_name))

    def delete_thing_type(self, thing_type_name: str) -> None:
        with self.store.transaction():
            row = self._thing_type_row(thing_type_name)
            if not row["deprecated"]:
                raise InvalidRequestException(
                    f"Thing type {thing_type_name} must be deprecated for at least 5 minutes before it can be deleted"
                )
            if self.store.one("SELECT 1 FROM things WHERE type_name=?", (thing_type_name,)):
                raise InvalidRequestException(f"Can not delete thing type {thing_type_name}: it has things")
            self.store.db.execute("DELETE FROM thing_types WHERE name=?", (thing_type_name,))
        self.events.thing_type("DELETED", row)

    # ---- thing groups
    def create_thing_group(
        self,
        thing_group_name: str,
        parent_group_name: str | None = None,
        description: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        check_name(thing_group_name, "thingGroupName")
        attrs = check_attributes(attributes or {}, "thingGroupProperties.attributePayload.attributes")
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM thing_groups WHERE name=?", (thing_group_name,)):
                raise ResourceAlreadyExistsException(f"Thing Group {thing_group_name} already exists")
            if parent_group_name is not None:
                self._group_row(parent_group_name)
                if len(self._ancestors(parent_group_name)) + 1 >= limits.MAX_THING_GROUP_DEPTH:
                    raise InvalidRequestException(
                        f"Thing group hierarchy cannot be deeper than {limits.MAX_THING_GROUP_DEPTH}"
                    )
            group_id = str(uuid.uuid4())
            self.store.db.execute(
                "INSERT INTO thing_groups(name, group_id, parent, description, attributes, created_ms)"
                " VALUES (?,?,?,?,?,?)",
                (thing_group_name, group_id, parent_group_name, description, json.dumps(attrs), self.clock.wall_ms()),
            )
        self._group_events("CREATED", self._group_row(thing_group_name))
        return {
            "thingGroupName": thing_group_name,
            "thingGroupArn": self.arn("thinggroup", thing_group_name),
            "thingGroupId": group_id,
        }

    def _group_row(self, name: str) -> Any:
        return self._require("thing_groups", name, f"Thing Group {name} cannot be found.")

    def _ancestors(self, name: str) -> list[str]:
        """The group itself followed by its parents up to the root."""
        chain = []
        current: str | None = name
        while current is not None:
            chain.append(current)
            row = self.store.one("SELECT parent FROM thing_groups WHERE name=?", (current,))
            current = row["parent"] if row else None
        return chain

    def describe_thing_group(self, thing_group_name: str) -> dict[str, Any]:
        row = self._group_row(thing_group_name)
        props: dict[str, Any] = {"attributePayload": {"attributes": json.loads(row["attributes"])}}
        if row["description"]:
            props["thingGroupDescription"] = row["description"]
        meta: dict[str, Any] = {"creationDate": row["created_ms"] / 1000}
        if row["parent"]:
            meta["parentGroupName"] = row["parent"]
            meta["rootToParentThingGroups"] = [
                {"groupName": g, "groupArn": self.arn("thinggroup", g)}
                for g in reversed(self._ancestors(row["parent"]))
            ]
        return {
            "thingGroupName": row["name"],
            "thingGroupId": row["group_id"],
            "thingGroupArn": self.arn("thinggroup", row["name"]),
            "version": row["version"],
            "thingGroupProperties": props,
            "thingGroupMetadata": meta,
        }

    def list_thing_groups(
        self, max_results: int | None = None, next_token: str | None = None, parent_group: str | None = None
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT name, parent FROM thing_groups ORDER BY name")
        items = [
            {"groupName": r["name"], "groupArn": self.arn("thinggroup", r["name"])}
            for r in rows
            if parent_group in (None, r["parent"])
        ]
        page, token = paginate(items, max_results, next_token)
        return {"thingGroups": page, **({"nextToken": token} if token else {})}

    def _group_events(self, operation: str, row: Any) -> None:
        """The thing group event, and the hierarchy event when the group has a parent."""
        chain = [self._group_row(g) for g in reversed(self._ancestors(row["parent"]))] if row["parent"] else []
        parent_id = chain[-1]["group_id"] if chain else None
        self.events.thing_group(operation, row, parent_id, [(g["name"], g["group_id"]) for g in chain])
        if chain and operation != "UPDATED":
            self.events.hierarchy("ADDED" if operation == "CREATED" else "REMOVED", chain[-1], row)

    def delete_thing_group(self, thing_group_name: str) -> None:
        with self.store.transaction():
            row = self.store.one("SELECT * FROM thing_groups WHERE name=?", (thing_group_name,))
            if row is None:
                return
            if self.store.one("SELECT 1 FROM thing_groups WHERE parent=?", (thing_group_name,)):
                raise InvalidRequestException(f"Cannot delete thing group {thing_group_name}: it has child groups")
            self.store.db.execute(
                "DELETE FROM policy_targets WHERE target=?", (self.arn("thinggroup", thing_group_name),)
            )
            self.store.db.execute("DELETE FROM thing_groups WHERE name=?", (thing_group_name,))
        self._changed("group", thing_group_name)
        self._group_events("DELETED", row)

    def add_thing_to_thing_group(self, thing_group_name: str, thing_name: str) -> None:
        with self.store.transaction():
            group = self._group_row(thing_group_name)
            thing = self._thing_row(thing_name)
            current = [
                r["group_name"]
                for r in self.store.query(
                    "SELECT group_name FROM thing_group_members WHERE thing_name=?", (thing_name,)
                )
            ]
            if thing_group_name in current:
                return
            if len(current) >= limits.MAX_THING_GROUPS_PER_THING:
                raise InvalidRequestException(
                    f"Thing {thing_name} is already in {limits.MAX_THING_GROUPS_PER_THING} thing groups"
                )
            new_root = self._ancestors(thing_group_name)[-1]
            for group in current:
                if self._ancestors(group)[-1] == new_root:
                    raise InvalidRequestException(
                        f"Thing {thing_name} is already in group {group} of the same hierarchy"
                    )
            self.store.db.execute(
                "INSERT INTO thing_group_members(group_name, thing_name) VALUES (?,?)", (thing_group_name, thing_name)
            )
        self._changed("group", thing_group_name)
        self.events.membership("ADDED", group, thing)

    def remove_thing_from_thing_group(self, thing_group_name: str, thing_name: str) -> None:
        with self.store.transaction():
            group = self.store.one("SELECT * FROM thing_groups WHERE name=?", (thing_group_name,))
            thing = self.store.one("SELECT * FROM things WHERE name=?", (thing_name,))
            removed = self.store.db.execute(
                "DELETE FROM thing_group_members WHERE group_name=? AND thing_name=?", (thing_group_name, thing_name)
            ).rowcount
        self._changed("group", thing_group_name)
        if removed and group is not None and thing is not None:
            self.events.membership("REMOVED", group, thing)

    def list_things_in_thing_group(
        self,
        thing_group_name: str,
        recursive: bool = False,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> dict[str, Any]:
        self._group_row(thing_group_name)
        groups = [thing_group_name]
        if recursive:
            index = 0
            while index < len(groups):
                groups += [
                    r["name"]
                    for r in self.store.query("SELECT name FROM thing_groups WHERE parent=?", (groups[index],))
                ]
                index += 1
        marks = ",".join("?" * len(groups))
        rows = self.store.query(
            f"SELECT DISTINCT thing_name FROM thing_group_members WHERE group_name IN ({marks}) ORDER BY thing_name",
            groups,
        )
        page, token = paginate([r["thing_name"] for r in rows], max_results, next_token)
        return {"things": page, **({"nextToken": token} if token else {})}

    def list_thing_groups_for_thing(self, thing_name: str) -> dict[str, Any]:
        self._thing_row(thing_name)
        rows = self.store.query(
            "SELECT group_name FROM thing_group_members WHERE thing_name=? ORDER BY group_name", (thing_name,)
        )
        return {
            "thingGroups": [
                {"groupName": r["group_name"], "groupArn": self.arn("thinggroup", r["group_name"])} for r in rows
            ]
        }

    def inherited_group_arns(self, thing_name: str) -> list[str]:
        """ARNs of the thing's groups and all their ancestors: policies attached there apply to the thing."""
        arns: list[str] = []
        for row in self.store.query("SELECT group_name FROM thing_group_members WHERE thing_name=?", (thing_name,)):
            arns += [self.arn("thinggroup", g) for g in self._ancestors(row["group_name"])]
        return arns
