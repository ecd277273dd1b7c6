"""Tests for the local CA (gateway.identity.ca) and certificate parsing (gateway.identity.certs)."""

from __future__ import annotations

import hashlib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import CertificateValidationException
from gateway.identity.ca import (
    AWS_DEVICE_NOT_AFTER,
    IssuedCert,
    create_root_ca,
    generate_private_key,
    issue_device_cert,
    issue_server_cert,
    load_issued,
    private_key_pem,
    sign_csr,
)
from gateway.identity.certs import (
    certificate_id,
    check_validity,
    parse_certificate,
    public_key_pem,
    verify_signed_by,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root_ca() -> IssuedCert:
    return create_root_ca(now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> IssuedCert:
    return create_root_ca("Someone Else's CA", now=NOW, key_type="rsa")


@pytest.fixture(scope="module")
def server(root_ca: IssuedCert) -> IssuedCert:
    return issue_server_cert(root_ca, now=NOW)


@pytest.fixture(scope="module")
def device(root_ca: IssuedCert) -> IssuedCert:
    return issue_device_cert(root_ca, now=NOW)


def _cert(issued: IssuedCert | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem if isinstance(issued, IssuedCert) else issued)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, cn: str = "dev-1") -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dev-1.local")]), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


# --- root CA ---------------------------------------------------------------------------------------------------


def test_root_ca_is_a_self_signed_ca(root_ca: IssuedCert) -> None:
    cert = _cert(root_ca)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert verify_signed_by(root_ca.cert_pem, root_ca.cert_pem)
    info = parse_certificate(root_ca.cert_pem)
    assert info.is_ca and info.is_self_issued
    assert info.subject == {"CommonName": ("edgesim Local Root CA",)}
    assert info.subject_string == "CN=edgesim Local Root CA"
    assert root_ca.key_pem is not None and root_ca.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_root_ca_backdates_not_before_for_clock_skew(root_ca: IssuedCert) -> None:
    info = parse_certificate(root_ca.cert_pem)
    assert info.not_before == NOW - timedelta(minutes=1)
    assert info.not_after == NOW + timedelta(days=3650)
    assert check_validity(info, NOW) is None


def test_rsa_root_ca(other_ca: IssuedCert) -> None:
    info = parse_certificate(other_ca.cert_pem)
    assert info.is_ca
    assert (info.key_type, info.key_size) == ("rsa", 2048)
    assert verify_signed_by(other_ca.cert_pem, other_ca.cert_pem)


# --- server certificate ---------------------------------------------------------------------------------------


def test_server_cert_sans_eku_and_signature(root_ca: IssuedCert, server: IssuedCert) -> None:
    info = parse_certificate(server.cert_pem)
    assert info.subject_alt_names["DNSName"] == ("localhost",)
    assert info.subject_alt_names["IPAddress"] == ("127.0.0.1", "::1")
    assert not info.is_ca
    assert _eku(_cert(server)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert info.authority_key_id == parse_certificate(root_ca.cert_pem).subject_key_id
    assert verify_signed_by(server.cert_pem, root_ca.cert_pem)
    assert info.not_after == NOW + timedelta(days=825)


def test_server_cert_custom_names(root_ca: IssuedCert) -> None:
    issued = issue_server_cert(root_ca, ["broker.edgesim.test", "localhost"], ["10.0.0.5"], now=NOW, key_type="rsa")
    info = parse_certificate(issued.cert_pem)
    assert info.subject == {"CommonName": ("broker.edgesim.test",)}
    assert info.subject_alt_names == {"DNSName": ("broker.edgesim.test", "localhost"), "IPAddress": ("10.0.0.5",)}
    assert info.key_type == "rsa"


def test_server_cert_needs_a_name(root_ca: IssuedCert) -> None:
    with pytest.raises(ValueError, match="at least one"):
        issue_server_cert(root_ca, [], [], now=NOW)


def test_issuing_without_ca_key_fails(root_ca: IssuedCert) -> None:
    public_only = load_issued(root_ca.cert_pem, None)
    with pytest.raises(ValueError, match="no private key"):
        issue_device_cert(public_only, now=NOW)


# --- device certificates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "key_class"), [("ec", ec.EllipticCurvePublicKey), ("rsa", rsa.RSAPublicKey)])
def test_device_cert_key_types(root_ca: IssuedCert, key_type: str, key_class: type) -> None:
    issued = issue_device_cert(root_ca, now=NOW, key_type=key_type)  # type: ignore[arg-type]
    cert = _cert(issued)
    assert isinstance(cert.public_key(), key_class)
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == AWS_DEVICE_NOT_AFTER == datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert verify_signed_by(issued.cert_pem, root_ca.cert_pem)
    info = parse_certificate(issued.cert_pem)
    assert info.subject == {"CommonName": ("AWS IoT Certificate",)}
    assert info.issuer == {"CommonName": ("edgesim Local Root CA",)}
    assert info.key_type == key_type
    assert issued.public_key_pem == public_key_pem(issued.cert_pem)
    assert issued.public_key_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_device_cert_private_key_matches(device: IssuedCert) -> None:
    assert device.key_pem is not None
    key = serialization.load_pem_private_key(device.key_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.PEM, spki) == device.public_key_pem


def test_device_cert_serials_are_random_and_positive(root_ca: IssuedCert) -> None:
    first = _cert(issue_device_cert(root_ca, now=NOW)).serial_number
    second = _cert(issue_device_cert(root_ca, now=NOW)).serial_number
    assert first != second and first > 0 and second > 0
    info = parse_certificate(issue_device_cert(root_ca, now=NOW).cert_pem)
    assert int(info.serial_number, 16) > 0 and info.serial_number == info.serial_number.lower()


def test_device_cert_custom_validity_and_name(root_ca: IssuedCert) -> None:
    issued = issue_device_cert(root_ca, now=NOW, common_name="sensor-7", valid_days=30)
    info = parse_certificate(issued.cert_pem)
    assert info.not_after == NOW + timedelta(days=30)
    assert info.subject["CommonName"] == ("sensor-7",)


def test_device_cert_validity_past_2049_is_rejected(root_ca: IssuedCert) -> None:
    with pytest.raises(ValueError, match="validity"):
        issue_device_cert(root_ca, now=datetime(2050, 1, 1, tzinfo=UTC))


def test_load_issued_round_trip_and_mismatch(root_ca: IssuedCert, device: IssuedCert) -> None:
    assert root_ca.key_pem is not None and device.key_pem is not None
    assert load_issued(root_ca.cert_pem, root_ca.key_pem) == root_ca
    with pytest.raises(ValueError, match="does not match"):
        load_issued(root_ca.cert_pem, device.key_pem)


# --- certificate id -------------------------------------------------------------------------------------------


def test_certificate_id_is_sha256_of_der(device: IssuedCert) -> None:
    der = ssl.PEM_cert_to_DER_cert(device.cert_pem.decode("ascii"))
    expected = hashlib.sha256(der).hexdigest()
    assert certificate_id(device.cert_pem) == expected
    assert certificate_id(der) == expected
    assert certificate_id(device.cert_pem.decode("ascii")) == expected
    assert len(expected) == 64 and expected == expected.lower()
    assert parse_certificate(der).certificate_id == expected
    assert parse_certificate(device.cert_pem).pem == device.cert_pem.decode("ascii")


# --- parsing --------------------------------------------------------------------------------------------------


def test_parse_maps_subject_attributes_to_aws_names(root_ca: IssuedCert) -> None:
    ca_cert = _cert(root_ca)
    assert root_ca.key_pem is not None
    ca_key = serialization.load_pem_private_key(root_ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Devices"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Sensors"),
            x509.NameAttribute(NameOID.COMMON_NAME, "thing-42"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "SN-0042"),
            x509.NameAttribute(NameOID.TITLE, "Thermostat"),
            x509.NameAttribute(NameOID.SURNAME, "Doe"),
            x509.NameAttribute(NameOID.GIVEN_NAME, "Jane"),
            x509.NameAttribute(NameOID.INITIALS, "JD"),
            x509.NameAttribute(NameOID.PSEUDONYM, "jd"),
            x509.NameAttribute(NameOID.GENERATION_QUALIFIER, "III"),
            x509.NameAttribute(NameOID.DN_QUALIFIER, "q1"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ignored@example.com"),
        ]
    )
    key = generate_private_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("thing-42.example.com"),
                    x509.RFC822Name("ops@example.com"),
                    x509.UniformResourceIdentifier("urn:thing:42"),
                    x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dir")])),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    info = parse_certificate(cert.public_bytes(serialization.Encoding.PEM))
    assert info.subject == {
        "Country": ("US",),
        "State": ("Washington",),
        "Locality": ("Seattle",),
        "Organization": ("Example Corp",),
        "OrganizationalUnit": ("Devices", "Sensors"),
        "CommonName": ("thing-42",),
        "SerialNumber": ("SN-0042",),
        "Title": ("Thermostat",),
        "Surname": ("Doe",),
        "GivenName": ("Jane",),
        "Initials": ("JD",),
        "Pseudonym": ("jd",),
        "GenerationQualifier": ("III",),
        "DistinguishedNameQualifier": ("q1",),
    }
    assert info.subject_alt_names == {
        "DNSName": ("thing-42.example.com",),
        "RFC822Name": ("ops@example.com",),
        "UniformResourceIdentifier": ("urn:thing:42",),
        "DirectoryName": ("CN=dir",),
    }
    assert info.issuer_alt_names == {}
    assert info.serial_number == "1234abcd"
    assert "CN=thing-42" in info.subject_string
    assert info.issuer_string == "CN=edgesim Local Root CA"
    assert not info.is_ca and info.subject_key_id is None and info.authority_key_id is None
    assert info.not_before.tzinfo is not None and info.not_before == NOW


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x01",
    ],
)
def test_garbage_raises_certificate_validation(garbage: bytes) -> None:
    with pytest.raises(CertificateValidationException, match=r"not a valid X\.509 certificate"):
        parse_certificate(garbage)
    with pytest.raises(CertificateValidationException):
        certificate_id(garbage)
    with pytest.raises(CertificateValidationException):
        public_key_pem(garbage)


def test_private_key_pem_is_not_a_certificate(device: IssuedCert) -> None:
    assert device.key_pem is not None
    with pytest.raises(CertificateValidationException):
        parse_certificate(device.key_pem)


# --- signature checks and validity ----------------------------------------------------------------------------


def test_verify_signed_by_rejects_other_ca(root_ca: IssuedCert, other_ca: IssuedCert, device: IssuedCert) -> None:
    assert verify_signed_by(device.cert_pem, root_ca.cert_pem)
    assert not verify_signed_by(device.cert_pem, other_ca.cert_pem)
    foreign = issue_device_cert(other_ca, now=NOW, key_type="rsa")
    assert verify_signed_by(foreign.cert_pem, other_ca.cert_pem)
    assert not verify_signed_by(foreign.cert_pem, root_ca.cert_pem)


def test_verify_signed_by_rejects_same_name_different_key(root_ca: IssuedCert, device: IssuedCert) -> None:
    impostor = create_root_ca(now=NOW)
    assert parse_certificate(impostor.cert_pem).subject == parse_certificate(root_ca.cert_pem).subject
    assert not verify_signed_by(device.cert_pem, impostor.cert_pem)


def test_check_validity_expired_and_not_yet_valid(root_ca: IssuedCert) -> None:
    short = parse_certificate(issue_device_cert(root_ca, now=NOW, valid_days=1).cert_pem)
    assert check_validity(short, NOW) is None
    assert check_validity(short, NOW + timedelta(days=1)) is None
    expired = check_validity(short, NOW + timedelta(days=1, seconds=1))
    assert expired == "certificate expired at 2025-03-02T12:00:00Z"
    early = check_validity(short, NOW - timedelta(minutes=2))
    assert early == "certificate not valid before 2025-03-01T11:59:00Z"
    assert check_validity(short, datetime(2025, 3, 1, 12, 0)) is None


def test_check_validity_future_issued_cert(root_ca: IssuedCert) -> None:
    future = parse_certificate(issue_device_cert(root_ca, now=NOW + timedelta(days=10)).cert_pem)
    reason = check_validity(future, NOW)
    assert reason is not None and reason.startswith("certificate not valid before 2025-03-11")


# --- CSR signing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_sign_csr_round_trip(root_ca: IssuedCert, key_type: str) -> None:
    key = generate_private_key(key_type)  # type: ignore[arg-type]
    pem = sign_csr(root_ca, _csr(key), now=NOW)
    cert = _cert(pem)
    assert verify_signed_by(pem, root_ca.cert_pem)
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = parse_certificate(pem)
    assert info.subject == {"CommonName": ("dev-1",)}
    assert info.subject_alt_names == {"DNSName": ("dev-1.local",)}
    assert info.not_after == AWS_DEVICE_NOT_AFTER
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_sign_csr_accepts_str_and_custom_validity(root_ca: IssuedCert) -> None:
    pem = sign_csr(root_ca, _csr(generate_private_key()).decode("ascii"), now=NOW, valid_days=7)
    assert parse_certificate(pem).not_after == NOW + timedelta(days=7)


@pytest.mark.parametrize(
    "csr",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_sign_csr_rejects_garbage(root_ca: IssuedCert, csr: bytes) -> None:
    with pytest.raises(CertificateValidationException, match="signing request is not valid"):
        sign_csr(root_ca, csr, now=NOW)


def test_sign_csr_rejects_certificate_pem(root_ca: IssuedCert, device: IssuedCert) -> None:
    with pytest.raises(CertificateValidationException):
        sign_csr(root_ca, device.cert_pem, now=NOW)


def test_sign_csr_rejects_unsupported_keys(root_ca: IssuedCert) -> None:
    with pytest.raises(CertificateValidationException, match="RSA or ECDSA"):
        sign_csr(root_ca, _csr(ed25519.Ed25519PrivateKey.generate()), now=NOW)
    with pytest.raises(CertificateValidationException, match="shorter than 2048"):
        sign_csr(root_ca, _csr(rsa.generate_private_key(65537, 1024)), now=NOW)
    with pytest.raises(CertificateValidationException, match="curve"):
        sign_csr(root_ca, _csr(ec.generate_private_key(ec.SECP256K1())), now=NOW)


def test_sign_csr_rejects_tampered_signature(root_ca: IssuedCert) -> None:
    csr = x509.load_pem_x509_csr(_csr(generate_private_key("rsa")))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateValidationException, match="signature"):
        sign_csr(root_ca, tampered, now=NOW)


# --- mutual TLS -----------------------------------------------------------------------------------------------
# OpenSSL checks validity against the real clock, so these certificates are issued at the real time.


@pytest.fixture(scope="module")
def live_ca() -> IssuedCert:
    return create_root_ca(now=datetime.now(UTC))


@pytest.fixture(scope="module")
def live_other_ca() -> IssuedCert:
    return create_root_ca("Someone Else's CA", now=datetime.now(UTC))


@pytest.fixture(scope="module")
def live_server(live_ca: IssuedCert) -> IssuedCert:
    return issue_server_cert(live_ca, now=datetime.now(UTC))


@pytest.fixture(scope="module")
def live_device(live_ca: IssuedCert) -> IssuedCert:
    return issue_device_cert(live_ca, now=datetime.now(UTC))


def _write(tmp_path: Path, name: str, data: bytes | None) -> str:
    assert data is not None
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def _contexts(
    tmp_path: Path, ca: IssuedCert, server: IssuedCert, client: IssuedCert, client_ca: IssuedCert | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca_file = _write(tmp_path, "ca.pem", ca.cert_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(
        _write(tmp_path, "server.pem", server.cert_pem), _write(tmp_path, "server.key", server.key_pem)
    )
    server_ctx.load_verify_locations(ca_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(
        ca_file if client_ca is None else _write(tmp_path, "client-ca.pem", client_ca.cert_pem)
    )
    client_ctx.load_cert_chain(
        _write(tmp_path, "device.pem", client.cert_pem), _write(tmp_path, "device.key", client.key_pem)
    )
    # Strict mode (Python 3.13's default) also checks the certificates are RFC 5280 conformant.
    for ctx in (server_ctx, client_ctx):
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return server_ctx, client_ctx


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO]:
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if client_done and server_done:
            return client, server, c_in, c_out, s_in, s_out
    raise AssertionError("handshake did not complete")


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_mutual_tls_handshake(
    tmp_path: Path, live_ca: IssuedCert, live_server: IssuedCert, live_device: IssuedCert, hostname: str
) -> None:
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, live_device)
    client, srv, _c_in, c_out, s_in, _s_out = _handshake(server_ctx, client_ctx, hostname)
    peer = srv.getpeercert(binary_form=True)
    assert peer is not None
    assert certificate_id(peer) == certificate_id(live_device.cert_pem)
    assert client.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(live_server.cert_pem.decode("ascii"))
    client.write(b"CONNECT")
    s_in.write(c_out.read())
    assert srv.read(7) == b"CONNECT"


def test_mutual_tls_with_rsa_device_and_csr_cert(tmp_path: Path, live_ca: IssuedCert, live_server: IssuedCert) -> None:
    rsa_device = issue_device_cert(live_ca, now=datetime.now(UTC), key_type="rsa")
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, rsa_device)
    _handshake(server_ctx, client_ctx, "localhost")
    key = generate_private_key()
    from_csr = IssuedCert(sign_csr(live_ca, _csr(key), now=datetime.now(UTC)), private_key_pem(key), b"")
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, from_csr)
    _handshake(server_ctx, client_ctx, "localhost")


def test_mutual_tls_rejects_device_from_other_ca(
    tmp_path: Path, live_ca: IssuedCert, live_other_ca: IssuedCert, live_server: IssuedCert
) -> None:
    foreign = issue_device_cert(live_other_ca, now=datetime.now(UTC))
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, foreign)
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, client_ctx, "localhost")


def test_tls_client_rejects_server_from_other_ca(
    tmp_path: Path, live_ca: IssuedCert, live_other_ca: IssuedCert, live_server: IssuedCert, live_device: IssuedCert
) -> None:
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, live_device, client_ca=live_other_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, "localhost")


def test_tls_client_rejects_wrong_hostname(
    tmp_path: Path, live_ca: IssuedCert, live_server: IssuedCert, live_device: IssuedCert
) -> None:
    server_ctx, client_ctx = _contexts(tmp_path, live_ca, live_server, live_device)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, "broker.example.com")


def test_server_certificate_is_issued_again_when_a_requested_name_is_missing(tmp_path: Path) -> None:
    from cryptography import x509

    from gateway.identity.keystore import ensure_local_ca

    def names() -> set[str]:
        cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return set(sans.get_values_for_type(x509.DNSName))

    first, created = ensure_local_ca(tmp_path)
    assert created and names() == {"localhost"}
    server_before = (tmp_path / "server.pem").read_bytes()
    again, created = ensure_local_ca(tmp_path, hostnames=("localhost", "gateway"))  # `edgesim up --server-name`
    assert not created and again.root.cert_pem == first.root.cert_pem  # the CA stays: issued certificates still work
    assert names() == {"localhost", "gateway"} and (tmp_path / "server.pem").read_bytes() != server_before
    ensure_local_ca(tmp_path, hostnames=("localhost", "gateway"))
    assert names() == {"localhost", "gateway"}
    ensure_local_ca(tmp_path)  # a subset of the names: the certificate is kept
    assert names() == {"localhost", "gateway"}
