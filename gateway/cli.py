"""The `edgesim` command: run the gateway and the demo; registry and shadow commands live beside it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gateway.cli_api import err_console
from gateway.cli_edge import edge_app
from gateway.cli_fleet import fleet_app
from gateway.cli_functions import functions_app
from gateway.cli_registry import certs_app, policies_app, things_app
from gateway.cli_rules import rules_app
from gateway.cli_s3 import s3_app
from gateway.cli_shadow import shadow_app
from gateway.cli_streams import streams_app
from gateway.config import Config
from gateway.logs import FORMAT_HELP, configure_logging

app = typer.Typer(help="edgesim: a local, offline AWS IoT Core and its sinks.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")
app.add_typer(things_app, name="things")
app.add_typer(policies_app, name="policies")
app.add_typer(shadow_app, name="shadow")
app.add_typer(rules_app, name="rules")
app.add_typer(s3_app, name="s3")
app.add_typer(streams_app, name="streams")
app.add_typer(functions_app, name="functions")
app.add_typer(fleet_app, name="fleet")
app.add_typer(edge_app, name="edge")

console = Console()

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="EDGESIM_HOME", help="Where the database lives.")]
CertsDir = Annotated[Path, typer.Option("--certs-dir", envvar="EDGESIM_CERTS", help="Where the CA and certs live.")]
LogFormat = Annotated[str, typer.Option("--log-format", help=FORMAT_HELP)]


def main() -> None:
    app()


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
    min_keep_alive: Annotated[
        int, typer.Option(help="Raise clients' keep-alive to at least this many seconds (AWS: 30).", min=1)
    ] = 30,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
    require_sigv4: Annotated[
        list[str] | None,
        typer.Option("--require-sigv4", help="ACCESS_KEY:SECRET (repeatable): check SigV4 on every API request."),
    ] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Load rules (*.json, *.sql) from this folder.")] = None,
    sink_backend: Annotated[
        str, typer.Option(help="local: edgesim's own sinks; aws: rule actions go to AWS through boto3.")
    ] = "local",
    sink_endpoint_url: Annotated[
        str | None,
        typer.Option(help="With --sink-backend aws: an AWS-compatible endpoint (LocalStack, another edgesim)."),
    ] = None,
    ports_file: Annotated[Path | None, typer.Option(help="Write the bound ports here as JSON once ready.")] = None,
    server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name", help="Extra DNS name for the server certificate (repeatable), e.g. a container's name."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    api_token: Annotated[
        str | None,
        typer.Option(
            "--api-token",
            envvar="EDGESIM_API_TOKEN",
            help="Token the HTTP API and dashboard require (default: none on loopback, a random one printed at "
            "start-up when --host exposes them).",
        ),
    ] = None,
    log_format: LogFormat = "text",
    expose_insecure_port: Annotated[
        bool,
        typer.Option(
            "--expose-insecure-port",
            help="Allow --insecure-port with a --host beyond loopback: anonymous MQTT, open to the network.",
        ),
    ] = False,
) -> None:
    """Run the gateway in the foreground until Ctrl-C."""
    _configure_logging(log_level, log_format)
    _check_insecure_exposure(host, insecure_port, expose_insecure_port)
    cfg = Config(
        host=host,
        mqtts_port=mqtts_port,
        wss_port=None if wss_port < 0 else wss_port,
        https_port=None if https_port < 0 else https_port,
        api_port=api_port,
        insecure_port=insecure_port,
        data_dir=data_dir,
        certs_dir=certs_dir,
        rules_dir=rules,
        sink_backend=sink_backend,
        sink_endpoint_url=sink_endpoint_url,
        server_names=server_name or [],
        api_token=api_token,
    )
    if sink_backend not in ("local", "aws"):
        raise typer.BadParameter("--sink-backend takes local or aws")
    cfg.mqtt.publishes_per_second = publishes_per_second
    cfg.mqtt.min_keep_alive_s = min_keep_alive
    for pair in require_sigv4 or []:
        key, sep, secret = pair.partition(":")
        if not sep or not key or not secret:
            raise typer.BadParameter(f"--require-sigv4 wants ACCESS_KEY:SECRET, got {pair!r}")
        cfg.sigv4_credentials[key] = secret
    _run_locked(_run_gateway(cfg, ports_file))


def _check_insecure_exposure(host: str, insecure_port: int | None, allowed: bool) -> None:
    """Anonymous plain MQTT under the allow-all dev policy is for this machine only, unless asked for by name."""
    if insecure_port is None or _is_loopback(host):
        return
    if not allowed:
        err_console.print(
            f"[red]error:[/red] --insecure-port with --host {host} would let anyone on the network publish and "
            "subscribe anonymously; add --expose-insecure-port if that is what you want",
            markup=True,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    err_console.print(
        f"[bold red]WARNING:[/bold red] plain MQTT on {host}:{insecure_port} takes anonymous clients from the "
        "network under the allow-all dev policy",
        markup=True,
        soft_wrap=True,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_locked(main: Coroutine[Any, Any, object]) -> Any:
    """Run a gateway; another one on the same data dir is one line, not a traceback."""
    from gateway.datadir import DataDirInUse

    try:
        return asyncio.run(main)
    except DataDirInUse as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(1) from None


def _configure_logging(level: str, fmt: str) -> None:
    try:
        configure_logging(level, fmt)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


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
        token = gw.api_token
        if not token:
            console.print(f"dashboard: http://{cfg.host}:{gw.ports['api']}/", markup=False, highlight=False)
        else:
            console.print(
                f"API/dashboard token: {token}  (send it as 'Authorization: Bearer {token}' or open "
                f"http://{cfg.host}:{gw.ports.get('api', cfg.api_port)}/?token={token})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        await stop.wait()
    console.print("edgesim stopped")


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    fleet: Annotated[Path, typer.Option(help="The fleet file to run.")] = Path("examples/fleets/demo.yaml"),
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    rules: Annotated[
        Path | None, typer.Option(help="Rules folder to load (default: examples/rules if present).")
    ] = None,
    mqtts_port: Annotated[int, typer.Option("--mqtts-port")] = 8883,
    api_port: Annotated[int, typer.Option("--api-port")] = 4566,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the fleet's final summary as JSON.")] = False,
    log_format: LogFormat = "text",
    edge: Annotated[
        bool,
        typer.Option(
            "--edge/--no-edge",
            help="Also run examples/edge/edge.yaml's edge core and its local devices "
            "(examples/fleets/edge-devices.yaml).",
        ),
    ] = False,
) -> None:
    """The gateway with the example rules and sinks, and a simulated fleet, in one live view."""
    from devices.spec import FleetFileError, load_fleet
    from gateway.demo import run_demo

    _configure_logging("warning", log_format)
    try:
        spec = load_fleet(fleet)
    except (FleetFileError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(1) from exc
    if rules is None and Path("examples/rules").is_dir():
        rules = Path("examples/rules")
    cfg = Config(
        mqtts_port=mqtts_port,
        api_port=api_port,
        wss_port=None,
        https_port=None,
        data_dir=data_dir,
        certs_dir=certs_dir,
        rules_dir=rules,
    )
    result = _run_locked(run_demo(cfg, spec, duration, quiet_stdout=as_json, edge=edge))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        console.print("demo stopped")
