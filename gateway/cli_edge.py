"""`edgesim edge`: run a Greengrass-style edge core, switch its cloud link off and on, show its status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from gateway.cli_api import JsonOut, err_console
from gateway.cli_errors import fail, port_in_use_line
from gateway.config import default_certs_dir, default_data_dir
from gateway.errors import ConfigError
from gateway.logs import FORMAT_HELP, configure_logging

if TYPE_CHECKING:
    from gateway.edge.config import EdgeConfig

edge_app = typer.Typer(help="Edge cores: local broker, components, spool and shadow sync.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The edge core's name (its thing name unless the config says otherwise).")]
Home = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "--home",
        help="The core's data folder [default: $EDGESIM_HOME/edge/NAME, i.e. .edgesim/edge/NAME]",
    ),
]


def _home(name: str, home: Path | None) -> Path:
    return home or default_data_dir() / "edge" / name


def _config(path: Path | None, overrides: dict[str, dict[str, Any]]) -> EdgeConfig:
    from gateway.edge.config import EdgeConfig, load_edge_config, with_overrides

    try:
        config = load_edge_config(path) if path is not None else EdgeConfig()
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc
    return with_overrides(config, overrides)


def status_table(status: dict[str, Any]) -> Table:
    cloud, spool, sync = status["cloud"], status["spool"], status["shadow_sync"]
    link = "[green]online[/green]" if cloud["online"] else "[red]offline[/red]"
    if not cloud["wanted"]:
        link += " (switched off)"
    table = Table(title=f"edge core {status['name']} (thing {status['thing']})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "cloud link",
        f"{link}  connects {cloud['connects']}"
        + ("  MQTT 5" if cloud.get("protocol") == "mqtt5" else "")
        + (f"  refused {cloud['refused']:,}" if cloud.get("refused") else "")
        + (f"  {cloud['last_error']}" if cloud["last_error"] and not cloud["online"] else ""),
    )
    table.add_row(
        "local broker",
        f"{status['local']['connections']} devices  {status['local']['messages_in']:,} messages in  "
        f"ports {status['ports']}",
    )
    table.add_row(
        "spool",
        f"{spool['depth']:,} messages  {spool['bytes']:,} / {spool['max_bytes']:,} bytes  "
        f"in flight {spool['in_flight']}  delivered {spool['delivered']:,}  rejected {spool['rejected']:,}  "
        f"evicted {spool['evicted']:,}",
    )
    table.add_row(
        "shadow sync",
        f"{sync['shadows']} shadows  {'in sync' if sync['in_sync'] else 'pending'}  to cloud {sync['to_cloud']}  "
        f"to local {sync['to_local']}" + (f"  last error: {sync['last_error']}" if sync["last_error"] else ""),
    )
    fleet = status.get("fleet_status")
    if fleet is not None:
        table.add_row(
            "fleet status",
            f"{fleet['overallDeviceStatus']}  reports sent {fleet['sequenceNumber']}  every {fleet['interval_s']} s"
            + (f"  last {fleet['last_trigger']}" if fleet.get("last_trigger") else ""),
        )
    for name, stats in status["components"].items():
        table.add_row(
            f"component {name}",
            f"{stats.get('state')}  invocations {stats.get('invocations', 0)}  errors {stats.get('errors', 0)}  "
            f"timeouts {stats.get('timeouts', 0)}  crashes {stats.get('crashes', 0)}  queued {stats.get('queued', 0)}",
        )
    if status["bridge"]["forwarded"]:
        table.add_row("bridge", "  ".join(f"{k} {v:,}" for k, v in status["bridge"]["forwarded"].items()))
    return table


@edge_app.command("run")
def run(
    name: Name,
    config: Annotated[
        Path | None, typer.Option(help="The core's configuration (YAML), e.g. examples/edge/edge.yaml.")
    ] = None,
    home: Home = None,
    endpoint: Annotated[str | None, typer.Option(help="The gateway's HTTP API, to provision the core's thing.")] = None,
    target: Annotated[str | None, typer.Option(help="The gateway's MQTT listener: mqtts://host:port.")] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA of the gateway's certificate [default: certs/root-ca.pem]")
    ] = None,
    certs_dir: Annotated[
        Path | None, typer.Option(help="Where the core's certificate is cached [default: certs]")
    ] = None,
    local_host: Annotated[str | None, typer.Option(help="The local broker's address [default 127.0.0.1].")] = None,
    local_port: Annotated[
        int | None, typer.Option(help="The local broker's plain MQTT port (0: any free port).")
    ] = None,
    local_tls_port: Annotated[
        int | None,
        typer.Option(
            help="Also a mutual-TLS listener here for devices with `edge device-cert` certificates (0: any free port)."
        ),
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final status as JSON on stdout.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    log_format: Annotated[str, typer.Option("--log-format", help=FORMAT_HELP)] = "text",
) -> None:
    """Run an edge core with a live status view; Ctrl-C (or SIGTERM) stops it cleanly."""
    from rich.logging import RichHandler

    from gateway.edge.core import EdgeCore

    cfg = _config(
        config,
        {
            "cloud": {"endpoint": endpoint, "target": target, "ca": ca},
            "local_broker": {"host": local_host, "port": local_port, "tls_port": local_tls_port},
        },
    )
    _fail_on_handler_problems(cfg)
    ui = Console(stderr=True)
    if log_format == "text":
        # Log lines print above the live view instead of tearing it.
        logging.basicConfig(level=log_level.upper(), format="%(name)s: %(message)s", handlers=[RichHandler(console=ui)])
    else:
        try:  # JSON lines go to whatever sys.stderr is when written: the live view redirects it above itself
            configure_logging(log_level, log_format)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    live = Live(console=ui, refresh_per_second=2) if (not as_json or sys.stderr.isatty()) else None

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with EdgeCore(name, cfg, _home(name, home), certs_dir or default_certs_dir()) as core:
            if live is not None:
                live.start()
            started = loop.time()
            try:
                while not stop.is_set() and (duration is None or loop.time() - started < duration):
                    if live is not None:
                        live.update(status_table(core.status()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                return core.status()
            finally:
                if live is not None:
                    live.stop()

    try:
        final = asyncio.run(main())
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    except OSError as exc:
        flags = {"--local-port": cfg.local_broker.port, "--local-tls-port": cfg.local_broker.tls_port}
        line = port_in_use_line(exc, flags)
        if line is None:
            raise
        fail(line)
    if as_json:
        typer.echo(json.dumps(camel_keys(final), indent=2))
    else:
        ui.print(status_table(final))


def _fail_on_handler_problems(cfg: EdgeConfig) -> None:
    from gateway.edge.handler_check import handler_problems

    problems = handler_problems(cfg)
    for problem in problems[1:]:
        err_console.print(f"[red]error:[/red] {escape(problem)}", highlight=False)
    if problems:
        fail(problems[0])


@edge_app.command("validate")
def validate(
    config: Annotated[Path, typer.Argument(help="The core's configuration (YAML), e.g. examples/edge/edge.yaml.")],
    as_json: JsonOut = False,
) -> None:
    """Check an edge config: its fields, and that every component's handler imports (in a child process)."""
    from gateway.edge.handler_check import handler_problems

    cfg = _config(config, {})
    problems = handler_problems(cfg)
    if as_json:
        typer.echo(json.dumps({"file": str(config), "ok": not problems, "problems": problems}))
        if problems:
            raise typer.Exit(1)
        return
    if problems:
        _fail_on_handler_problems(cfg)
    typer.echo(f"{config}: ok ({len(cfg.components)} component(s), {len(cfg.mqtt_topic_mapping)} bridge mapping(s))")


def _control(name: str, home: Path | None, method: str, path: str) -> dict[str, Any]:
    record_file = _home(name, home) / "edge.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        err_console.print(f"[red]error:[/red] edge core {name!r} is not running (no {record_file})")
        raise typer.Exit(1) from None
    url = f"http://127.0.0.1:{record['ports']['control']}{path}"
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("message", exc.reason)
        err_console.print(f"[red]error:[/red] edge core {name!r}: {detail}", highlight=False)
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"[red]error:[/red] edge core {name!r} does not answer at {url}: {exc}")
        raise typer.Exit(1) from exc


@edge_app.command("offline")
def offline(name: Name, home: Home = None, as_json: JsonOut = False) -> None:
    """Cut the core's cloud link (as a pulled cable would) until `edgesim edge online NAME`."""
    _show(_control(name, home, "POST", "/offline"), as_json)


@edge_app.command("online")
def online(name: Name, home: Home = None, as_json: JsonOut = False) -> None:
    """Let the core reconnect to the cloud; the spool drains and shadows reconcile."""
    _show(_control(name, home, "POST", "/online"), as_json)


@edge_app.command("device-cert")
def device_cert(
    name: Name,
    thing: Annotated[str, typer.Argument(help="The local device's thing name (created in the core's registry).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for THING.cert.pem, THING.private.key and edge-root-ca.pem.")
    ] = None,
    home: Home = None,
    as_json: JsonOut = False,
) -> None:
    """Issue a certificate from the core's own CA for a device on its mutual-TLS local listener."""
    from gateway.identity.keystore import write_private, write_public

    issued = _control(name, home, "POST", f"/devices/{thing}/certificate")
    folder = out or default_certs_dir() / "edge" / name / "devices"
    files = {
        "certificate": folder / f"{thing}.cert.pem",
        "privateKey": folder / f"{thing}.private.key",
        "ca": folder / "edge-root-ca.pem",
    }
    write_public(files["certificate"], issued["certificatePem"].encode())
    write_private(files["privateKey"], issued["privateKey"].encode())
    write_public(files["ca"], issued["caPem"].encode())
    if as_json:
        typer.echo(json.dumps({"certificateArn": issued["certificateArn"], **{k: str(v) for k, v in files.items()}}))
        return
    typer.echo(f"{thing}: {files['certificate']}, {files['privateKey']} (0600); trust {files['ca']}")


@edge_app.command("status")
def status(name: Name, home: Home = None, as_json: JsonOut = False) -> None:
    """The running core's link state, spool depth, shadow sync and components."""
    _show(_control(name, home, "GET", "/edgesim/status"), as_json)


_NAMED_BY_USER = ("components", "forwarded")  # their keys are component and mapping names: left as written


def _camel(key: str) -> str:
    if key.endswith("_s"):
        key = key[:-2] + "_seconds"
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(data: Any, parent: str = "") -> Any:
    """The status as the JSON of `--json` shows it: camelCase, as the gateway's API and AWS's JSON are."""
    if isinstance(data, dict):
        return {
            (k if parent in _NAMED_BY_USER else _camel(k)): camel_keys(v, k if parent not in _NAMED_BY_USER else "")
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [camel_keys(v) for v in data]
    return data


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(camel_keys(status), indent=2))
    else:
        Console().print(status_table(status))
