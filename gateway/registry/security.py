"""Certificates, CA certificates, policies (with versions) and attachments."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from gateway import limits
from gateway.errors import (
    CertificateStateException,
    CertificateValidationException,
    DeleteConflictException,
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionsLimitExceededException,
)
from gateway.identity import ca as ca_mod
from gateway.identity.certs import CertInfo, parse_certificate, verify_signed_by
from gateway.identity.policy_doc import PolicyDocument, parse_policy_document
from gateway.registry.base import paginate
from gateway.registry.cas import CaRegistry
from gateway.registry.validation import POLICY_NAME, check_certificate_id, check_name

CERT_STATUSES = {"ACTIVE", "INACTIVE", "REVOKED", "PENDING_TRANSFER", "REGISTER_INACTIVE", "PENDING_ACTIVATION"}

_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


class SecurityRegistry(CaRegistry):
    local_ca: ca_mod.IssuedCert | None = None
    _doc_cache: dict[tuple[str, str], PolicyDocument]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.wall_ms() / 1000, tz=UTC)

    # ---- device certificates
    def _insert_certificate(self, info: CertInfo, status: str, ca_id: str | None) -> dict[str, Any]:
        if status not in CERT_STATUSES:
            raise InvalidRequestException(f"status must be one of {sorted(CERT_STATUSES)}")
        now = self.clock.wall_ms()
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM certificates WHERE id=?", (info.certificate_id,)):
                raise ResourceAlreadyExistsException(
                    f"The certificate is already provisioned or registered: {info.certificate_id}"
                )
            # AWS: a certificate is registered in the certificate mode of the CA that signed it.
            ca = self.store.one("SELECT mode FROM ca_certificates WHERE id=?", (ca_id,)) if ca_id else None
            self.store.db.execute(
                "INSERT INTO certificates(id, pem, status, ca_id, mode, created_ms, modified_ms)"
                " VALUES (?,?,?,?,?,?,?)",
                (info.certificate_id, info.pem, status, ca_id, ca["mode"] if ca else "DEFAULT", now, now),
            )
        self._changed("certificate", info.certificate_id)
        return {"certificateArn": self.arn("cert", info.certificate_id), "certificateId": info.certificate_id}

    def _require_local_ca(self) -> ca_mod.IssuedCert:
        if self.local_ca is None or self.local_ca.key_pem is None:
            raise InvalidRequestException("This gateway has no local CA key; run `edgesim certs init` first")
        return self.local_ca

    def create_keys_and_certificate(
        self, set_as_active: bool = False, key_type: ca_mod.KeyType = "ec"
    ) -> dict[str, Any]:
        issued = ca_mod.issue_device_cert(self._require_local_ca(), now=self._now(), key_type=key_type)
        info = parse_certificate(issued.cert_pem)
        ca_id = self.find_ca_for(issued.cert_pem)
        out = self._insert_certificate(info, "ACTIVE" if set_as_active else "INACTIVE", ca_id)
        out["certificatePem"] = issued.cert_pem.decode()
        out["keyPair"] = {
            "PublicKey": issued.public_key_pem.decode(),
            "PrivateKey": (issued.key_pem or b"").decode(),
        }
        return out

    def create_certificate_from_csr(
        self, certificate_signing_request: str, set_as_active: bool = False
    ) -> dict[str, Any]:
        pem = ca_mod.sign_csr(self._require_local_ca(), certificate_signing_request.encode(), now=self._now())
        info = parse_certificate(pem)
        out = self._insert_certificate(info, "ACTIVE" if set_as_active else "INACTIVE", self.find_ca_for(pem))
        out["certificatePem"] = pem.decode()
        return out

    def register_certificate(
        self,
        certificate_pem: str,
        ca_certificate_pem: str | None = None,
        status: str | None = None,
        set_as_active: bool = False,
    ) -> dict[str, Any]:
        info = parse_certificate(certificate_pem.encode())
        if ca_certificate_pem is not None:
            if not verify_signed_by(certificate_pem.encode(), ca_certificate_pem.encode()):
                raise CertificateValidationException("The certificate is not signed by the given CA certificate")
            ca_id: str | None = parse_certificate(ca_certificate_pem.encode()).certificate_id
            if self.store.one("SELECT 1 FROM ca_certificates WHERE id=?", (ca_id,)) is None:
                raise ResourceNotFoundException("The CA certificate is not registered")
        else:
            ca_id = self.find_ca_for(certificate_pem.encode())
            if ca_id is None:
                raise CertificateValidationException(
                    "The certificate's CA is not registered; use RegisterCertificateWithoutCA or register the CA"
                )
        chosen = status or ("ACTIVE" if set_as_active else "INACTIVE")
        return self._insert_certificate(info, chosen, ca_id)

    def register_certificate_without_ca(self, certificate_pem: str, status: str = "INACTIVE") -> dict[str, Any]:
        info = parse_certificate(certificate_pem.encode())
        return self._insert_certificate(info, status, None)

    def _cert_row(self, certificate_id: str) -> Any:
        check_certificate_id(certificate_id)
        row = self.store.one("SELECT * FROM certificates WHERE id=?", (certificate_id.lower(),))
        if row is None:
            raise ResourceNotFoundException(f"The certificate {certificate_id} does not exist")
        return row

    def certificate_row(self, certificate_id: str) -> Any | None:
        return self.store.one("SELECT * FROM certificates WHERE id=?", (certificate_id,))

    def update_certificate(self, certificate_id: str, new_status: str) -> None:
        if new_status not in CERT_STATUSES - {"PENDING_TRANSFER"}:
            raise InvalidRequestException(f"newStatus {new_status!r} is not a valid certificate status")
        with self.store.transaction():
            row = self._cert_row(certificate_id)
            if row["status"] in ("REVOKED", "PENDING_TRANSFER") and new_status != row["status"]:
                raise CertificateStateException(
                    f"Certificate {certificate_id} is {row['status']} and its status cannot be changed"
                )
            self.store.db.execute(
                "UPDATE certificates SET status=?, modified_ms=? WHERE id=?",
                (new_status, self.clock.wall_ms(), row["id"]),
            )
        self._changed("certificate", row["id"])

    def describe_certificate(self, certificate_id: str) -> dict[str, Any]:
        row = self._cert_row(certificate_id)
        info = parse_certificate(row["pem"].encode())
        desc: dict[str, Any] = {
            "certificateArn": self.arn("cert", row["id"]),
            "certificateId": row["id"],
            "status": row["status"],
            "certificatePem": row["pem"],
            "ownedBy": self.account,
            "creationDate": row["created_ms"] / 1000,
            "lastModifiedDate": row["modified_ms"] / 1000,
            "customerVersion": 1,
            "generationId": hashlib.sha256(f"{row['id']}{row['modified_ms']}".encode()).hexdigest()[:36],
            "transferData": {},
            "validity": {"notBefore": info.not_before.timestamp(), "notAfter": info.not_after.timestamp()},
            "certificateMode": row["mode"],
        }
        if row["ca_id"]:
            desc["caCertificateId"] = row["ca_id"]
        return {"certificateDescription": desc}

    def list_certificates(
        self, max_results: int | None = None, next_token: str | None = None, ca_certificate_id: str | None = None
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM certificates ORDER BY created_ms, id")
        items = [
            {
                "certificateArn": self.arn("cert", r["id"]),
                "certificateId": r["id"],
                "status": r["status"],
                "certificateMode": r["mode"],
                "creationDate": r["created_ms"] / 1000,
            }
            for r in rows
            if ca_certificate_id in (None, r["ca_id"])
        ]
        page, token = paginate(items, max_results, next_token)
        return {"certificates": page, **({"nextMarker": token} if token else {})}

    def delete_certificate(self, certificate_id: str, force_delete: bool = False) -> None:
        with self.store.transaction():
            row = self._cert_row(certificate_id)
            arn = self.arn("cert", row["id"])
            if row["status"] == "ACTIVE":
                raise CertificateStateException("Certificate must be deactivated (not ACTIVE) before deletion.")
            if self.store.one("SELECT 1 FROM thing_principals WHERE principal=?", (arn,)):
                raise DeleteConflictException("Things must be detached before deletion (arn: " + arn + ")")
            if self.store.one("SELECT 1 FROM policy_targets WHERE target=?", (arn,)):
                if not force_delete:
                    raise DeleteConflictException(
                        "Certificate policies must be detached before deletion (arn: " + arn + ")"
                    )
                self.store.db.execute("DELETE FROM policy_targets WHERE target=?", (arn,))
            self.store.db.execute("DELETE FROM certificates WHERE id=?", (row["id"],))
        self._changed("certificate", row["id"])

    # ---- policies
    def _parse_policy(self, document: str) -> PolicyDocument:
        return parse_policy_document(document)

    def create_policy(self, policy_name: str, policy_document: str) -> dict[str, Any]:
        check_name(policy_name, "policyName", POLICY_NAME)
        self._parse_policy(policy_document)
        now = self.clock.wall_ms()
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM policies WHERE name=?", (policy_name,)):
                raise ResourceAlreadyExistsException(
                    f"Policy cannot be created - name already exists (name={policy_name})"
                )
            self.store.db.execute(
                "INSERT INTO policies(name, default_version, next_version, created_ms, modified_ms) VALUES (?,?,?,?,?)",
                (policy_name, "1", 2, now, now),
            )
            self.store.db.execute(
                "INSERT INTO policy_versions(policy_name, version_id, document, created_ms) VALUES (?,?,?,?)",
                (policy_name, "1", policy_document, now),
            )
        return {
            "policyName": policy_name,
            "policyArn": self.arn("policy", policy_name),
            "policyDocument": policy_document,
            "policyVersionId": "1",
        }

    def _policy_row(self, name: str) -> Any:
        return self._require("policies", name, f"Policy not found (name={name})")

    def get_policy(self, policy_name: str) -> dict[str, Any]:
        row = self._policy_row(policy_name)
        doc = self.store.one(
            "SELECT document FROM policy_versions WHERE policy_name=? AND version_id=?",
            (policy_name, row["default_version"]),
        )
        assert doc is not None  # the default version always exists (enforced by delete_policy_version)
        return {
            "policyName": policy_name,
            "policyArn": self.arn("policy", policy_name),
            "policyDocument": doc["document"],
            "defaultVersionId": row["default_version"],
            "creationDate": row["created_ms"] / 1000,
            "lastModifiedDate": row["modified_ms"] / 1000,
            "generationId": f"{row['modified_ms']}",
        }

    def get_policy_version(self, policy_name: str, policy_version_id: str) -> dict[str, Any]:
        row = self._policy_row(policy_name)
        ver = self.store.one(
            "SELECT * FROM policy_versions WHERE policy_name=? AND version_id=?", (policy_name, policy_version_id)
        )
        if ver is None:
            raise ResourceNotFoundException(
                f"Policy version not found (name={policy_name}, version={policy_version_id})"
            )
        return {
            "policyArn": self.arn("policy", policy_name),
            "policyName": policy_name,
            "policyDocument": ver["document"],
            "policyVersionId": policy_version_id,
            "isDefaultVersion": policy_version_id == row["default_version"],
            "creationDate": ver["created_ms"] / 1000,
        }

    def list_policies(self, max_results: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        rows = self.store.query("SELECT name FROM policies ORDER BY name")
        items = [{"policyName": r["name"], "policyArn": self.arn("policy", r["name"])} for r in rows]
        page, token = paginate(items, max_results, next_token)
        return {"policies": page, **({"nextMarker": token} if token else {})}

    def list_policy_versions(self, policy_name: str) -> dict[str, Any]:
        row = self._policy_row(policy_name)
        vers = self.store.query(
            "SELECT * FROM policy_versions WHERE policy_name=? ORDER BY CAST(version_id AS INT)", (policy_name,)
        )
        return {
            "policyVersions": [
                {
                    "versionId": v["version_id"],
                    "isDefaultVersion": v["version_id"] == row["default_version"],
                    "createDate": v["created_ms"] / 1000,
                }
                for v in vers
            ]
        }

    def create_policy_version(
        self, policy_name: str, policy_document: str, set_as_default: bool = False
    ) -> dict[str, Any]:
        self._parse_policy(policy_document)
        now = self.clock.wall_ms()
        with self.store.transaction():
            row = self._policy_row(policy_name)
            count = self.store.one("SELECT COUNT(*) AS n FROM policy_versions WHERE policy_name=?", (policy_name,))
            if count is not None and count["n"] >= limits.MAX_POLICY_VERSIONS:
                raise VersionsLimitExceededException(
                    f"The policy {policy_name} already has the maximum number of versions "
                    f"({limits.MAX_POLICY_VERSIONS})"
                )
            version = str(row["next_version"])
            self.store.db.execute(
                "INSERT INTO policy_versions(policy_name, version_id, document, created_ms) VALUES (?,?,?,?)",
                (policy_name, version, policy_document, now),
            )
            self.store.db.execute(
                "UPDATE policies SET next_version=next_version+1, modified_ms=?"
                + (", default_version=?" if set_as_default else "")
                + " WHERE name=?",
                (now, version, policy_name) if set_as_default else (now, policy_name),
            )
        if set_as_default:
            self._changed("policy", policy_name)
        return {
            "policyArn": self.arn("policy", policy_name),
            "policyDocument": policy_document,
            "policyVersionId": version,
            "isDefaultVersion": set_as_default,
        }

    def set_default_policy_version(self, policy_name: str, policy_version_id: str) -> None:
        with self.store.transaction():
            self.get_policy_version(policy_name, policy_version_id)
            self.store.db.execute(
                "UPDATE policies SET default_version=?, modified_ms=? WHERE name=?",
                (policy_version_id, self.clock.wall_ms(), policy_name),
            )
        self._changed("policy", policy_name)

    def delete_policy_version(self, policy_name: str, policy_version_id: str) -> None:
        with self.store.transaction():
            version = self.get_policy_version(policy_name, policy_version_id)
            if version["isDefaultVersion"]:
                raise DeleteConflictException("Cannot delete the default version of a policy")
            self.store.db.execute(
                "DELETE FROM policy_versions WHERE policy_name=? AND version_id=?", (policy_name, policy_version_id)
            )

    def delete_policy(self, policy_name: str) -> None:
        with self.store.transaction():
            self._policy_row(policy_name)
            if self.store.one("SELECT 1 FROM policy_targets WHERE policy_name=?", (policy_name,)):
                raise DeleteConflictException(
                    f"The policy cannot be deleted as the policy is attached to one or more principals "
                    f"(name={policy_name})"
                )
            if (
                self.store.one("SELECT COUNT(*) AS n FROM policy_versions WHERE policy_name=?", (policy_name,))
                or {"n": 0}
            )["n"] > 1:
                raise DeleteConflictException(
                    "Cannot delete the policy because it has one or more policy versions attached to it "
                    f"(name={policy_name})"
                )
            self.store.db.execute("DELETE FROM policies WHERE name=?", (policy_name,))
        for key in [k for k in self.__dict__.get("_doc_cache", {}) if k[0] == policy_name]:
            del self.__dict__["_doc_cache"][key]

    def _check_target(self, target: str) -> None:
        prefix = f"arn:aws:iot:{self.region}:{self.account}:"
        if target.startswith(prefix + "cert/"):
            self._cert_row(target.removeprefix(prefix + "cert/"))
        elif target.startswith(prefix + "thinggroup/"):
            self._group_row(target.removeprefix(prefix + "thinggroup/"))
        elif not target.startswith("arn:aws:") and not _ACCESS_KEY_ID.fullmatch(target):
            # AWS also accepts Cognito identity ids; we know certificates, groups and (standing in for IAM policies
            # on SigV4 clients) access key ids.
            raise InvalidRequestException(f"Invalid target: {target}")

    def attach_policy(self, policy_name: str, target: str) -> None:
        with self.store.transaction():
            self._policy_row(policy_name)
            self._check_target(target)
            self.store.db.execute(
                "INSERT OR IGNORE INTO policy_targets(policy_name, target) VALUES (?,?)", (policy_name, target)
            )
        self._changed("attachment", target)

    def detach_policy(self, policy_name: str, target: str) -> None:
        with self.store.transaction():
            self._policy_row(policy_name)
            self.store.db.execute("DELETE FROM policy_targets WHERE policy_name=? AND target=?", (policy_name, target))
        self._changed("attachment", target)

    def list_attached_policies(self, target: str, recursive: bool = False) -> dict[str, Any]:
        targets = [target]
        prefix = f"arn:aws:iot:{self.region}:{self.account}:thinggroup/"
        if recursive and target.startswith(prefix):
            targets = [self.arn("thinggroup", g) for g in self._ancestors(target.removeprefix(prefix))]
        names: list[str] = []
        for t in targets:
            for r in self.store.query(
                "SELECT policy_name FROM policy_targets WHERE target=? ORDER BY policy_name", (t,)
            ):
                if r["policy_name"] not in names:
                    names.append(r["policy_name"])
        return {"policies": [{"policyName": n, "policyArn": self.arn("policy", n)} for n in names]}

    def list_targets_for_policy(self, policy_name: str) -> dict[str, Any]:
        self._policy_row(policy_name)
        rows = self.store.query("SELECT target FROM policy_targets WHERE policy_name=? ORDER BY target", (policy_name,))
        return {"targets": [r["target"] for r in rows]}

    def ensure_policy(self, policy_name: str, policy_document: str) -> PolicyDocument:
        """The named policy's document, creating the policy with `policy_document` if it does not exist yet."""
        if self.store.one("SELECT 1 FROM policies WHERE name=?", (policy_name,)) is None:
            self.create_policy(policy_name, policy_document)
        return self.policy_document(policy_name)

    def policy_document(self, policy_name: str) -> PolicyDocument:
        """The parsed default version, cached by (name, version)."""
        row = self._policy_row(policy_name)
        key = (policy_name, row["default_version"])
        cache = self.__dict__.setdefault("_doc_cache", {})
        if key not in cache:
            cache[key] = self._parse_policy(self.get_policy(policy_name)["policyDocument"])
        doc: PolicyDocument = cache[key]
        return doc

    # ---- thing principals
    def attach_thing_principal(self, thing_name: str, principal: str, thing_principal_type: str | None = None) -> None:
        exclusive = thing_principal_type == "EXCLUSIVE_THING"
        with self.store.transaction():
            self._thing_row(thing_name)
            self._check_target(principal)
            if exclusive and self.store.one(
                "SELECT 1 FROM thing_principals WHERE principal=? AND thing_name<>?", (principal, thing_name)
            ):
                raise InvalidRequestException("An exclusive principal can be attached to only one thing")
            self.store.db.execute(
                "INSERT OR REPLACE INTO thing_principals(thing_name, principal, exclusive) VALUES (?,?,?)",
                (thing_name, principal, int(exclusive)),
            )
        self._changed("attachment", principal)

    def detach_thing_principal(self, thing_name: str, principal: str) -> None:
        with self.store.transaction():
            self._thing_row(thing_name)
            self.store.db.execute(
                "DELETE FROM thing_principals WHERE thing_name=? AND principal=?", (thing_name, principal)
            )
        self._changed("attachment", principal)

    def list_thing_principals(self, thing_name: str) -> dict[str, Any]:
        self._thing_row(thing_name)
        rows = self.store.query(
            "SELECT principal FROM thing_principals WHERE thing_name=? ORDER BY principal", (thing_name,)
        )
        return {"principals": [r["principal"] for r in rows]}

    def list_principal_things(self, principal: str) -> dict[str, Any]:
        rows = self.store.query(
            "SELECT thing_name FROM thing_principals WHERE principal=? ORDER BY thing_name", (principal,)
        )
        return {"things": [r["thing_name"] for r in rows]}

    def principal_attachments(self, principal: str) -> list[tuple[str, bool]]:
        rows = self.store.query("SELECT thing_name, exclusive FROM thing_principals WHERE principal=?", (principal,))
        return [(r["thing_name"], bool(r["exclusive"])) for r in rows]
