"""A local certificate authority: root CA, broker server certificates, device certificates and CSR signing."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import CertificateValidationException
from gateway.identity.certs import load_certificate

__all__ = [
    "AWS_DEVICE_NOT_AFTER",
    "CLOCK_SKEW",
    "DEVICE_COMMON_NAME",
    "IssuedCert",
    "KeyType",
    "PrivateKey",
    "create_root_ca",
    "generate_private_key",
    "issue_device_cert",
    "issue_server_cert",
    "load_issued",
    "load_private_key",
    "private_key_pem",
    "sign_csr",
]

KeyType = Literal["ec", "rsa"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Where AWS-issued device certificates are reported to end (reference §2.1 marks it unconfirmed).
AWS_DEVICE_NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
CLOCK_SKEW = timedelta(minutes=1)
DEVICE_COMMON_NAME = "AWS IoT Certificate"
_MIN_RSA_BITS = 2048
_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate PEM with its public key PEM and, when known, its PKCS#8 private key PEM."""

    cert_pem: bytes
    key_pem: bytes | None
    public_key_pem: bytes


def generate_private_key(key_type: KeyType = "ec") -> PrivateKey:
    """A fresh EC P-256 or RSA-2048 private key."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported key type {key_type!r}; expected 'ec' or 'rsa'")


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"), which OpenSSL, paho and the AWS SDKs all load."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(key_pem: bytes, password: bytes | None = None) -> PrivateKey:
    """Load an EC or RSA private key from PEM; other key kinds raise ValueError."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=password)
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"cannot load private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("private key must be EC or RSA")
    return key


def _public_pem(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued(cert: x509.Certificate, key: PrivateKey | None) -> IssuedCert:
    return IssuedCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=None if key is None else private_key_pem(key),
        public_key_pem=_public_pem(cert),
    )


def _key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(serialization.Encoding.DER, spki) == key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )


def load_issued(cert_pem: bytes, key_pem: bytes | None, *, password: bytes | None = None) -> IssuedCert:
    """Rebuild an IssuedCert from stored PEMs, checking that the key belongs to the certificate."""
    cert = load_certificate(cert_pem)
    if key_pem is None:
        return _issued(cert, None)
    key = load_private_key(key_pem, password)
    if not _key_matches(cert, key):
        raise ValueError("private key does not match the certificate's public key")
    return _issued(cert, key)


def _utc(now: datetime) -> datetime:
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    # X.509 times carry whole seconds only.
    return moment.replace(microsecond=0)


def _validity(now: datetime, not_after: datetime) -> tuple[datetime, datetime]:
    start = _utc(now)
    if not_after <= start:
        raise ValueError(f"validity would end ({not_after.isoformat()}) before it starts ({start.isoformat()})")
    return start - CLOCK_SKEW, not_after


def _signer(ca: IssuedCert) -> tuple[x509.Certificate, PrivateKey]:
    if ca.key_pem is None:
        raise ValueError("the CA has no private key, so it cannot sign")
    cert = load_certificate(ca.cert_pem)
    key = load_private_key(ca.key_pem)
    if not _key_matches(cert, key):
        raise ValueError("the CA private key does not match the CA certificate")
    return cert, key


def _authority_key_id(ca_cert: x509.Certificate, ca_key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf_key_usage(public_key: CertificatePublicKeyTypes) -> x509.KeyUsage:
    # RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment; EC keys never encipher.
    encipher = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_before: datetime,
    not_after: datetime,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
    )


def create_root_ca(
    common_name: str = "edgesim Local Root CA",
    *,
    now: datetime,
    valid_days: int = 3650,
    key_type: KeyType = "ec",
) -> IssuedCert:
    """A self-signed root CA certificate and its key."""
    key = generate_private_key(key_type)
    not_before, not_after = _validity(now, _utc(now) + timedelta(days=valid_days))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # No path length limit so users can hang their own intermediate CAs off the local root.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _issued(cert, key)


def issue_server_cert(
    ca: IssuedCert,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
    *,
    now: datetime,
    valid_days: int = 825,
    key_type: KeyType = "ec",
) -> IssuedCert:
    """A TLS server certificate (serverAuth) for the given DNS names and IP addresses, signed by `ca`."""
    if isinstance(hostnames, str) or isinstance(ips, str):
        raise TypeError("hostnames and ips must be sequences of strings, not a single string")
    if not hostnames and not ips:
        raise ValueError("a server certificate needs at least one hostname or IP address")
    ca_cert, ca_key = _signer(ca)
    key = generate_private_key(key_type)
    not_before, not_after = _validity(now, _utc(now) + timedelta(days=valid_days))
    sans: list[x509.GeneralName] = [x509.DNSName(host) for host in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    common_name = hostnames[0] if hostnames else ips[0]
    builder = _leaf_builder(
        ca_cert,
        ca_key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        public_key=key.public_key(),
        not_before=not_before,
        not_after=not_after,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    ).add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _issued(builder.sign(ca_key, hashes.SHA256()), key)


def _device_not_after(now: datetime, valid_days: float | None) -> datetime:
    return AWS_DEVICE_NOT_AFTER if valid_days is None else _utc(now) + timedelta(days=valid_days)


def issue_device_cert(
    ca: IssuedCert,
    *,
    now: datetime,
    common_name: str = DEVICE_COMMON_NAME,
    key_type: KeyType = "ec",
    valid_days: float | None = None,
) -> IssuedCert:
    """A device (clientAuth) certificate and key, valid until 2049-12-31T23:59:59Z unless `valid_days` is given."""
    ca_cert, ca_key = _signer(ca)
    key = generate_private_key(key_type)
    not_before, not_after = _validity(now, _device_not_after(now, valid_days))
    cert = _leaf_builder(
        ca_cert,
        ca_key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        public_key=key.public_key(),
        not_before=not_before,
        not_after=not_after,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    ).sign(ca_key, hashes.SHA256())
    return _issued(cert, key)


def _invalid_csr(detail: str) -> CertificateValidationException:
    return CertificateValidationException(f"The certificate signing request is not valid: {detail}")


def _load_csr(csr_pem: bytes | str) -> x509.CertificateSigningRequest:
    data = csr_pem.encode("ascii", errors="replace") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _invalid_csr("cannot parse the PEM-encoded CSR") from exc
    if not signature_ok:
        raise _invalid_csr("signature does not verify")
    # The key kinds and sizes AWS IoT accepts for device certificates.
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise _invalid_csr(f"RSA key of {public_key.key_size} bits is shorter than {_MIN_RSA_BITS}")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _ACCEPTED_CURVES):
            raise _invalid_csr(f"unsupported elliptic curve {public_key.curve.name}")
    else:
        raise _invalid_csr("the key must be RSA or ECDSA")
    return csr


def sign_csr(ca: IssuedCert, csr_pem: bytes | str, *, now: datetime, valid_days: int | None = None) -> bytes:
    """Issue a clientAuth certificate PEM for a CSR (CreateCertificateFromCsr), keeping its subject and SANs."""
    csr = _load_csr(csr_pem)
    ca_cert, ca_key = _signer(ca)
    not_before, not_after = _validity(now, _device_not_after(now, valid_days))
    try:
        subject = csr.subject
        requested = csr.extensions
        sans = next((ext.value for ext in requested if isinstance(ext.value, x509.SubjectAlternativeName)), None)
        # An empty subject is only legal with a critical SAN; fall back to AWS's default subject instead.
        if len(subject) == 0:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_COMMON_NAME)])
        builder = _leaf_builder(
            ca_cert,
            ca_key,
            subject=subject,
            public_key=csr.public_key(),
            not_before=not_before,
            not_after=not_after,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        raise _invalid_csr(str(exc)) from exc
    return cert.public_bytes(serialization.Encoding.PEM)
