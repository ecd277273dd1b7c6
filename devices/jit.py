"""Just-in-time registration and provisioning for a fleet, done the way a device maker does it: the fleet gets a CA of
its own (cached under `certs/fleet/<fleet>/_ca.*`), registered with the gateway with proof of possession and
auto-registration (plus, for JITP, a registration config naming the provisioning template), and every device gets a
certificate signed by that CA "at the factory". Nothing about the devices is created through the API: the gateway
registers each certificate on that device's first connect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devices.provision import DeviceFiles, Provisioner, _write_private, certificate_id
from devices.spec import DeviceSpec, FleetSpec

CA = "_ca"
_PEM = serialization.Encoding.PEM


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _sign(
    subject: str, public_key: Any, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650 if ca else 825))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


class JitProvisioner(Provisioner):
    def __init__(self, iot: Any, spec: FleetSpec, certs_dir: Path, by: str, template: str | None) -> None:
        super().__init__(iot, spec, certs_dir)
        self.by = by
        self.template = template
        self.fresh: set[str] = set()  # devices given a certificate just now: their first connect provisions them

    def _fleet_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        files = DeviceFiles(self.dir / f"{CA}.cert.pem", self.dir / f"{CA}.private.key")
        if files.cert.exists() and files.key.exists():
            key = serialization.load_pem_private_key(files.key.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return x509.load_pem_x509_certificate(files.cert.read_bytes()), key
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(f"edgesim fleet {self.spec.fleet} CA", key.public_key(), None, key, ca=True)
        _write_private(files.key, _key_pem(key))
        files.cert.write_bytes(cert.public_bytes(_PEM))
        return cert, key

    def _register_ca(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        pem = cert.public_bytes(_PEM).decode()
        ca_id = certificate_id(pem.encode())
        try:
            self.iot.describe_ca_certificate(certificateId=ca_id)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        code = self.iot.get_registration_code()["registrationCode"]
        proof_key = ec.generate_private_key(ec.SECP256R1())
        proof = _sign(code, proof_key.public_key(), cert.subject, key, ca=False).public_bytes(_PEM).decode()
        extra: dict[str, Any] = {}
        if self.by == "jitp":
            extra["registrationConfig"] = {"templateName": self.template}
        self.iot.register_ca_certificate(caCertificate=pem, verificationCertificate=proof, setAsActive=True,
                                         allowAutoRegistration=True, **extra)  # fmt: skip

    def provision_jit(self, devices: list[DeviceSpec]) -> dict[str, DeviceFiles]:
        """The fleet CA registered, the fleet's device policy in place, and a certificate per device."""
        if self.template is not None:
            self.iot.describe_provisioning_template(templateName=self.template)  # a missing one: say so early
        self._policy(devices)
        cert, key = self._fleet_ca()
        self._register_ca(cert, key)
        files = {d.thing_name: self.files(d) for d in devices}
        for device in devices:
            own = files[device.thing_name]
            if own.cert.exists() and own.key.exists():
                continue
            self.fresh.add(device.thing_name)
            device_key = ec.generate_private_key(ec.SECP256R1())
            signed = _sign(device.thing_name, device_key.public_key(), cert.subject, key, ca=False)
            _write_private(own.key, _key_pem(device_key))
            own.cert.write_bytes(signed.public_bytes(_PEM))
        return files
