"""Registry events (AWS IoT developer guide, "Registry events"): `$aws/events/thing/...`, thing types, thing groups,
group membership and hierarchy, each published only when its event type is enabled with UpdateEventConfigurations
(all are off by default, as on AWS). The payloads follow AWS's documented shapes.

Publication goes through a callback the gateway sets (the broker's router, so rules and subscribers both see the
events); a registry opened without one (the CLI, tests) only keeps the configuration.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gateway.clock import Clock
from gateway.errors import InvalidRequestException
from gateway.store import Store

# Every key UpdateEventConfigurations accepts (botocore's EventType enum).
EVENT_TYPES = (
    "THING",
    "THING_GROUP",
    "THING_TYPE",
    "THING_GROUP_MEMBERSHIP",
    "THING_GROUP_HIERARCHY",
    "THING_TYPE_ASSOCIATION",
    "JOB",
    "JOB_EXECUTION",
    "POLICY",
    "CERTIFICATE",
    "CA_CERTIFICATE",
)

Publisher = Callable[[str, bytes], None]


class RegistryEvents:
    def __init__(self, store: Store, clock: Clock, region: str, account: str) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.publish: Publisher | None = None
        self._held: list[tuple[str, bytes]] | None = None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold events back until the block ends: published if it succeeds (its transaction committed), dropped if
        it raises (its transaction rolled back, so the changes they describe never happened)."""
        if self._held is not None:
            yield
            return
        held: list[tuple[str, bytes]] = []
        self._held = held
        try:
            yield
        finally:
            self._held = None
        for topic, payload in held:
            self._send(topic, payload)

    # ---- configuration
    def describe(self) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM event_configurations")
        enabled = {r["event_type"]: bool(r["enabled"]) for r in rows}
        times = [r["modified_ms"] for r in rows] or [self.clock.wall_ms()]
        return {
            "eventConfigurations": {t: {"Enabled": enabled.get(t, False)} for t in EVENT_TYPES},
            "creationDate": min(times) / 1000,
            "lastModifiedDate": max(times) / 1000,
        }

    def update(self, configurations: Mapping[str, Any] | None) -> None:
        changes: list[tuple[str, int, int]] = []
        for key, value in (configurations or {}).items():
            if key not in EVENT_TYPES:
                raise InvalidRequestException(
                    f"1 validation error detected: Value '{key}' at 'eventConfigurations' failed to satisfy "
                    f"constraint: Member must satisfy enum value set: [{', '.join(EVENT_TYPES)}]"
                )
            if not isinstance(value, Mapping):
                raise InvalidRequestException(f"eventConfigurations.{key} must be an object with Enabled")
            changes.append((key, int(bool(value.get("Enabled"))), self.clock.wall_ms()))
        with self.store.transaction():
            self.store.db.executemany(
                "INSERT INTO event_configurations(event_type, enabled, modified_ms) VALUES (?,?,?)"
                " ON CONFLICT(event_type) DO UPDATE SET enabled=excluded.enabled, modified_ms=excluded.modified_ms",
                changes,
            )

    def enabled(self, event_type: str) -> bool:
        if self.publish is None:
            return False
        row = self.store.one("SELECT enabled FROM event_configurations WHERE event_type=?", (event_type,))
        return bool(row and row["enabled"])

    # ---- publication
    def _emit(self, topic: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        if self._held is not None:
            self._held.append((topic, payload))
        else:
            self._send(topic, payload)

    def _send(self, topic: str, payload: bytes) -> None:
        if self.publish is not None:
            self.publish(topic, payload)

    def _base(self, event_type: str, operation: str) -> dict[str, Any]:
        return {
            "eventType": event_type,
            "eventId": uuid.uuid4().hex,
            "timestamp": self.clock.wall_ms(),
            "operation": operation,
            "accountId": self.account,
        }

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:{kind}/{name}"

    def thing(self, operation: str, row: Any) -> None:
        """`row`: the things row (after the change; before it for DELETED)."""
        if not self.enabled("THING"):
            return
        body = self._base("THING_EVENT", operation)
        body.update(
            thingId=row["thing_id"],
            thingName=row["name"],
            versionNumber=row["version"],
            thingTypeName=row["type_name"],
            attributes=json.loads(row["attributes"]),
        )
        self._emit(f"$aws/events/thing/{row['name']}/{operation.lower()}", body)

    def thing_type_association(self, operation: str, thing: Any, type_name: str) -> None:
        if not self.enabled("THING_TYPE_ASSOCIATION"):
            return
        body = {
            "eventId": uuid.uuid4().hex,
            "eventType": "THING_TYPE_ASSOCIATION_EVENT",
            "operation": operation,
            "thingId": thing["thing_id"],
            "thingName": thing["name"],
            "thingTypeName": type_name,
            "timestamp": self.clock.wall_ms(),
        }
        self._emit(f"$aws/events/thingTypeAssociation/thing/{thing['name']}/{type_name}", body)

    def thing_type(self, operation: str, row: Any) -> None:
        if not self.enabled("THING_TYPE"):
            return
        body = self._base("THING_TYPE_EVENT", operation)
        body.update(
            thingTypeId=row["type_id"],
            thingTypeName=row["name"],
            isDeprecated=bool(row["deprecated"]),
            deprecationDate=row["deprecation_ms"],
            searchableAttributes=json.loads(row["searchable_attributes"]),
            description=row["description"],
        )
        self._emit(f"$aws/events/thingType/{row['name']}/{operation.lower()}", body)

    def thing_group(
        self, operation: str, row: Any, parent_id: str | None, root_to_parent: list[tuple[str, str]]
    ) -> None:
        """`root_to_parent`: (group name, group id) from the root down to the group's parent."""
        if not self.enabled("THING_GROUP"):
            return
        body = self._base("THING_GROUP_EVENT", operation)
        body.update(
            thingGroupId=row["group_id"],
            thingGroupName=row["name"],
            versionNumber=row["version"],
            parentGroupName=row["parent"],
            parentGroupId=parent_id,
            description=row["description"],
            rootToParentThingGroups=[
                {"groupArn": self._arn("thinggroup", name), "groupId": gid} for name, gid in root_to_parent
            ],
            attributes=json.loads(row["attributes"]),
            dynamicGroupMappingId=None,
        )
        self._emit(f"$aws/events/thingGroup/{row['name']}/{operation.lower()}", body)

    def membership(self, operation: str, group: Any, thing: Any) -> None:
        if not self.enabled("THING_GROUP_MEMBERSHIP"):
            return
        body = self._base("THING_GROUP_MEMBERSHIP_EVENT", operation)
        body.update(
            groupArn=self._arn("thinggroup", group["name"]),
            groupId=group["group_id"],
            thingArn=self._arn("thing", thing["name"]),
            thingId=thing["thing_id"],
            # AWS generates one per (thing, group) relationship; a stable digest of the pair plays that part.
            membershipId=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{group['group_id']}/{thing['thing_id']}")),
        )
        topic = f"$aws/events/thingGroupMembership/thingGroup/{group['name']}/thing/{thing['name']}/{operation.lower()}"
        self._emit(topic, body)

    def hierarchy(self, operation: str, parent: Any, child: Any) -> None:
        if not self.enabled("THING_GROUP_HIERARCHY"):
            return
        body = self._base("THING_GROUP_HIERARCHY_EVENT", operation)
        body.update(
            thingGroupId=parent["group_id"],
            thingGroupName=parent["name"],
            childGroupId=child["group_id"],
            childGroupName=child["name"],
        )
        topic = (
            f"$aws/events/thingGroupHierarchy/thingGroup/{parent['name']}/childThingGroup/{child['name']}"
            f"/{operation.lower()}"
        )
        self._emit(topic, body)

    def certificate_registered(self, certificate_id: str, ca_id: str, registered_ms: int) -> None:
        """The JITR notification: published whenever auto-registration happens, whatever the configuration."""
        body = {
            "certificateId": certificate_id,
            "caCertificateId": ca_id,
            "timestamp": self.clock.wall_ms(),
            "certificateStatus": "PENDING_ACTIVATION",
            "awsAccountId": self.account,
            "certificateRegistrationTimestamp": str(registered_ms),
        }
        self._emit(f"$aws/events/certificates/registered/{ca_id}", body)
