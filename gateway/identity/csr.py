"""Certificate signing requests made on the device side, so its private key never leaves it (pure)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gateway.identity.ca import KeyType, generate_private_key, private_key_pem


def make_csr(key_type: KeyType, common_name: str) -> tuple[bytes, bytes, bytes]:
    """(private key PEM, public key PEM, CSR PEM) for a new key of the given type."""
    key = generate_private_key(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_key_pem(key), public, csr.public_bytes(serialization.Encoding.PEM)
