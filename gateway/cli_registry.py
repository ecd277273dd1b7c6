"""`edgesim things | policies | certs`: the registry of a running gateway, through its HTTP API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli_api import (
    DEFAULT_ENDPOINT,
    Endpoint,
    JsonOut,
    api,
    console,
    emit,
    err_console,
    parse_pairs,
    strip_metadata,
)
from gateway.cli_errors import fail, read_json, read_text

certs_app = typer.Typer(help="The local CA and device certificates.", no_args_is_help=True)
things_app = typer.Typer(help="Things, thing types and thing groups.", no_args_is_help=True)
policies_app = typer.Typer(help="AWS IoT policies and their attachments.", no_args_is_help=True)

CertsDir = Annotated[Path, typer.Option("--certs-dir", envvar="EDGESIM_CERTS", help="Where the CA and certs live.")]
Attr = Annotated[list[str] | None, typer.Option("--attribute", "--attr", help="name=value (repeatable).")]


# ---------------------------------------------------------------- certs
@certs_app.command("init")
def certs_init(certs_dir: CertsDir = Path("certs")) -> None:
    """Create the local root CA and the server certificate (idempotent; `edgesim up` does it too)."""
    from gateway.identity.keystore import ensure_local_ca

    local, created = ensure_local_ca(certs_dir)
    console.print(("created " if created else "exists: ") + str(local.root_cert_path))


@certs_app.command("create")
def certs_create(
    thing: Annotated[str, typer.Option(help="Thing to create (if missing) and attach the certificate to.")],
    policy: Annotated[str | None, typer.Option(help="Policy to attach to the certificate.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for NAME.cert.pem, NAME.private.key, NAME.public.key.")] = Path(
        "certs"
    ),
    inactive: Annotated[bool, typer.Option(help="Leave the certificate INACTIVE.")] = False,
    key_type: Annotated[str, typer.Option(help="ec (P-256, fast handshakes) or rsa (2048).")] = "ec",
    force: Annotated[
        bool, typer.Option("--force", help="Replace NAME's certificate files in --out if they exist.")
    ] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Make a certificate for a thing, attach it (and a policy), write the files (private key 0600).

    EC keys come from CreateKeysAndCertificate; for RSA the key is made here and only a CSR goes to the
    gateway (CreateCertificateFromCsr), as AWS users do when they want their own key type.
    """
    from gateway.identity.keystore import write_device_files

    if key_type not in ("ec", "rsa"):
        raise typer.BadParameter("--key-type must be ec or rsa")
    replaced = _existing_certificate(out, thing)
    if replaced is not None and not force:
        fail(
            f"{out / (thing + '.cert.pem')} already holds certificate {replaced} for {thing}; pass --force to "
            "replace the files (its key is lost), or --out DIR to write elsewhere"
        )
    with api("iot", endpoint) as iot:
        if policy:  # checked before anything is made, so a bad name leaves nothing half-created
            iot.get_policy(policyName=policy)
        try:
            iot.describe_thing(thingName=thing)
        except iot.exceptions.ResourceNotFoundException:
            iot.create_thing(thingName=thing)
        if key_type == "ec":
            created = iot.create_keys_and_certificate(setAsActive=not inactive)
        else:
            from gateway.identity.csr import make_csr

            key_pem, public_pem, csr_pem = make_csr("rsa", thing)
            created = iot.create_certificate_from_csr(
                certificateSigningRequest=csr_pem.decode(), setAsActive=not inactive
            )
            created["keyPair"] = {"PrivateKey": key_pem.decode(), "PublicKey": public_pem.decode()}
        iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
        if policy:
            iot.attach_policy(policyName=policy, target=created["certificateArn"])
    path = write_device_files(
        out, thing, created["certificatePem"], created["keyPair"]["PrivateKey"], created["keyPair"]["PublicKey"]
    )
    result = {
        "certificateId": created["certificateId"],
        "certificateArn": created["certificateArn"],
        "thingName": thing,
        "certificateFile": str(path),
        "policy": policy,
    }
    if replaced is not None:
        result["replaced"] = replaced
        err_console.print(
            f"replaced the files of certificate {replaced} (still registered: `edgesim certs revoke {replaced[:12]}` "
            "retires it)",
            highlight=False,
        )
    if as_json:
        emit(result, True)
    else:
        console.print(f"certificate [bold]{created['certificateId']}[/bold] for thing {thing} -> {path}")


def _existing_certificate(out: Path, thing: str) -> str | None:
    """The id (SHA-256 of the DER) of the certificate already written for this thing, if any."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    path = out / f"{thing}.cert.pem"
    if not path.exists():
        return None
    try:
        der = x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
    except (OSError, ValueError):
        return "(unreadable)"
    return hashlib.sha256(der).hexdigest()


@certs_app.command("register")
def certs_register(
    cert_file: Path,
    ca_file: Annotated[Path | None, typer.Option("--ca", help="The CA that signed it (must be registered).")] = None,
    without_ca: Annotated[bool, typer.Option(help="RegisterCertificateWithoutCA.")] = False,
    active: Annotated[bool, typer.Option(help="Register as ACTIVE.")] = True,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Register a device certificate made elsewhere."""
    status = "ACTIVE" if active else "INACTIVE"
    pem = read_text(cert_file, "certificate")
    ca_pem = read_text(ca_file, "CA certificate") if ca_file is not None and not without_ca else None
    with api("iot", endpoint) as iot:
        if without_ca:
            out = iot.register_certificate_without_ca(certificatePem=pem, status=status)
        elif ca_pem is not None:
            out = iot.register_certificate(certificatePem=pem, caCertificatePem=ca_pem, status=status)
        else:
            out = iot.register_certificate(certificatePem=pem, status=status)
    emit(strip_metadata(out), True) if as_json else console.print(f"registered {out['certificateId']}")


@certs_app.command("register-ca")
def certs_register_ca(
    ca_file: Path,
    active: Annotated[bool, typer.Option(help="Register as ACTIVE.")] = True,
    verification_cert: Annotated[
        Path | None, typer.Option(help="Proof of possession: CN = the registration code, signed by the CA.")
    ] = None,
    ca_key: Annotated[
        Path | None, typer.Option(help="The CA's private key: make the verification certificate here (DEFAULT mode).")
    ] = None,
    auto_registration: Annotated[bool, typer.Option(help="allowAutoRegistration (JITR / JITP).")] = False,
    template: Annotated[Path | None, typer.Option(help="A JITP provisioning template (registrationConfig).")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """RegisterCACertificate: trust device certificates signed by this CA. With --verification-cert or --ca-key it is
    registered in DEFAULT mode with proof of possession, without either in SNI_ONLY mode."""
    pem = read_text(ca_file, "CA certificate")
    args: dict[str, Any] = {"caCertificate": pem, "setAsActive": active, "allowAutoRegistration": auto_registration}
    if template is not None:
        args["registrationConfig"] = {"templateBody": read_text(template, "provisioning template")}
    with api("iot", endpoint) as iot:
        if verification_cert is not None:
            args["verificationCertificate"] = read_text(verification_cert, "verification certificate")
        elif ca_key is not None:
            args["verificationCertificate"] = _verification_cert(pem, read_text(ca_key, "CA private key"), iot)
        else:
            args["certificateMode"] = "SNI_ONLY"
        out = iot.register_ca_certificate(**args)
    emit(strip_metadata(out), True) if as_json else console.print(f"registered CA {out['certificateId']}")


def _verification_cert(ca_pem: str, key_pem: str, iot: Any) -> str:
    """What `openssl req/x509` would make by hand: CN = the registration code, signed by the CA's key."""
    from datetime import UTC, datetime

    from gateway.errors import AwsError
    from gateway.identity import ca as ca_mod

    try:
        ca = ca_mod.load_issued(ca_pem.encode(), key_pem.encode())
    except (ValueError, AwsError) as exc:
        fail(f"the CA key cannot sign for this CA: {exc}")
    code = iot.get_registration_code()["registrationCode"]
    return ca_mod.issue_device_cert(ca, now=datetime.now(UTC), common_name=code, valid_days=1).cert_pem.decode()


def _full_id(iot: Any, certificate_id: str) -> str:
    """A certificate id, or a unique prefix of one (as `certs list` shows them)."""
    if len(certificate_id) == 64:
        return certificate_id
    matches = [
        c["certificateId"]
        for page in iot.get_paginator("list_certificates").paginate()
        for c in page["certificates"]
        if c["certificateId"].startswith(certificate_id)
    ]
    if len(matches) != 1:
        fail(f"{len(matches)} certificates start with {certificate_id!r}; give more of the id")
    return str(matches[0])


def _set_status(certificate_id: str, status: str, endpoint: str) -> None:
    with api("iot", endpoint) as iot:
        certificate_id = _full_id(iot, certificate_id)
        iot.update_certificate(certificateId=certificate_id, newStatus=status)
    console.print(f"{certificate_id} is now {status}")


@certs_app.command("activate")
def certs_activate(certificate_id: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """Set a certificate ACTIVE."""
    _set_status(certificate_id, "ACTIVE", endpoint)


@certs_app.command("deactivate")
def certs_deactivate(certificate_id: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """Set a certificate INACTIVE (its live connections are dropped)."""
    _set_status(certificate_id, "INACTIVE", endpoint)


@certs_app.command("revoke")
def certs_revoke(certificate_id: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """Revoke a certificate for good (its live connections are dropped)."""
    _set_status(certificate_id, "REVOKED", endpoint)


@certs_app.command("list")
def certs_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """List certificates (every page) with their things; ids are shortened in the table (full ids: --json)."""
    with api("iot", endpoint) as iot:
        certs = [c for page in iot.get_paginator("list_certificates").paginate() for c in page["certificates"]]
        for c in certs:
            c["things"] = iot.list_principal_things(principal=c["certificateArn"])["things"]
    table = Table(
        "id (prefix)", "status", "things", "created", caption="full ids: --json; commands take any unique prefix"
    )
    for c in certs:
        created = c["creationDate"]
        when = created.strftime("%Y-%m-%d %H:%M") if hasattr(created, "strftime") else str(created)
        table.add_row(c["certificateId"][:12], c["status"], ", ".join(c["things"]) or "-", when)
    emit({"certificates": certs}, as_json, table)


@certs_app.command("describe")
def certs_describe(certificate_id: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DescribeCertificate (JSON)."""
    with api("iot", endpoint) as iot:
        emit(iot.describe_certificate(certificateId=_full_id(iot, certificate_id))["certificateDescription"], True)


# ---------------------------------------------------------------- things
def _attributes(values: list[str] | None) -> dict[str, str]:
    return parse_pairs(values, "--attribute")


@things_app.command("create")
def things_create(
    name: str,
    thing_type: Annotated[str | None, typer.Option("--type")] = None,
    attr: Attr = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """CreateThing."""
    kwargs: dict[str, Any] = {"thingName": name, "attributePayload": {"attributes": _attributes(attr)}}
    if thing_type:
        kwargs["thingTypeName"] = thing_type
    with api("iot", endpoint) as iot:
        out = strip_metadata(iot.create_thing(**kwargs))
    emit(out, True) if as_json else console.print(f"thing {out['thingName']} ({out['thingArn']})")


@things_app.command("describe")
def things_describe(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DescribeThing (JSON)."""
    with api("iot", endpoint) as iot:
        emit(strip_metadata(iot.describe_thing(thingName=name)), True)


@things_app.command("list")
def things_list(
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
    attribute: Annotated[str | None, typer.Option("--attribute", "--attr", help="Filter: name=value.")] = None,
    thing_type: Annotated[str | None, typer.Option("--type")] = None,
) -> None:
    """ListThings (every page)."""
    kwargs: dict[str, Any] = {}
    if attribute:
        kwargs["attributeName"], _, kwargs["attributeValue"] = attribute.partition("=")
    if thing_type:
        kwargs["thingTypeName"] = thing_type
    with api("iot", endpoint) as iot:
        things = [t for page in iot.get_paginator("list_things").paginate(**kwargs) for t in page["things"]]
    table = Table("thingName", "type", "attributes", "version")
    for t in things:
        table.add_row(t["thingName"], t.get("thingTypeName", ""), json.dumps(t["attributes"]), str(t["version"]))
    emit({"things": things}, as_json, table)


@things_app.command("update")
def things_update(
    name: str,
    attr: Attr = None,
    merge: Annotated[bool, typer.Option(help="Merge attributes.")] = True,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
) -> None:
    """UpdateThing (attributes; an empty value removes one when merging)."""
    with api("iot", endpoint) as iot:
        iot.update_thing(thingName=name, attributePayload={"attributes": _attributes(attr), "merge": merge})
    console.print(f"updated {name}")


@things_app.command("delete")
def things_delete(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DeleteThing."""
    with api("iot", endpoint) as iot:
        iot.delete_thing(thingName=name)
    console.print(f"deleted {name}")


@things_app.command("create-type")
def things_create_type(name: str, description: str = "", endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """CreateThingType."""
    with api("iot", endpoint) as iot:
        iot.create_thing_type(thingTypeName=name, thingTypeProperties={"thingTypeDescription": description})
    console.print(f"thing type {name}")


@things_app.command("create-group")
def things_create_group(name: str, parent: str | None = None, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """CreateThingGroup (optionally nested under --parent)."""
    kwargs: dict[str, Any] = {"thingGroupName": name}
    if parent:
        kwargs["parentGroupName"] = parent
    with api("iot", endpoint) as iot:
        iot.create_thing_group(**kwargs)
    console.print(f"thing group {name}")


@things_app.command("add-to-group")
def things_add_to_group(group: str, thing: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """AddThingToThingGroup."""
    with api("iot", endpoint) as iot:
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    console.print(f"{thing} is in {group}")


# ---------------------------------------------------------------- policies
def _policy_text(document: Path) -> str:
    """The file's text once it is known to be JSON (the gateway judges the policy itself)."""
    read_json(document, "policy document")
    return read_text(document, "policy document")


@policies_app.command("create")
def policies_create(
    name: str,
    document: Annotated[Path, typer.Argument(help="Policy JSON file.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """CreatePolicy from a JSON file."""
    text = _policy_text(document)
    with api("iot", endpoint) as iot:
        out = strip_metadata(iot.create_policy(policyName=name, policyDocument=text))
    emit(out, True) if as_json else console.print(f"policy {name} version {out['policyVersionId']}")


@policies_app.command("update")
def policies_update(
    name: str,
    document: Annotated[Path, typer.Argument(help="Policy JSON file.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
) -> None:
    """CreatePolicyVersion and make it the default (takes effect on live connections)."""
    text = _policy_text(document)
    with api("iot", endpoint) as iot:
        out = iot.create_policy_version(policyName=name, policyDocument=text, setAsDefault=True)
    console.print(f"policy {name} version {out['policyVersionId']} is the default")


@policies_app.command("get")
def policies_get(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """GetPolicy (JSON)."""
    with api("iot", endpoint) as iot:
        emit(strip_metadata(iot.get_policy(policyName=name)), True)


@policies_app.command("list")
def policies_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """ListPolicies (every page)."""
    with api("iot", endpoint) as iot:
        policies = [p for page in iot.get_paginator("list_policies").paginate() for p in page["policies"]]
    table = Table("policyName", "policyArn")
    for p in policies:
        table.add_row(p["policyName"], p["policyArn"])
    emit({"policies": policies}, as_json, table)


def _target(target: str) -> str:
    """A certificate id or a thing group name, as an ARN (full ARNs pass through)."""
    if target.startswith("arn:"):
        return target
    kind = "cert" if len(target) == 64 and all(c in "0123456789abcdef" for c in target) else "thinggroup"
    return f"arn:aws:iot:us-east-1:123456789012:{kind}/{target}"


@policies_app.command("attach")
def policies_attach(
    name: str,
    target: Annotated[str, typer.Argument(help="Certificate id/ARN or thing group.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
) -> None:
    """AttachPolicy to a certificate or thing group."""
    with api("iot", endpoint) as iot:
        iot.attach_policy(policyName=name, target=_target(target))
    console.print(f"attached {name} to {target}")


@policies_app.command("detach")
def policies_detach(name: str, target: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DetachPolicy."""
    with api("iot", endpoint) as iot:
        iot.detach_policy(policyName=name, target=_target(target))
    console.print(f"detached {name} from {target}")


@policies_app.command("delete")
def policies_delete(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DeletePolicy."""
    with api("iot", endpoint) as iot:
        iot.delete_policy(policyName=name)
    console.print(f"deleted {name}")
