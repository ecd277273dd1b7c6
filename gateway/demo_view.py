"""The demo's live view: everything on a big terminal, the essentials on 80x24 (the dashboard URL always shows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from devices.view import table as fleet_table
from gateway.cli_edge import status_table


@dataclass(frozen=True)
class DemoNames:
    """What the view names: the dashboard and the example sinks, and a device worth looking at."""

    api: str  # http://127.0.0.1:PORT
    mqtts_port: int
    fleet: str
    thermostat: str
    stream: str
    queue: str
    function: str


def gateway_table(figures: dict[str, Any], names: DemoNames) -> Table:
    out = Table(title="gateway: rules and sinks", show_header=True, min_width=60)
    out.add_column("rule")
    out.add_column("matched", justify="right")
    out.add_column("actions ok", justify="right")
    out.add_column("failed", justify="right")
    for name, m in figures["rules"].items():
        out.add_row(name, f"{m['matched']:,}", f"{m['action_success']:,}", f"{m['action_failure']:,}")
    calls = figures["lambda"]
    out.add_section()
    out.add_row(f"Kinesis '{names.stream}' records", f"{figures['stream_records']:,}", "", "")
    out.add_row(f"SQS '{names.queue}' messages waiting", f"{figures['queue_messages']:,}", "", "")
    out.add_row(f"Lambda '{names.function}' invocations", f"{calls['invocations']:,}", "", f"{calls['errors']:,}")
    out.add_row("shadow updates", f"{figures['shadow_updates']:,}", "", "")
    out.add_row("MQTT connections", f"{figures['connections']:,}", "", "")
    out.add_row("policy denials", f"{figures['policy_denials']:,}", "", "")
    return out


def hints(names: DemoNames) -> Panel:
    api = names.api
    return Panel(
        f"Dashboard: {api}/  (fleet, shadows, live messages, rules, sinks)\n"
        "Try, in another terminal (. .venv/bin/activate; export EDGESIM_ENDPOINT=" + api + "):\n"
        f"  edgesim streams read {names.stream} --follow                 # the telemetry stream, checkpointed\n"
        f"  aws --endpoint-url {api} sqs receive-message --queue-url {api}/123456789012/{names.queue}\n"
        f"  edgesim shadow get {names.thermostat}                  # desired.mode = power_save after a low battery\n"
        f"  edgesim functions logs {names.function}\n"
        "  edgesim rules stats\n"
        f"  edgesim fleet run examples/fleets/smoke.yaml --target mqtts://127.0.0.1:{names.mqtts_port}\n"
        "Ctrl-C here stops the demo.",
        title=f"fleet '{names.fleet}' is running",
    )


def compact(
    fleet: dict[str, Any], gateway: dict[str, Any], edge: dict[str, Any] | None, names: DemoNames
) -> RenderableType:
    """One row per essential: fits 80x24 with three rules and an edge core."""
    out = Table(show_header=False, box=None, padding=(0, 1), expand=False)
    out.add_column(style="bold", no_wrap=True)
    out.add_column(no_wrap=True, overflow="ellipsis", max_width=68)
    out.add_row("dashboard", Text(f"{names.api}/", style="bold cyan"))
    out.add_row(
        "fleet",
        f"{fleet['devices']:,} devices: {fleet['connected']:,} connected, {fleet['connecting']:,} connecting, "
        f"{fleet['offline']:,} offline, {fleet['failed']:,} failed",
    )
    lat = fleet["puback_ms"]
    out.add_row(
        "messages",
        f"{fleet['sent']:,} sent, {fleet['acked']:,} acked, {fleet['sent_per_s']:,.1f}/s; "
        f"PUBACK p99 {lat['p99']:.1f} ms",
    )
    errors = {**fleet["errors"]}
    out.add_row(
        "errors",
        Text(", ".join(f"{k} {v:,}" for k, v in sorted(errors.items())), style="red") if errors else "none",
    )
    for i, (name, m) in enumerate(gateway["rules"].items()):
        out.add_row(
            "rules" if i == 0 else "",
            f"{name}: {m['matched']:,} matched, {m['action_success']:,} ok, {m['action_failure']:,} failed",
        )
    calls = gateway["lambda"]
    out.add_row("sinks", f"Kinesis {names.stream}: {gateway['stream_records']:,} records")
    out.add_row("", f"SQS {names.queue}: {gateway['queue_messages']:,} waiting")
    out.add_row("", f"Lambda {names.function}: {calls['invocations']:,} calls, {calls['errors']:,} errors")
    out.add_row(
        "gateway",
        f"{gateway['connections']:,} MQTT connections, {gateway['shadow_updates']:,} shadow updates, "
        f"{gateway['policy_denials']:,} policy denials",
    )
    if edge is not None:
        link = "online" if edge["cloud"]["online"] else "offline"
        components = ", ".join(f"{n} {c.get('state')}" for n, c in edge["components"].items())
        out.add_row(
            "edge",
            f"{edge['name']} {link}, spool {edge['spool']['depth']:,}, {edge['local']['connections']} local devices"
            + (f", {components}" if components else ""),
        )
    out.add_row("try", f"edgesim rules stats; edgesim streams read {names.stream} --follow")
    out.add_row("", f"edgesim shadow get {names.thermostat}  (. .venv/bin/activate first)")
    title = Text(f"edgesim demo: fleet '{names.fleet}', {fleet['elapsed_s']:.0f} s (Ctrl-C stops)", style="bold")
    return Group(title, out)


def full(
    fleet: dict[str, Any], gateway: dict[str, Any], edge: dict[str, Any] | None, names: DemoNames
) -> RenderableType:
    parts: list[RenderableType] = [fleet_table(fleet, "fleet"), gateway_table(gateway, names)]
    if edge is not None:
        parts.append(status_table(edge))
    return Group(*parts, hints(names))


def demo_view(
    console: Console, fleet: dict[str, Any], gateway: dict[str, Any], edge: dict[str, Any] | None, names: DemoNames
) -> RenderableType:
    """Everything when it fits the terminal, else the compact view."""
    everything = full(fleet, gateway, edge, names)
    options = console.options.update(height=None)
    if len(console.render_lines(everything, options, pad=False)) <= console.size.height:
        return everything
    return compact(fleet, gateway, edge, names)
