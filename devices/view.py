"""The fleet's live view and final summary as rich renderables."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from devices.figures import Figures


def summary(figures: Figures, elapsed: float) -> dict[str, Any]:
    return figures.summary(time.monotonic(), elapsed)


def table(data: dict[str, Any], title: str) -> Table:
    out = Table(title=title, show_header=False, min_width=60)
    out.add_column("figure")
    out.add_column("value", justify="right")
    out.add_row("devices", f"{data['devices']:,}")
    out.add_row(
        "connected / connecting / offline / failed",
        f"{data['connected']:,} / {data['connecting']:,} / {data['offline']:,} / {data['failed']:,}",
    )
    out.add_row("messages sent / acknowledged", f"{data['sent']:,} / {data['acked']:,}")
    out.add_row("sent/s, acknowledged/s", f"{data['sent_per_s']:,.1f} / {data['acked_per_s']:,.1f}")
    lat = data["puback_ms"]
    out.add_row("publish → PUBACK p50 / p99 / max", f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} ms")
    out.add_row("connects / connection losses", f"{data['connects']:,} / {data['disconnects']:,}")
    out.add_row("shadow reports / deltas applied", f"{data['shadow_reports']:,} / {data['deltas_applied']:,}")
    out.add_row("commands answered", f"{data['commands']:,}")
    faults = ", ".join(f"{k} {v:,}" for k, v in sorted(data["faults"].items())) or "none"
    out.add_row("faults injected", faults)
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(data["errors"].items())) or "none"
    out.add_row("errors", errors, style="red" if data["errors"] else None)
    out.add_row("elapsed", f"{data['elapsed_s']:.1f} s")
    return out
