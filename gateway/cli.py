"""The `edgesim` command: run the gateway and manage its registry, certificates and policies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.config import Config
from gateway.errors import EdgesimError

app = typer.Typer(help="edgesim: a local, offline AWS IoT Core and its sinks.", no_args_is_help=True)
certs_app = typer.Typer(help="The local CA and device certificates.", no_args_is_help=True)
things_app = typer.Typer(help="Things, thing types and thing groups.", no_args_is_help=True)
policies_app = typer.Typer(help="AWS IoT policies and their attachments.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")
app.add_typer(things_app, name="things")
app.add_typer(policies_app, name="policies")

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="EDGESIM_HOME", help="Where the database lives.")]
CertsDir = Annotated[Path, typer.Option("--certs-dir", envvar="EDGESIM_CERTS", help="Where the CA and certs live.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def main() -> None:
    app()


def _emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(table)


@contextlib.contextmanager
def _registry(data_dir: Path, certs_dir: Path | None = None) -> Iterator[Any]:
    from gateway.clock import SystemClock
    from gateway.identity.keystore import ensure_local_ca
    from gateway.registry import Registry
    from gateway.store import Store

    store = Store(data_dir / "edgesim.db")
    cfg = Config()
    registry = Registry(store, SystemClock(), cfg.region, cfg.account)
    try:
        if certs_dir is not None:
            local_ca, _ = ensure_local_ca(certs_dir)
            registry.local_ca = local_ca.root
            registry.ensure_ca_registered(local_ca.root.cert_pem.decode())
        yield registry
    except EdgesimError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()


# ---------------------------------------------------------------- up
@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address every listener binds to.")] = "127.0.0.1",
    mqtts_port: Annotated[int, typer.Option("--mqtts-port", help="MQTT over mutual TLS.")] = 8883,
    wss_port: Annotated[int, typer.Option("--wss-port", help="MQTT over secure WebSocket (-1: off).")] = 8084,
    https_port: Annotated[int, typer.Option("--https-port", help="HTTPS publish with client certs (-1: off).")] = 8443,
    api_port: Annotated[int, typer.Option("--api-port", help="HTTP API and dashboard.")] = 4566,
    insecure_port: Annotated[
        int | None, typer.Option("--insecure-port", help="Also open plain MQTT here (anonymous dev policy).")
    ] = None,
    publishes_per_second: Annotated[
        int, typer.Option(help="Inbound PUBLISH quota per connection (AWS: 100; 0 = unlimited).")
    ] = 100,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
    ports_file: Annotated[Path | None, typer.Option(help="Write the bound ports here as JSON once ready.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the gateway in the foreground until Ctrl-C."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config(
        host=host,
        mqtts_port=mqtts_port,
        wss_port=None if wss_port < 0 else wss_port,
        https_port=None if https_port < 0 else https_port,
        api_port=api_port,
        insecure_port=insecure_port,
        data_dir=data_dir,
        certs_dir=certs_dir,
    )
    cfg.mqtt.publishes_per_second = publishes_per_second
    asyncio.run(_run_gateway(cfg, ports_file))


async def _run_gateway(cfg: Config, ports_file: Path | None) -> None:
    from gateway.app import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(cfg) as gw:
        if ports_file is not None:
            ports_file.write_text(json.dumps(gw.ports))  # noqa: ASYNC240 - once, at start-up
        console.print(f"[green]edgesim is up[/green] {json.dumps(gw.ports)}  (Ctrl-C to stop)")
        await stop.wait()
    console.print("edgesim stopped")


# ---------------------------------------------------------------- certs
@certs_app.command("init")
def certs_init(certs_dir: CertsDir = Path("certs")) -> None:
    """Create the local root CA and the server certificate (idempotent)."""
    from gateway.identity.keystore import ensure_local_ca

    local, created = ensure_local_ca(certs_dir)
    console.print(("created " if created else "exists: ") + str(local.root_cert_path))


@certs_app.command("create")
def certs_create(
    thing: Annotated[str, typer.Option(help="Thing to create (if missing) and attach the certificate to.")],
    policy: Annotated[str | None, typer.Option(help="Policy to attach to the certificate.")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the files (default: the certs dir).")] = None,
    key_type: Annotated[str, typer.Option(help="ec (P-256) or rsa (2048).")] = "ec",
    inactive: Annotated[bool, typer.Option(help="Leave the certificate INACTIVE.")] = False,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
    as_json: JsonOut = False,
) -> None:
    """CreateKeysAndCertificate for a thing, writing NAME.cert.pem, NAME.private.key (0600), NAME.public.key."""
    from gateway.identity.keystore import write_device_files

    if key_type not in ("ec", "rsa"):
        raise typer.BadParameter("key type must be ec or rsa")
    with _registry(data_dir, certs_dir) as reg:
        if not reg.thing_exists(thing):
            reg.create_thing(thing)
        created = reg.create_keys_and_certificate(set_as_active=not inactive, key_type=key_type)
        reg.attach_thing_principal(thing, created["certificateArn"])
        if policy:
            reg.attach_policy(policy, created["certificateArn"])
        path = write_device_files(
            out or certs_dir,
            thing,
            created["certificatePem"],
            created["keyPair"]["PrivateKey"],
            created["keyPair"]["PublicKey"],
        )
    result = {
        "certificateId": created["certificateId"],
        "certificateArn": created["certificateArn"],
        "thingName": thing,
        "certificateFile": str(path),
        "policy": policy,
    }
    if as_json:
        _emit(result, True)
    else:
        console.print(f"certificate [bold]{created['certificateId']}[/bold] for thing {thing} -> {path}")


@certs_app.command("register")
def certs_register(
    cert_file: Path,
    ca_file: Annotated[Path | None, typer.Option("--ca", help="The CA that signed it (must be registered).")] = None,
    without_ca: Annotated[bool, typer.Option(help="RegisterCertificateWithoutCA.")] = False,
    active: Annotated[bool, typer.Option(help="Register as ACTIVE.")] = True,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """Register a device certificate made elsewhere."""
    with _registry(data_dir) as reg:
        pem = cert_file.read_text()
        status = "ACTIVE" if active else "INACTIVE"
        if without_ca:
            out = reg.register_certificate_without_ca(pem, status)
        else:
            out = reg.register_certificate(pem, ca_file.read_text() if ca_file else None, status)
    _emit(out, as_json) if as_json else console.print(f"registered {out['certificateId']}")


@certs_app.command("register-ca")
def certs_register_ca(
    ca_file: Path,
    active: Annotated[bool, typer.Option(help="Register as ACTIVE.")] = True,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """RegisterCACertificate: trust device certificates signed by this CA."""
    with _registry(data_dir) as reg:
        out = reg.register_ca_certificate(ca_file.read_text(), set_as_active=active)
    _emit(out, as_json) if as_json else console.print(f"registered CA {out['certificateId']}")


def _set_status(certificate_id: str, status: str, data_dir: Path) -> None:
    with _registry(data_dir) as reg:
        reg.update_certificate(certificate_id, status)
    console.print(f"{certificate_id} is now {status}")


@certs_app.command("activate")
def certs_activate(certificate_id: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """Set a certificate ACTIVE."""
    _set_status(certificate_id, "ACTIVE", data_dir)


@certs_app.command("deactivate")
def certs_deactivate(certificate_id: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """Set a certificate INACTIVE (its live connections are dropped)."""
    _set_status(certificate_id, "INACTIVE", data_dir)


@certs_app.command("revoke")
def certs_revoke(certificate_id: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """Revoke a certificate for good (its live connections are dropped)."""
    _set_status(certificate_id, "REVOKED", data_dir)


@certs_app.command("list")
def certs_list(data_dir: DataDir = Path(".edgesim"), as_json: JsonOut = False) -> None:
    """List certificates."""
    with _registry(data_dir) as reg:
        out = reg.list_certificates()
    table = Table("certificateId", "status", "created")
    for c in out["certificates"]:
        table.add_row(c["certificateId"], c["status"], str(c["creationDate"]))
    _emit(out, as_json, table)


@certs_app.command("describe")
def certs_describe(certificate_id: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """Describe one certificate (JSON)."""
    with _registry(data_dir) as reg:
        _emit(reg.describe_certificate(certificate_id), True)


# ---------------------------------------------------------------- things
def _attributes(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"attribute {item!r} must look like name=value")
        out[key] = value
    return out


Attr = Annotated[list[str] | None, typer.Option("--attr", help="name=value (repeatable).")]


@things_app.command("create")
def things_create(
    name: str,
    thing_type: Annotated[str | None, typer.Option("--type")] = None,
    attr: Attr = None,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """CreateThing."""
    with _registry(data_dir) as reg:
        out = reg.create_thing(name, thing_type, _attributes(attr))
    _emit(out, as_json) if as_json else console.print(f"thing {out['thingName']} ({out['thingArn']})")


@things_app.command("describe")
def things_describe(name: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """DescribeThing (JSON)."""
    with _registry(data_dir) as reg:
        _emit(reg.describe_thing(name), True)


@things_app.command("list")
def things_list(
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
    attribute: Annotated[str | None, typer.Option(help="Filter: name=value.")] = None,
    thing_type: Annotated[str | None, typer.Option("--type")] = None,
) -> None:
    """ListThings (every page)."""
    name, value = ([*attribute.split("=", 1), None])[:2] if attribute else (None, None)
    things: list[dict[str, Any]] = []
    with _registry(data_dir) as reg:
        token = None
        while True:
            page = reg.list_things(
                next_token=token, attribute_name=name, attribute_value=value, thing_type_name=thing_type
            )
            things += page["things"]
            token = page.get("nextToken")
            if not token:
                break
    table = Table("thingName", "type", "attributes", "version")
    for t in things:
        table.add_row(t["thingName"], t.get("thingTypeName", ""), json.dumps(t["attributes"]), str(t["version"]))
    _emit({"things": things}, as_json, table)


@things_app.command("update")
def things_update(
    name: str,
    attr: Attr = None,
    merge: Annotated[bool, typer.Option(help="Merge attributes.")] = True,
    thing_type: Annotated[str | None, typer.Option("--type")] = None,
    data_dir: DataDir = Path(".edgesim"),
) -> None:
    """UpdateThing."""
    with _registry(data_dir) as reg:
        reg.update_thing(name, thing_type, _attributes(attr) if attr else None, merge)
    console.print(f"updated {name}")


@things_app.command("delete")
def things_delete(name: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """DeleteThing."""
    with _registry(data_dir) as reg:
        reg.delete_thing(name)
    console.print(f"deleted {name}")


@things_app.command("create-type")
def things_create_type(name: str, description: str | None = None, data_dir: DataDir = Path(".edgesim")) -> None:
    """CreateThingType."""
    with _registry(data_dir) as reg:
        reg.create_thing_type(name, description)
    console.print(f"thing type {name}")


@things_app.command("create-group")
def things_create_group(name: str, parent: str | None = None, data_dir: DataDir = Path(".edgesim")) -> None:
    """CreateThingGroup (optionally nested under --parent)."""
    with _registry(data_dir) as reg:
        reg.create_thing_group(name, parent)
    console.print(f"thing group {name}")


@things_app.command("add-to-group")
def things_add_to_group(group: str, thing: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """AddThingToThingGroup."""
    with _registry(data_dir) as reg:
        reg.add_thing_to_thing_group(group, thing)
    console.print(f"{thing} is in {group}")


# ---------------------------------------------------------------- policies
@policies_app.command("create")
def policies_create(
    name: str,
    document: Annotated[Path, typer.Argument(help="Policy JSON file.")],
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """CreatePolicy from a JSON file."""
    with _registry(data_dir) as reg:
        out = reg.create_policy(name, document.read_text())
    _emit(out, as_json) if as_json else console.print(f"policy {name} version {out['policyVersionId']}")


@policies_app.command("update")
def policies_update(name: str, document: Path, data_dir: DataDir = Path(".edgesim")) -> None:
    """CreatePolicyVersion and make it the default (takes effect on live connections)."""
    with _registry(data_dir) as reg:
        out = reg.create_policy_version(name, document.read_text(), set_as_default=True)
    console.print(f"policy {name} version {out['policyVersionId']} is the default")


@policies_app.command("get")
def policies_get(name: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """GetPolicy (JSON)."""
    with _registry(data_dir) as reg:
        _emit(reg.get_policy(name), True)


@policies_app.command("list")
def policies_list(data_dir: DataDir = Path(".edgesim"), as_json: JsonOut = False) -> None:
    """ListPolicies."""
    with _registry(data_dir) as reg:
        out = reg.list_policies()
    table = Table("policyName", "policyArn")
    for p in out["policies"]:
        table.add_row(p["policyName"], p["policyArn"])
    _emit(out, as_json, table)


def _target(reg: Any, target: str) -> str:
    if target.startswith("arn:"):
        return target
    if len(target) == 64:
        return str(reg.arn("cert", target))
    return str(reg.arn("thinggroup", target))


@policies_app.command("attach")
def policies_attach(
    name: str,
    target: Annotated[str, typer.Argument(help="Certificate id/ARN or thing group.")],
    data_dir: DataDir = Path(".edgesim"),
) -> None:
    """AttachPolicy to a certificate or thing group."""
    with _registry(data_dir) as reg:
        reg.attach_policy(name, _target(reg, target))
    console.print(f"attached {name} to {target}")


@policies_app.command("detach")
def policies_detach(name: str, target: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """DetachPolicy."""
    with _registry(data_dir) as reg:
        reg.detach_policy(name, _target(reg, target))
    console.print(f"detached {name} from {target}")


@policies_app.command("delete")
def policies_delete(name: str, data_dir: DataDir = Path(".edgesim")) -> None:
    """DeletePolicy."""
    with _registry(data_dir) as reg:
        reg.delete_policy(name)
    console.print(f"deleted {name}")


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="How many simulated devices.")] = 10,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between each device's publishes.")] = 0.5,
    mqtts_port: Annotated[int, typer.Option("--mqtts-port")] = 8883,
    api_port: Annotated[int, typer.Option("--api-port")] = 4566,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
) -> None:
    """Start the gateway with a small simulated fleet and show live figures."""
    from gateway.demo import run_demo

    logging.basicConfig(level="WARNING")
    cfg = Config(
        mqtts_port=mqtts_port, api_port=api_port, wss_port=None, https_port=None, data_dir=data_dir, certs_dir=certs_dir
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(cfg, devices, duration, interval))
    console.print("demo stopped")
