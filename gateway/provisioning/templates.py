"""Provisioning templates and their versions: the control plane behind CreateProvisioningTemplate and friends."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.clock import Clock
from gateway.errors import (
    DeleteConflictException,
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionsLimitExceededException,
)
from gateway.identity.provisioning_template import Template, parse_template
from gateway.registry.base import paginate
from gateway.store import Store

NAME = re.compile(r"^[0-9A-Za-z_-]{1,36}$")
MAX_VERSIONS = 5
TYPES = ("FLEET_PROVISIONING", "JITP")


class ProvisioningTemplates:
    def __init__(self, store: Store, clock: Clock, region: str, account: str) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self._parsed: dict[tuple[str, int], Template] = {}

    def arn(self, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:provisioningtemplate/{name}"

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequestException(
                f"1 validation error detected: Value '{name}' at 'templateName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^[0-9A-Za-z_-]+$"
            )
        return name

    @staticmethod
    def _check_body(body: Any) -> str:
        if not isinstance(body, str):
            raise InvalidRequestException("templateBody must be a string")
        try:
            parse_template(body)
        except InvalidRequestException as exc:
            raise InvalidRequestException(exc.message) from exc
        return body

    @staticmethod
    def _check_hook(hook: Any) -> dict[str, str] | None:
        if hook is None:
            return None
        if not isinstance(hook, dict) or not isinstance(hook.get("targetArn"), str):
            raise InvalidRequestException("preProvisioningHook needs a targetArn")
        if ":lambda:" not in hook["targetArn"] and ":function:" not in hook["targetArn"]:
            raise InvalidRequestException("Only Lambda functions are supported as pre-provisioning hooks")
        return {"targetArn": hook["targetArn"], "payloadVersion": str(hook.get("payloadVersion") or "2020-04-01")}

    def _row(self, name: str) -> Any:
        row = self.store.one("SELECT * FROM provisioning_templates WHERE name=?", (self._check_name(name),))
        if row is None:
            raise ResourceNotFoundException(f"The provisioning template {name} does not exist")
        return row

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name(params.get("templateName"))
        body = self._check_body(params.get("templateBody"))
        kind = params.get("type") or "FLEET_PROVISIONING"
        if kind not in TYPES:
            raise InvalidRequestException(f"type must be one of {list(TYPES)}")
        description = params.get("description") or ""
        if not isinstance(description, str) or len(description) > 500:
            raise InvalidRequestException("description must be a string of at most 500 characters")
        now = self.clock.wall_ms()
        record = {
            "description": description,
            "enabled": bool(params.get("enabled", False)),
            "provisioningRoleArn": params.get("provisioningRoleArn") or "",
            "preProvisioningHook": self._check_hook(params.get("preProvisioningHook")),
            "type": kind,
            "created_ms": now,
            "modified_ms": now,
        }
        if kind == "JITP" and record["preProvisioningHook"]:
            raise InvalidRequestException("A JITP template cannot have a pre-provisioning hook")
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM provisioning_templates WHERE name=?", (name,)):
                raise ResourceAlreadyExistsException(f"Template with name {name} already exists")
            self.store.db.execute(
                "INSERT INTO provisioning_templates(name, record, default_version, next_version) VALUES (?,?,1,2)",
                (name, json.dumps(record)),
            )
            self.store.db.execute(
                "INSERT INTO provisioning_template_versions(name, version_id, body, created_ms) VALUES (?,1,?,?)",
                (name, body, now),
            )
        return {"templateArn": self.arn(name), "templateName": name, "defaultVersionId": 1}

    def describe(self, name: str) -> dict[str, Any]:
        row = self._row(name)
        record = json.loads(row["record"])
        body = self._version_row(name, row["default_version"])["body"]
        out: dict[str, Any] = {
            "templateArn": self.arn(name),
            "templateName": name,
            "description": record["description"],
            "creationDate": record["created_ms"] / 1000,
            "lastModifiedDate": record["modified_ms"] / 1000,
            "defaultVersionId": row["default_version"],
            "templateBody": body,
            "enabled": record["enabled"],
            "provisioningRoleArn": record["provisioningRoleArn"],
            "type": record["type"],
        }
        if record["preProvisioningHook"]:
            out["preProvisioningHook"] = record["preProvisioningHook"]
        return out

    def template(self, name: str) -> tuple[Template, dict[str, Any]]:
        """The default version, parsed (cached by version), and the template's settings."""
        row = self._row(name)
        key = (name, int(row["default_version"]))
        if key not in self._parsed:
            body = self._version_row(name, key[1])["body"]
            self._parsed[key] = parse_template(body)
        return self._parsed[key], json.loads(row["record"])

    def list(self, max_results: int | None, next_token: str | None) -> dict[str, Any]:
        rows = self.store.query("SELECT name, record FROM provisioning_templates ORDER BY name")
        page, token = paginate(rows, max_results, next_token)
        templates = []
        for row in page:
            record = json.loads(row["record"])
            templates.append(
                {
                    "templateArn": self.arn(row["name"]),
                    "templateName": row["name"],
                    "description": record["description"],
                    "creationDate": record["created_ms"] / 1000,
                    "lastModifiedDate": record["modified_ms"] / 1000,
                    "enabled": record["enabled"],
                    "type": record["type"],
                }
            )
        out: dict[str, Any] = {"templates": templates}
        if token:
            out["nextToken"] = token
        return out

    def update(self, params: dict[str, Any]) -> None:
        name = self._check_name(params.get("templateName"))
        with self.store.transaction():
            row = self._row(name)
            record = json.loads(row["record"])
            for key in ("description", "provisioningRoleArn"):
                if params.get(key) is not None:
                    record[key] = params[key]
            if params.get("enabled") is not None:
                record["enabled"] = bool(params["enabled"])
            if params.get("removePreProvisioningHook"):
                if params.get("preProvisioningHook"):
                    raise InvalidRequestException("Cannot set preProvisioningHook and removePreProvisioningHook")
                record["preProvisioningHook"] = None
            elif params.get("preProvisioningHook") is not None:
                record["preProvisioningHook"] = self._check_hook(params["preProvisioningHook"])
            default = row["default_version"]
            if params.get("defaultVersionId") is not None:
                default = self._version_row(name, params["defaultVersionId"])["version_id"]
            record["modified_ms"] = self.clock.wall_ms()
            self.store.db.execute(
                "UPDATE provisioning_templates SET record=?, default_version=? WHERE name=?",
                (json.dumps(record), default, name),
            )

    def delete(self, name: str) -> None:
        with self.store.transaction():
            self._row(name)
            self.store.db.execute("DELETE FROM provisioning_templates WHERE name=?", (name,))
            self.store.db.execute("DELETE FROM provisioning_template_versions WHERE name=?", (name,))
        self._parsed = {k: v for k, v in self._parsed.items() if k[0] != name}

    # ---- versions
    def _version_row(self, name: str, version_id: Any) -> Any:
        try:
            vid = int(version_id)
        except (TypeError, ValueError):
            raise InvalidRequestException(f"Invalid versionId: {version_id}") from None
        row = self.store.one("SELECT * FROM provisioning_template_versions WHERE name=? AND version_id=?", (name, vid))
        if row is None:
            raise ResourceNotFoundException(f"Version {vid} of provisioning template {name} does not exist")
        return row

    def create_version(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name(params.get("templateName"))
        body = self._check_body(params.get("templateBody"))
        set_default = bool(params.get("setAsDefault"))
        now = self.clock.wall_ms()
        with self.store.transaction():
            row = self._row(name)
            count = len(self.store.query("SELECT 1 FROM provisioning_template_versions WHERE name=?", (name,)))
            if count >= MAX_VERSIONS:
                raise VersionsLimitExceededException(
                    f"The provisioning template {name} already has the maximum number of versions ({MAX_VERSIONS})"
                )
            vid = row["next_version"]
            self.store.db.execute(
                "INSERT INTO provisioning_template_versions(name, version_id, body, created_ms) VALUES (?,?,?,?)",
                (name, vid, body, now),
            )
            self.store.db.execute(
                "UPDATE provisioning_templates SET next_version=?, default_version=? WHERE name=?",
                (vid + 1, vid if set_default else row["default_version"], name),
            )
        return {"templateArn": self.arn(name), "templateName": name, "versionId": vid, "isDefaultVersion": set_default}

    def list_versions(self, name: str, max_results: int | None, next_token: str | None) -> dict[str, Any]:
        row = self._row(name)
        rows = self.store.query(
            "SELECT version_id, created_ms FROM provisioning_template_versions WHERE name=? ORDER BY version_id",
            (name,),
        )
        page, token = paginate(rows, max_results, next_token)
        out: dict[str, Any] = {
            "versions": [
                {
                    "versionId": r["version_id"],
                    "creationDate": r["created_ms"] / 1000,
                    "isDefaultVersion": r["version_id"] == row["default_version"],
                }
                for r in page
            ]
        }
        if token:
            out["nextToken"] = token
        return out

    def describe_version(self, name: str, version_id: Any) -> dict[str, Any]:
        row = self._row(name)
        version = self._version_row(name, version_id)
        return {
            "versionId": version["version_id"],
            "creationDate": version["created_ms"] / 1000,
            "templateBody": version["body"],
            "isDefaultVersion": version["version_id"] == row["default_version"],
        }

    def delete_version(self, name: str, version_id: Any) -> None:
        with self.store.transaction():
            row = self._row(name)
            version = self._version_row(name, version_id)
            if version["version_id"] == row["default_version"]:
                raise DeleteConflictException(
                    "Cannot delete the default version of a provisioning template; set another version as default"
                )
            self.store.db.execute(
                "DELETE FROM provisioning_template_versions WHERE name=? AND version_id=?",
                (name, version["version_id"]),
            )
