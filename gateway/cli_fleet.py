"""`edgesim fleet`: run a fleet file's simulated devices against the gateway (or any MQTT broker)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, err_console
from gateway.config import default_certs_dir

if TYPE_CHECKING:
    from devices.figures import Figures
    from devices.provision import DeviceFiles
    from devices.spec import FleetSpec

fleet_app = typer.Typer(help="Fleets of simulated devices: validate a fleet file, run it.", no_args_is_help=True)

FleetFile = Annotated[Path, typer.Argument(help="A fleet file (YAML or TOML), e.g. examples/fleets/demo.yaml.")]


def _load(path: Path, as_json: bool = False) -> FleetSpec:
    from dataclasses import asdict

    from devices.spec import FleetFileError, load_fleet

    try:
        return load_fleet(path)
    except FleetFileError as exc:
        if as_json:
            typer.echo(json.dumps({"file": str(path), "ok": False, "problems": [asdict(p) for p in exc.problems]}))
        elif len(exc.problems) == 1:
            err_console.print(f"[red]error:[/red] {escape(str(exc.problems[0]))}", highlight=False)
        else:
            err_console.print(f"[red]error:[/red] {len(exc.problems)} problems in {escape(str(path))}")
            for problem in exc.problems:
                err_console.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    except OSError as exc:
        err_console.print(f"[red]error:[/red] cannot read {path}: {exc.strerror}")
        raise typer.Exit(1) from exc


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
        raise typer.BadParameter(f"--shard takes k/n with 0 <= k < n, got {text!r}")
    return int(k), int(n)


@fleet_app.command("validate")
def validate(path: FleetFile, as_json: JsonOut = False) -> None:
    """Check a fleet file and show what it expands to (errors name file, line and field)."""
    from devices.spec import expand

    spec = _load(path, as_json)
    devices = expand(spec)
    by_type: dict[str, int] = {}
    for device in devices:
        by_type[device.type_name] = by_type.get(device.type_name, 0) + 1
    protocols = {t.name: t.protocol for t in spec.device_types}
    data = {"fleet": spec.fleet, "devices": len(devices), "types": by_type, "protocols": protocols,
            "policy": spec.render_policy_name()}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"{path}: fleet {spec.fleet!r}, {len(devices)} devices")
    for name, count in by_type.items():
        first = next(d for d in devices if d.type_name == name)
        v5 = ""
        if first.protocol == 5:
            keys = ", ".join(key for key, _ in first.user_properties)
            v5 = " [MQTT 5" + (f"; user properties {keys}" if keys else "") + "]"
        typer.echo(f"  {name}: {count} (e.g. {first.thing_name} → {first.topic}){v5}")


@fleet_app.command("run")
def run(
    path: FleetFile,
    target: Annotated[
        str, typer.Option(help="mqtts://host:port (mutual TLS) or mqtt://host:port (plain, e.g. mosquitto).")
    ] = "mqtts://127.0.0.1:8883",
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    ca: Annotated[
        Path | None,
        typer.Option(help="CA that signed the broker's certificate [default: certs/root-ca.pem]"),
    ] = None,
    certs_dir: Annotated[
        Path | None, typer.Option(help="Where device certificates are cached [default: certs/fleet]")
    ] = None,
    no_provision: Annotated[
        bool, typer.Option("--no-provision", help="Use cached certificates (or none, for mqtt://) and create nothing.")
    ] = False,
    shared_cert: Annotated[
        bool, typer.Option("--shared-cert", help="One certificate attached to every thing (lighter at scale).")
    ] = False,
    connect_rate: Annotated[float, typer.Option(help="Connects per second per process (0: no limit).")] = 200,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Spread the devices over this many processes.")] = 1,
    shard: Annotated[str | None, typer.Option(help="Run only slice k/n of the fleet (several machines).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")] = False,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Keep the live summary here as JSON, rewritten about once a second.")
    ] = None,
) -> None:
    """Provision (unless --no-provision) and run a fleet with a live view; Ctrl-C stops cleanly with a summary."""
    from devices.custom_auth import AuthOptions
    from devices.device import Target
    from devices.fleet import FleetOptions, run_in_process, run_processes
    from devices.provision import Provisioner, iot_client
    from devices.spec import expand
    from devices.view import connect_trouble, summary, table

    spec = _load(path)
    try:
        where = Target.parse(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    slice_ = _shard(shard)
    devices = expand(spec, slice_)
    certs = certs_dir or default_certs_dir() / "fleet"
    ca_file = ca or default_certs_dir() / "root-ca.pem"
    ui = Console(stderr=True)
    files: dict[str, DeviceFiles] = {}
    claim, fresh = None, frozenset[str]()
    if where.tls and spec.provisioning is not None:
        from gateway.cli_fleet_provisioning import provisioning_setup

        files, claim, fresh = provisioning_setup(spec, devices, endpoint, certs, no_provision)
    elif where.tls and spec.auth is not None:
        pass  # a custom authorizer judges each connection: no certificates to provision
    elif where.tls:
        provisioner = Provisioner(iot_client(endpoint), spec, certs, shared_cert)
        if no_provision:
            files = {d.thing_name: provisioner.files(d) for d in devices}
            missing = [d.thing_name for d in devices if not files[d.thing_name].cert.exists()]
            if missing:
                err_console.print(
                    f"[red]error:[/red] no cached certificate for {missing[0]} (and {len(missing) - 1} more)"
                )
                raise typer.Exit(1)
        else:
            from gateway.cli_fleet_provisioning import provisioning_errors

            with provisioning_errors(endpoint), Progress(console=ui, transient=True) as progress:
                task = progress.add_task(f"provisioning {len(devices)} devices", total=len(devices))
                files = provisioner.provision(devices, lambda n: progress.advance(task, n))
        if not ca_file.exists():
            err_console.print(f"[red]error:[/red] CA certificate {ca_file} not found; pass --ca")
            raise typer.Exit(1)
    options = FleetOptions(
        where,
        ca_file if where.tls else None,
        connect_rate,
        duration,
        processes,
        slice_,
        files,
        claim,
        fresh,
        AuthOptions.from_spec(spec.auth) if spec.auth is not None else None,
    )
    title = f"fleet {spec.fleet} → {target}"
    live_view = not as_json or sys.stderr.isatty()
    elapsed = 0.0
    live = Live(console=ui, refresh_per_second=4) if live_view else None

    written = 0.0

    def show(figures: Figures, seconds: float) -> None:
        nonlocal elapsed, written
        elapsed = seconds
        if live is not None:
            live.update(table(summary(figures, seconds), title))
        if metrics_file is not None and (seconds - written >= 1.0 or written == 0.0):
            written = seconds
            _write_atomically(metrics_file, summary(figures, seconds))

    if live is not None:
        live.start()
    try:
        if processes > 1:
            final = run_processes(path, options, show)
        else:
            final = asyncio.run(run_in_process(devices, options, show))
    finally:
        if live is not None:
            live.stop()
    if metrics_file is not None:
        _write_atomically(metrics_file, summary(final, elapsed))
    data = summary(final, elapsed)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    trouble = connect_trouble(data)
    if trouble is not None:
        err_console.print(f"[red]error:[/red] {trouble}", highlight=False)
        raise typer.Exit(1)


def _write_atomically(path: Path, data: object) -> None:
    """Readers (a dashboard, a script polling the file) never see a half-written file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2))
    partial.replace(path)
