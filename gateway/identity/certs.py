"""Parse X.509 certificates into the facts AWS IoT exposes: id, subject/issuer attributes, SANs, validity."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.errors import CertificateValidationException

__all__ = [
    "NAME_ATTRIBUTES",
    "SAN_TYPES",
    "CertInfo",
    "certificate_id",
    "check_validity",
    "load_certificate",
    "parse_certificate",
    "public_key_pem",
    "verify_signed_by",
]

INVALID_CERTIFICATE = "The certificate is not a valid X.509 certificate"

# AWS policy-variable attribute name -> X.500 attribute OID (iot:Certificate.Subject.<Attr>).
NAME_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "CommonName": NameOID.COMMON_NAME,
    "Country": NameOID.COUNTRY_NAME,
    "Organization": NameOID.ORGANIZATION_NAME,
    "OrganizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "State": NameOID.STATE_OR_PROVINCE_NAME,
    "Locality": NameOID.LOCALITY_NAME,
    "SerialNumber": NameOID.SERIAL_NUMBER,
    "Title": NameOID.TITLE,
    "Surname": NameOID.SURNAME,
    "GivenName": NameOID.GIVEN_NAME,
    "Initials": NameOID.INITIALS,
    "Pseudonym": NameOID.PSEUDONYM,
    "GenerationQualifier": NameOID.GENERATION_QUALIFIER,
    "DistinguishedNameQualifier": NameOID.DN_QUALIFIER,
}
_OID_TO_ATTRIBUTE = {oid: name for name, oid in NAME_ATTRIBUTES.items()}

SAN_TYPES: tuple[str, ...] = ("DNSName", "IPAddress", "RFC822Name", "UniformResourceIdentifier", "DirectoryName")


@dataclass(frozen=True)
class CertInfo:
    """What edgesim needs to know about one certificate; names follow AWS policy variables."""

    certificate_id: str
    pem: str
    subject: dict[str, tuple[str, ...]]
    issuer: dict[str, tuple[str, ...]]
    subject_string: str
    issuer_string: str
    subject_alt_names: dict[str, tuple[str, ...]]
    issuer_alt_names: dict[str, tuple[str, ...]]
    serial_number: str
    not_before: datetime
    not_after: datetime
    is_ca: bool
    is_self_issued: bool
    subject_key_id: str | None
    authority_key_id: str | None
    key_type: str
    key_size: int


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("ascii", errors="replace") if isinstance(data, str) else data


def load_certificate(pem_or_der: bytes | str) -> x509.Certificate:
    """Load one certificate from PEM (first block) or DER, raising CertificateValidationException on garbage."""
    data = _as_bytes(pem_or_der)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateValidationException(INVALID_CERTIFICATE) from exc


def certificate_id(cert_pem_or_der: bytes | str) -> str:
    """The AWS certificate id: lowercase hex SHA-256 of the DER encoding."""
    cert = load_certificate(cert_pem_or_der)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name_attributes(name: x509.Name) -> dict[str, tuple[str, ...]]:
    values: dict[str, list[str]] = {}
    for attribute in name:
        key = _OID_TO_ATTRIBUTE.get(attribute.oid)
        if key is None:
            continue
        value = attribute.value
        text = value if isinstance(value, str) else value.decode("utf-8", errors="replace")
        values.setdefault(key, []).append(text)
    return {key: tuple(items) for key, items in values.items()}


def _general_names(
    names: x509.GeneralNames | x509.SubjectAlternativeName | x509.IssuerAlternativeName,
) -> dict[str, tuple[str, ...]]:
    values: dict[str, list[str]] = {}
    for general_name in names:
        if isinstance(general_name, x509.DNSName):
            values.setdefault("DNSName", []).append(general_name.value)
        elif isinstance(general_name, x509.IPAddress):
            values.setdefault("IPAddress", []).append(str(general_name.value))
        elif isinstance(general_name, x509.RFC822Name):
            values.setdefault("RFC822Name", []).append(general_name.value)
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            values.setdefault("UniformResourceIdentifier", []).append(general_name.value)
        elif isinstance(general_name, x509.DirectoryName):
            values.setdefault("DirectoryName", []).append(general_name.value.rfc4514_string())
    return {key: tuple(items) for key, items in values.items()}


def _key_facts(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448", 456
    return "other", 0


def parse_certificate(pem_or_der: bytes | str) -> CertInfo:
    """Parse a PEM or DER certificate; malformed input or extensions raise CertificateValidationException."""
    cert = load_certificate(pem_or_der)
    # Extensions and names are decoded lazily, so malformed contents only surface here.
    try:
        extensions = cert.extensions
        subject_alt_names: dict[str, tuple[str, ...]] = {}
        issuer_alt_names: dict[str, tuple[str, ...]] = {}
        is_ca = False
        subject_key_id: str | None = None
        authority_key_id: str | None = None
        for extension in extensions:
            value = extension.value
            if isinstance(value, x509.SubjectAlternativeName):
                subject_alt_names = _general_names(value)
            elif isinstance(value, x509.IssuerAlternativeName):
                issuer_alt_names = _general_names(value)
            elif isinstance(value, x509.BasicConstraints):
                is_ca = value.ca
            elif isinstance(value, x509.SubjectKeyIdentifier):
                subject_key_id = value.digest.hex()
            elif isinstance(value, x509.AuthorityKeyIdentifier) and value.key_identifier is not None:
                authority_key_id = value.key_identifier.hex()
        key_type, key_size = _key_facts(cert)
        info = CertInfo(
            certificate_id=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            subject=_name_attributes(cert.subject),
            issuer=_name_attributes(cert.issuer),
            subject_string=cert.subject.rfc4514_string(),
            issuer_string=cert.issuer.rfc4514_string(),
            subject_alt_names=subject_alt_names,
            issuer_alt_names=issuer_alt_names,
            serial_number=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            is_ca=is_ca,
            is_self_issued=cert.subject == cert.issuer,
            subject_key_id=subject_key_id,
            authority_key_id=authority_key_id,
            key_type=key_type,
            key_size=key_size,
        )
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise CertificateValidationException(f"{INVALID_CERTIFICATE}: {exc}") from exc
    return info


def verify_signed_by(cert_pem: bytes | str, ca_pem: bytes | str) -> bool:
    """True when the certificate names the CA as issuer and the CA's key verifies its signature."""
    cert = load_certificate(cert_pem)
    ca = load_certificate(ca_pem)
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_validity(info: CertInfo, now: datetime) -> str | None:
    """None when `now` lies within the validity period (bounds inclusive), else why not; naive `now` is UTC."""
    moment = _utc(now)
    if moment < info.not_before:
        return f"certificate not valid before {_iso(info.not_before)}"
    if moment > info.not_after:
        return f"certificate expired at {_iso(info.not_after)}"
    return None


def public_key_pem(cert_pem: bytes | str) -> bytes:
    """The certificate's public key as a SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY")."""
    cert = load_certificate(cert_pem)
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateValidationException(f"{INVALID_CERTIFICATE}: {exc}") from exc
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
