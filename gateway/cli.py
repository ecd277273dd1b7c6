"""The `edgesim` command: run the gateway and the demo; registry and shadow commands live beside it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gateway.cli_api import err_console
from gateway.cli_cloudwatch import cloudwatch_app
from gateway.cli_edge import edge_app
from gateway.cli_errors import fail, one_line, port_in_use_line
from gateway.cli_examples import examples_command, packaged_examples
from gateway.cli_fleet import fleet_app
from gateway.cli_functions import functions_app
from gateway.cli_help import install as install_help_conventions
from gateway.cli_jobs import jobs_app
from gateway.cli_queues import queues_app
from gateway.cli_registry import certs_app, policies_app, things_app
from gateway.cli_rules import rules_app
from gateway.cli_s3 import s3_app
from gateway.cli_shadow import shadow_app
from gateway.cli_streams import streams_app
from gateway.config import Config
from gateway.logs import FORMAT_HELP, configure_logging

install_help_conventions()
app = typer.Typer(help="edgesim: a local, offline AWS IoT Core and its sinks.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")
app.add_typer(things_app, name="things")
app.add_typer(policies_app, name="policies")
app.add_typer(shadow_app, name="shadow")
app.add_typer(rules_app, name="rules")
app.add_typer(cloudwatch_app, name="cloudwatch")
app.add_typer(s3_app, name="s3")
app.add_typer(streams_app, name="streams")
app.add_typer(queues_app, name="queues")
app.add_typer(functions_app, name="functions")
app.add_typer(jobs_app, name="jobs")
app.add_typer(fleet_app, name="fleet")
app.add_typer(edge_app, name="edge")
app.command("examples")(examples_command)

console = Console()

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="EDGESIM_HOME", help="Where the database lives.")]
CertsDir = Annotated[Path, typer.Option("--certs-dir", envvar="EDGESIM_CERTS", help="Where the CA and certs live.")]
LogFormat = Annotated[str, typer.Option("--log-format", help=FORMAT_HELP)]
T = TypeVar("T")
MqttsPort = Annotated[int, typer.Option("--mqtts-port", help="MQTT over mutual TLS (0: any free port).")]
WssPort = Annotated[int, typer.Option("--wss-port", help="MQTT over secure WebSocket (0: any free port, -1: off).")]
HttpsPort = Annotated[
    int, typer.Option("--https-port", help="HTTPS publish with client certs (0: any free port, -1: off).")
]
ApiPort = Annotated[int, typer.Option("--api-port", help="HTTP API and dashboard (0: any free port).")]


def main(argv: list[str] | None = None) -> None:
    """The `edgesim` entry point: an expected mistake that escaped its command still ends in one line, exit 1."""
    try:
        app(args=argv, prog_name="edgesim")
    except Exception as exc:
        line = one_line(exc)
        if line is None:
            raise
        err_console.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
        sys.exit(1)


def _version(value: bool) -> None:
    if value:
        from gateway import __version__

        typer.echo(f"edgesim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """edgesim: a local, offline AWS IoT Core and its sinks."""


def _port_flag(value: int, flag: str, off: bool = False) -> int:
    lowest = -1 if off else 0
    if not lowest <= value <= 65535:
        raise typer.BadParameter(f"{flag} takes 0 (any free port){', -1 (off)' if off else ''} or 1-65535")
    return value


def _reachable(host: str) -> str:
    """A host a browser on this machine can open: a wildcard bind is reached on loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _run_bound(coro: Coroutine[Any, Any, T], flags: dict[str, int | None]) -> T:
    """asyncio.run, with a port already taken reported as one line naming its flag, and another gateway on the same
    data dir as one line naming its pid."""
    from gateway.datadir import DataDirInUse

    try:
        return asyncio.run(coro)
    except DataDirInUse as exc:
        fail(str(exc))
    except OSError as exc:
        line = port_in_use_line(exc, flags)
        if line is None:
            raise
        fail(line)


# ---------------------------------------------------------------- up
@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address every listener binds to.")] = "127.0.0.1",
    mqtts_port: MqttsPort = 8883,
    wss_port: WssPort = 8084,
    https_port: HttpsPort = 8443,
    api_port: ApiPort = 4566,
    insecure_port: Annotated[
        int | None,
        typer.Option("--insecure-port", help="Also open plain MQTT here (anonymous dev policy; 0: any free port)."),
    ] = None,
    publishes_per_second: Annotated[
        int, typer.Option(help="Inbound PUBLISH quota per connection (AWS: 100; 0 = unlimited).")
    ] = 100,
    min_keep_alive: Annotated[
        int, typer.Option(help="Raise clients' keep-alive to at least this many seconds (AWS: 30).", min=1)
    ] = 30,
    connect_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds from accept within which a client must send CONNECT (TLS handshake included).", min=0.1
        ),
    ] = 10.0,
    max_session_expiry: Annotated[
        int,
        typer.Option(
            help="Seconds a persistent session outlives its connection at most (AWS: 3600, up to 604800).",
            min=1,
            max=604_800,
        ),
    ] = 3600,
    data_dir: DataDir = Path(".edgesim"),
    certs_dir: CertsDir = Path("certs"),
    require_sigv4: Annotated[
        list[str] | None,
        typer.Option("--require-sigv4", help="ACCESS_KEY:SECRET (repeatable): check SigV4 on every API request."),
    ] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Load rules (*.json, *.sql) from this folder.")] = None,
    create_targets: Annotated[
        bool,
        typer.Option(
            "--create-targets",
            help="With --rules: create the Kinesis streams and SQS queues the rules write to, and deploy their Lambda "
            "functions from ../functions/NAME.py beside the folder, when missing.",
        ),
    ] = False,
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
    alpn_port: Annotated[
        int,
        typer.Option(
            "--alpn-port",
            help="One TLS port multiplexed by ALPN like AWS IoT's 443: x-amzn-mqtt-ca, mqtt (custom authorizers, "
            "no client certificate), x-amzn-http-ca (0: any free port, -1: off).",
        ),
    ] = -1,
) -> None:
    """Run the gateway in the foreground until Ctrl-C."""
    _configure_logging(log_level, log_format)
    _check_insecure_exposure(host, insecure_port, expose_insecure_port)
    flags = _port_flags(mqtts_port, wss_port, https_port, api_port)
    if insecure_port is not None:
        flags["--insecure-port"] = _port_flag(insecure_port, "--insecure-port")
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
    if create_targets and rules is None:
        raise typer.BadParameter("--create-targets needs --rules DIR")
    if rules is not None and not rules.is_dir():
        fail(f"rules folder {rules} does not exist")
    if sink_backend not in ("local", "aws"):
        raise typer.BadParameter("--sink-backend takes local or aws")
    cfg.mqtt.publishes_per_second = publishes_per_second
    cfg.mqtt.min_keep_alive_s = min_keep_alive
    cfg.mqtt.max_session_expiry_s = max_session_expiry
    cfg.mqtt.connect_timeout_s = connect_timeout
    if alpn_port >= 0:
        flags["--alpn-port"] = _port_flag(alpn_port, "--alpn-port")
        cfg.alpn_port = alpn_port
    for pair in require_sigv4 or []:
        key, sep, secret = pair.partition(":")
        if not sep or not key or not secret:
            raise typer.BadParameter(f"--require-sigv4 wants ACCESS_KEY:SECRET, got {pair!r}")
        cfg.sigv4_credentials[key] = secret
    _run_bound(_run_gateway(cfg, ports_file, create_targets), flags)


def _port_flags(mqtts_port: int, wss_port: int, https_port: int, api_port: int) -> dict[str, int | None]:
    return {
        "--mqtts-port": _port_flag(mqtts_port, "--mqtts-port"),
        "--wss-port": _port_flag(wss_port, "--wss-port", off=True),
        "--https-port": _port_flag(https_port, "--https-port", off=True),
        "--api-port": _port_flag(api_port, "--api-port"),
    }


def _check_insecure_exposure(host: str, insecure_port: int | None, allowed: bool) -> None:
    """Anonymous plain MQTT under the allow-all dev policy is for this machine only, unless asked for by name."""
    from gateway.api.auth import is_loopback

    if insecure_port is None or is_loopback(host):
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


def _configure_logging(level: str, fmt: str) -> None:
    try:
        configure_logging(level, fmt)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _api_clients(endpoint: str, token: str | None) -> Callable[[str], Any]:
    from devices.provision import TOKEN_HEADER
    from gateway.cli_api import aws_client

    def make(service: str) -> Any:
        client = aws_client(service, endpoint)
        if token:
            client.meta.events.register(
                "before-send", lambda request, **_: request.headers.__setitem__(TOKEN_HEADER, token)
            )
        return client

    return make


async def _run_gateway(cfg: Config, ports_file: Path | None, create_targets: bool = False) -> None:
    from gateway.app import Gateway
    from gateway.gcsettings import settle_after_startup

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(cfg) as gw:
        if create_targets and cfg.rules_dir is not None:
            from gateway.rule_targets import create_targets as create

            clients = _api_clients(f"http://127.0.0.1:{gw.ports['api']}", gw.api_token)
            for line in await asyncio.to_thread(create, clients, cfg.rules_dir):
                console.print(f"targets: {line}", markup=False, highlight=False, soft_wrap=True)
        settle_after_startup()
        if ports_file is not None:
            ports_file.write_text(json.dumps(gw.ports))  # noqa: ASYNC240 - once, at start-up
        console.print(f"[green]edgesim is up[/green] {json.dumps(gw.ports)}  (Ctrl-C to stop)")
        token = gw.api_token
        dashboard = f"http://{_reachable(cfg.host)}:{gw.ports['api']}/"
        if not token:
            console.print(f"dashboard: {dashboard}", markup=False, highlight=False)
        else:
            console.print(
                f"API/dashboard token: {token}  (send it as 'Authorization: Bearer {token}' or open "
                f"{dashboard}?token={token})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        await stop.wait()
    console.print("edgesim stopped")


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    fleet: Annotated[
        Path | None, typer.Option(help="The fleet file to run [default: the packaged examples/fleets/demo.yaml]")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    rules: Annotated[
        Path | None,
        typer.Option(help="Rules folder to load [default: ./examples/rules if present, else the packaged ones]"),
    ] = None,
    mqtts_port: MqttsPort = 8883,
    wss_port: WssPort = 8084,
    https_port: HttpsPort = 8443,
    api_port: ApiPort = 4566,
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
    flags = _port_flags(mqtts_port, wss_port, https_port, api_port)
    fleet = fleet or packaged_examples() / "fleets" / "demo.yaml"
    try:
        spec = load_fleet(fleet)
    except FleetFileError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot read fleet file {fleet}: {exc.strerror}")
    if rules is None:
        rules = Path("examples/rules") if Path("examples/rules").is_dir() else packaged_examples() / "rules"
    cfg = Config(
        mqtts_port=mqtts_port,
        api_port=api_port,
        wss_port=None if wss_port < 0 else wss_port,
        https_port=None if https_port < 0 else https_port,
        data_dir=data_dir,
        certs_dir=certs_dir,
        rules_dir=rules,
    )
    result = _run_bound(run_demo(cfg, spec, duration, quiet_stdout=as_json, edge=edge), flags)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        console.print("demo stopped")
