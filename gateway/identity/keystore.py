"""The certs directory on disk: the local root CA and the server certificate, keys written 0600."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.identity import ca as ca_mod


def write_private(path: Path, data: bytes) -> None:
    """Create or replace a key file that only its owner can read, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass(frozen=True)
class LocalCA:
    root: ca_mod.IssuedCert
    root_cert_path: Path
    server_cert_path: Path
    server_key_path: Path


def ensure_local_ca(
    certs_dir: Path, hostnames: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1", "::1")
) -> tuple[LocalCA, bool]:
    """Load the local CA and server certificate, creating them on first use; (ca, created)."""
    root_pem = certs_dir / "root-ca.pem"
    root_key = certs_dir / "root-ca.key"
    server_pem = certs_dir / "server.pem"
    server_key = certs_dir / "server.key"
    now = datetime.now(tz=UTC)
    created = False
    if root_pem.exists() and root_key.exists():
        root = ca_mod.load_issued(root_pem.read_bytes(), root_key.read_bytes())
    else:
        root = ca_mod.create_root_ca(now=now)
        write_private(root_key, root.key_pem or b"")
        write_public(root_pem, root.cert_pem)
        created = True
    if created or not (server_pem.exists() and server_key.exists()) or not _covers(server_pem, hostnames):
        server = ca_mod.issue_server_cert(root, hostnames, ips, now=now)
        write_private(server_key, server.key_pem or b"")
        write_public(server_pem, server.cert_pem)
    return LocalCA(root, root_pem, server_pem, server_key), created


def _covers(server_pem: Path, hostnames: tuple[str, ...]) -> bool:
    """Whether the server certificate on disk names every host asked for (else it is issued again)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(server_pem.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return set(hostnames) <= set(names.get_values_for_type(x509.DNSName))


def write_device_files(
    out_dir: Path, name: str, cert_pem: str, private_key: str | None, public_key: str | None
) -> Path:
    """Write NAME.cert.pem, NAME.private.key (0600) and NAME.public.key as the AWS console names them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_public(out_dir / f"{name}.cert.pem", cert_pem.encode())
    if private_key is not None:
        write_private(out_dir / f"{name}.private.key", private_key.encode())
    if public_key is not None:
        write_public(out_dir / f"{name}.public.key", public_key.encode())
    return out_dir / f"{name}.cert.pem"
