"""Custom authorizer resources (CreateAuthorizer and friends), kept in the store with AWS's shapes and errors."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.clock import Clock
from gateway.errors import (
    DeleteConflictException,
    InvalidRequestException,
    LimitExceededException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from gateway.identity.custom_auth import load_public_key
from gateway.store import Store

_NAME = re.compile(r"[\w=,@-]{1,128}")
_KEY_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_STATUSES = ("ACTIVE", "INACTIVE")
MAX_AUTHORIZERS = 32  # AWS's default quota per account and region
MAX_SIGNING_KEYS = 2


class Authorizers:
    def __init__(self, store: Store, clock: Clock, region: str, account: str) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.generation = 0  # bumped on every change, so connect-time lookups can be cached
        self._cache: dict[str, dict[str, Any] | None] = {}

    def arn(self, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:authorizer/{name}"

    # ---- reads used at connect time (cached until the next change)
    def get(self, name: str) -> dict[str, Any] | None:
        if name not in self._cache:
            row = self.store.one(
                "SELECT spec, is_default, created_ms, modified_ms FROM custom_authorizers WHERE name=?", (name,)
            )
            self._cache[name] = None if row is None else self._spec(name, row)
            if len(self._cache) > 1024:
                self._cache.clear()
        return self._cache[name]

    def default_name(self) -> str | None:
        if "\0default" not in self._cache:
            row = self.store.one("SELECT name FROM custom_authorizers WHERE is_default=1")
            self._cache["\0default"] = None if row is None else {"name": row["name"]}
        entry = self._cache["\0default"]
        return None if entry is None else str(entry["name"])

    def _spec(self, name: str, row: Any) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(row["spec"])
        spec.update(name=name, default=bool(row["is_default"]), created_ms=row["created_ms"],
                    modified_ms=row["modified_ms"])  # fmt: skip
        return spec

    def _changed(self) -> None:
        self.generation += 1
        self._cache.clear()

    def external_change(self) -> None:
        self._changed()

    # ---- the control plane
    def _require(self, name: str) -> dict[str, Any]:
        spec = self.get(name)
        if spec is None:
            raise ResourceNotFoundException(f"Authorizer {name} does not exist")
        return spec

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestException(
                "1 validation error detected: Value at 'authorizerName' failed to satisfy constraint: Member must "
                "satisfy regular expression pattern: [\\w=,@-]+ and have length between 1 and 128"
            )
        return name

    @staticmethod
    def _check_signing(spec: dict[str, Any]) -> None:
        if spec.get("signingDisabled"):
            return
        keys = spec.get("tokenSigningPublicKeys") or {}
        if not spec.get("tokenKeyName") or not keys:
            raise InvalidRequestException(
                "tokenKeyName and tokenSigningPublicKeys are required when signing is enabled (signingDisabled false)"
            )

    @staticmethod
    def _check_fields(params: dict[str, Any]) -> None:
        arn = params.get("authorizerFunctionArn")
        if arn is not None and (not isinstance(arn, str) or not arn.startswith("arn:aws:lambda:") or len(arn) > 2048):
            raise InvalidRequestException(f"authorizerFunctionArn {arn!r} is not a Lambda function ARN")
        key_name = params.get("tokenKeyName")
        if key_name is not None and (not isinstance(key_name, str) or not _KEY_NAME.fullmatch(key_name)):
            raise InvalidRequestException(
                "Value at 'tokenKeyName' failed to satisfy constraint: Member must satisfy regular expression "
                "pattern: ^[a-zA-Z0-9_-]+$ and have length between 1 and 128"
            )
        keys = params.get("tokenSigningPublicKeys")
        if keys is not None:
            if not isinstance(keys, dict) or len(keys) > MAX_SIGNING_KEYS:
                raise InvalidRequestException(f"tokenSigningPublicKeys holds at most {MAX_SIGNING_KEYS} keys")
            for key_id, pem in keys.items():
                try:
                    load_public_key(str(pem))
                except ValueError as exc:
                    raise InvalidRequestException(f"The public key {key_id} {exc}") from None
        status = params.get("status")
        if status is not None and status not in _STATUSES:
            raise InvalidRequestException(
                f"Value '{status}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: "
                "[ACTIVE, INACTIVE]"
            )

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name(params.get("authorizerName"))
        if not params.get("authorizerFunctionArn"):
            raise InvalidRequestException("authorizerFunctionArn is required")
        self._check_fields(params)
        spec = {
            "authorizerFunctionArn": params["authorizerFunctionArn"],
            "tokenKeyName": params.get("tokenKeyName"),
            "tokenSigningPublicKeys": params.get("tokenSigningPublicKeys") or {},
            "status": params.get("status") or "ACTIVE",
            "signingDisabled": bool(params.get("signingDisabled", False)),
            "enableCachingForHttp": bool(params.get("enableCachingForHttp", False)),
        }
        self._check_signing(spec)
        now = self.clock.wall_ms()
        with self.store.transaction() as db:
            if self.store.one("SELECT 1 FROM custom_authorizers WHERE name=?", (name,)) is not None:
                raise ResourceAlreadyExistsException(f"Authorizer {name} already exists")
            row = self.store.one("SELECT COUNT(*) AS n FROM custom_authorizers")
            count = row["n"] if row is not None else 0
            if count >= MAX_AUTHORIZERS:
                raise LimitExceededException(f"The account already has {MAX_AUTHORIZERS} authorizers")
            db.execute("INSERT INTO custom_authorizers(name, spec, created_ms, modified_ms) VALUES (?,?,?,?)",
                       (name, json.dumps(spec), now, now))  # fmt: skip
        self._changed()
        return {"authorizerName": name, "authorizerArn": self.arn(name)}

    def update(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self._check_name(params.get("authorizerName"))
        self._check_fields(params)
        spec = dict(self._require(name))
        for key in ("authorizerFunctionArn", "tokenKeyName", "tokenSigningPublicKeys", "status"):
            if params.get(key) is not None:
                spec[key] = params[key]
        if params.get("enableCachingForHttp") is not None:
            spec["enableCachingForHttp"] = bool(params["enableCachingForHttp"])
        self._check_signing(spec)
        stored = {k: v for k, v in spec.items() if k not in ("name", "default", "created_ms", "modified_ms")}
        with self.store.transaction() as db:
            db.execute("UPDATE custom_authorizers SET spec=?, modified_ms=? WHERE name=?",
                       (json.dumps(stored), self.clock.wall_ms(), name))  # fmt: skip
        self._changed()
        return {"authorizerName": name, "authorizerArn": self.arn(name)}

    def describe(self, name: str) -> dict[str, Any]:
        return {"authorizerDescription": self._description(self._require(self._check_name(name)))}

    def _description(self, spec: dict[str, Any]) -> dict[str, Any]:
        out = {
            "authorizerName": spec["name"],
            "authorizerArn": self.arn(spec["name"]),
            "authorizerFunctionArn": spec["authorizerFunctionArn"],
            "tokenSigningPublicKeys": spec.get("tokenSigningPublicKeys") or {},
            "status": spec["status"],
            "creationDate": spec["created_ms"] / 1000,
            "lastModifiedDate": spec["modified_ms"] / 1000,
            "signingDisabled": spec.get("signingDisabled", False),
            "enableCachingForHttp": spec.get("enableCachingForHttp", False),
        }
        if spec.get("tokenKeyName"):
            out["tokenKeyName"] = spec["tokenKeyName"]
        return out

    def list(self, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("status")
        if status is not None and status not in _STATUSES:
            raise InvalidRequestException(f"Value '{status}' at 'status' failed to satisfy constraint")
        size = params.get("pageSize") or 100
        if not isinstance(size, int) or not 1 <= size <= 250:
            raise InvalidRequestException("pageSize must be between 1 and 250")
        descending = params.get("ascendingOrder") is False
        names = [r["name"] for r in self.store.query(
            f"SELECT name FROM custom_authorizers ORDER BY name {'DESC' if descending else 'ASC'}")]  # fmt: skip
        if status is not None:
            names = [n for n in names if (self.get(n) or {}).get("status") == status]
        marker = params.get("marker")
        start = 0
        if marker:
            try:
                start = names.index(marker)
            except ValueError:
                raise InvalidRequestException("The marker is not valid") from None
        page = names[start : start + size]
        out: dict[str, Any] = {"authorizers": [{"authorizerName": n, "authorizerArn": self.arn(n)} for n in page]}
        if start + size < len(names):
            out["nextMarker"] = names[start + size]
        return out

    def delete(self, name: str) -> None:
        spec = self._require(self._check_name(name))
        if spec["status"] == "ACTIVE":
            raise DeleteConflictException(f"Authorizer {name} is ACTIVE: set its status to INACTIVE first")
        if spec["default"]:
            raise DeleteConflictException(f"Authorizer {name} is the default authorizer")
        with self.store.transaction() as db:
            db.execute("DELETE FROM custom_authorizers WHERE name=?", (name,))
        self._changed()

    def set_default(self, name: str) -> dict[str, Any]:
        spec = self._require(self._check_name(name))
        if spec["status"] != "ACTIVE":
            raise InvalidRequestException(f"Authorizer {name} is INACTIVE and cannot be the default")
        with self.store.transaction() as db:
            db.execute("UPDATE custom_authorizers SET is_default = (name = ?)", (name,))
        self._changed()
        return {"authorizerName": name, "authorizerArn": self.arn(name)}

    def describe_default(self) -> dict[str, Any]:
        name = self.default_name()
        if name is None:
            raise ResourceNotFoundException("No default authorizer is set")
        return {"authorizerDescription": self._description(self._require(name))}
