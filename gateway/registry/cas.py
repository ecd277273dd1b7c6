"""CA certificates (RegisterCACertificate with proof of possession, certificate modes, auto-registration and the
JITP registration config) and the account's registration code."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from gateway.errors import (
    CertificateStateException,
    CertificateValidationException,
    InvalidRequestException,
    RegistrationCodeValidationException,
    ResourceAlreadyExistsException,
)
from gateway.identity.certs import CertInfo, parse_certificate, verify_signed_by
from gateway.registry.base import paginate
from gateway.registry.things import ThingsRegistry

CA_STATUSES = {"ACTIVE", "INACTIVE"}
CERTIFICATE_MODES = ("DEFAULT", "SNI_ONLY")
ROLE_ARN = re.compile(r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
TEMPLATE_NAME = re.compile(r"[0-9A-Za-z_-]{1,36}")
MAX_TEMPLATE_BODY = 10240


def check_registration_config(config: Any) -> dict[str, str] | None:
    """A RegistrationConfig as AWS constrains it (templateBody, templateName, roleArn), or None when empty."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise InvalidRequestException("registrationConfig must be an object")
    out: dict[str, str] = {}
    body = config.get("templateBody")
    if body is not None:
        if not isinstance(body, str) or len(body) > MAX_TEMPLATE_BODY:
            raise InvalidRequestException(f"templateBody must be a string of at most {MAX_TEMPLATE_BODY} characters")
        try:
            parsed = json.loads(body) if body else {}
        except ValueError as exc:
            raise InvalidRequestException(f"The provisioning template is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise InvalidRequestException("The provisioning template must be a JSON object")
        out["templateBody"] = body
    name = config.get("templateName")
    if name is not None:
        if not isinstance(name, str) or not TEMPLATE_NAME.fullmatch(name):
            raise InvalidRequestException("templateName must match ^[0-9A-Za-z_-]+$ (1 to 36 characters)")
        out["templateName"] = name
    role = config.get("roleArn")
    if role is not None:
        if not isinstance(role, str) or not 20 <= len(role) <= 2048 or not ROLE_ARN.fullmatch(role):
            raise InvalidRequestException(f"roleArn {role!r} is not a valid IAM role ARN")
        out["roleArn"] = role
    return out or None


class CaRegistry(ThingsRegistry):
    # ---- registration code
    def get_registration_code(self) -> dict[str, Any]:
        """The account's CA registration code (created on first use; stable until DeleteRegistrationCode)."""
        with self.store.transaction():
            row = self.store.one("SELECT code FROM registration_code WHERE id=1")
            if row is not None:
                return {"registrationCode": row["code"]}
            code = secrets.token_hex(32)
            self.store.db.execute("INSERT INTO registration_code(id, code) VALUES (1, ?)", (code,))
        return {"registrationCode": code}

    def delete_registration_code(self) -> None:
        with self.store.transaction():
            self.store.db.execute("DELETE FROM registration_code WHERE id=1")

    # ---- CA certificates
    def register_ca_certificate(
        self,
        ca_certificate: str,
        set_as_active: bool = False,
        allow_auto_registration: bool = False,
        verification_certificate: str | None = None,
        registration_config: Any = None,
        certificate_mode: str | None = None,
    ) -> dict[str, Any]:
        """RegisterCACertificate. DEFAULT mode needs a verification certificate whose common name is the registration
        code and which the CA's key signed (proof that the caller holds the CA's private key); SNI_ONLY needs none."""
        mode = certificate_mode or "DEFAULT"
        if mode not in CERTIFICATE_MODES:
            raise InvalidRequestException(f"certificateMode must be one of {list(CERTIFICATE_MODES)}")
        config = check_registration_config(registration_config)
        info = parse_certificate(ca_certificate.encode())
        if not info.is_ca:
            raise CertificateValidationException("The certificate is not a CA certificate (basicConstraints CA=false)")
        if mode == "DEFAULT":
            self._check_proof_of_possession(ca_certificate, verification_certificate)
        return self._insert_ca(info, set_as_active, allow_auto_registration, mode, config)

    def _check_proof_of_possession(self, ca_pem: str, verification_pem: str | None) -> None:
        if not verification_pem:
            raise InvalidRequestException(
                "A verification certificate is required to register a CA certificate in DEFAULT mode; "
                "register it with certificateMode SNI_ONLY to skip the proof of possession"
            )
        verification = parse_certificate(verification_pem.encode())
        row = self.store.one("SELECT code FROM registration_code WHERE id=1")
        names = verification.subject.get("CommonName", ())
        if row is None or row["code"] not in names:
            raise RegistrationCodeValidationException(
                "The verification certificate's common name is not this account's registration code "
                "(see GetRegistrationCode)"
            )
        if not verify_signed_by(verification_pem.encode(), ca_pem.encode()):
            raise CertificateValidationException("The verification certificate is not signed by the CA certificate")

    def _insert_ca(
        self, info: CertInfo, active: bool, auto_registration: bool, mode: str, config: dict[str, str] | None
    ) -> dict[str, Any]:
        now = self.clock.wall_ms()
        with self.store.transaction():
            if self.store.one("SELECT 1 FROM ca_certificates WHERE id=?", (info.certificate_id,)):
                raise ResourceAlreadyExistsException("The CA certificate is already registered")
            self.store.db.execute(
                "INSERT INTO ca_certificates(id, pem, status, auto_registration, mode, registration_config,"
                " created_ms, modified_ms) VALUES (?,?,?,?,?,?,?,?)",
                (
                    info.certificate_id,
                    info.pem,
                    "ACTIVE" if active else "INACTIVE",
                    int(auto_registration),
                    mode,
                    json.dumps(config) if config else None,
                    now,
                    now,
                ),
            )
        self._changed("ca", info.certificate_id)
        return {"certificateArn": self.arn("cacert", info.certificate_id), "certificateId": info.certificate_id}

    def ensure_ca_registered(self, pem: str) -> str:
        """Register (idempotently, ACTIVE) the gateway's own CA so the devices it issues can connect."""
        info = parse_certificate(pem.encode())
        if self.store.one("SELECT 1 FROM ca_certificates WHERE id=?", (info.certificate_id,)) is None:
            self._insert_ca(info, True, False, "DEFAULT", None)
        return info.certificate_id

    def ca_row(self, ca_id: str) -> Any:
        return self._require("ca_certificates", ca_id, f"CA certificate {ca_id} does not exist")

    def registration_config(self, ca_id: str) -> dict[str, str] | None:
        row = self.store.one("SELECT registration_config FROM ca_certificates WHERE id=?", (ca_id,))
        if row is None or not row["registration_config"]:
            return None
        config: dict[str, str] = json.loads(row["registration_config"])
        return config

    def describe_ca_certificate(self, certificate_id: str) -> dict[str, Any]:
        row = self.ca_row(certificate_id)
        info = parse_certificate(row["pem"].encode())
        out: dict[str, Any] = {
            "certificateDescription": {
                "certificateArn": self.arn("cacert", row["id"]),
                "certificateId": row["id"],
                "status": row["status"],
                "certificatePem": row["pem"],
                "ownedBy": self.account,
                "creationDate": row["created_ms"] / 1000,
                "lastModifiedDate": row["modified_ms"] / 1000,
                "autoRegistrationStatus": "ENABLE" if row["auto_registration"] else "DISABLE",
                "customerVersion": 1,
                "generationId": row["id"][:36],
                "validity": {"notBefore": info.not_before.timestamp(), "notAfter": info.not_after.timestamp()},
                "certificateMode": row["mode"],
            }
        }
        config = self.registration_config(row["id"])
        if config:
            out["registrationConfig"] = config
        return out

    def update_ca_certificate(
        self,
        certificate_id: str,
        new_status: str | None = None,
        new_auto_registration_status: str | None = None,
        registration_config: Any = None,
        remove_auto_registration: bool = False,
    ) -> None:
        if new_status is not None and new_status not in CA_STATUSES:
            raise InvalidRequestException(f"newStatus must be one of {sorted(CA_STATUSES)}")
        if new_auto_registration_status not in (None, "ENABLE", "DISABLE"):
            raise InvalidRequestException("newAutoRegistrationStatus must be ENABLE or DISABLE")
        config = check_registration_config(registration_config)
        now = self.clock.wall_ms()
        with self.store.transaction():
            self.ca_row(certificate_id)
            if new_status is not None:
                self.store.db.execute("UPDATE ca_certificates SET status=? WHERE id=?", (new_status, certificate_id))
            if new_auto_registration_status is not None or remove_auto_registration:
                enable = new_auto_registration_status == "ENABLE" and not remove_auto_registration
                self.store.db.execute(
                    "UPDATE ca_certificates SET auto_registration=? WHERE id=?", (int(enable), certificate_id)
                )
            if registration_config is not None:
                self.store.db.execute(
                    "UPDATE ca_certificates SET registration_config=? WHERE id=?",
                    (json.dumps(config) if config else None, certificate_id),
                )
            self.store.db.execute("UPDATE ca_certificates SET modified_ms=? WHERE id=?", (now, certificate_id))
        self._changed("ca", certificate_id)

    def list_ca_certificates(self, max_results: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM ca_certificates ORDER BY created_ms, id")
        items = [
            {
                "certificateArn": self.arn("cacert", r["id"]),
                "certificateId": r["id"],
                "status": r["status"],
                "creationDate": r["created_ms"] / 1000,
            }
            for r in rows
        ]
        page, token = paginate(items, max_results, next_token)
        return {"certificates": page, **({"nextMarker": token} if token else {})}

    def delete_ca_certificate(self, certificate_id: str) -> None:
        with self.store.transaction():
            row = self.ca_row(certificate_id)
            if row["status"] != "INACTIVE":
                raise CertificateStateException("The CA certificate must be INACTIVE before it can be deleted")
            if self.store.one("SELECT 1 FROM certificates WHERE ca_id=?", (certificate_id,)):
                raise CertificateStateException("Certificates signed by this CA are still registered")
            self.store.db.execute("DELETE FROM ca_certificates WHERE id=?", (certificate_id,))
        self._changed("ca", certificate_id)

    def find_ca_for(self, cert_pem: bytes) -> str | None:
        for row in self.store.query("SELECT id, pem FROM ca_certificates"):
            if verify_signed_by(cert_pem, row["pem"].encode()):
                return str(row["id"])
        return None
