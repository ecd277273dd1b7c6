"""The fleet's live view and final summary as rich renderables."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from devices.connect_errors import causes
from devices.figures import Figures


def summary(figures: Figures, elapsed: float) -> dict[str, Any]:
    data = figures.summary(time.monotonic(), elapsed)
    data["connect_errors"] = causes(figures.counters.as_dict())
    return data


def connect_trouble(data: dict[str, Any]) -> str | None:
    """One line when devices could not connect (fewer connects than devices, and failures with a cause), else None."""
    failures = data.get("connect_errors") or {}
    if not failures or data["connects"] >= data["devices"]:
        return None
    from devices.connect_errors import HINTS

    top = max(failures, key=lambda k: failures[k])
    listed = ", ".join(f"{cause} {n:,}" for cause, n in sorted(failures.items(), key=lambda kv: -kv[1]))
    hint = HINTS.get(top)
    return f"devices could not connect ({listed})" + (f": {hint}" if hint else "")


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
    if data.get("provisioned") or data.get("provisioning_failures"):
        out.add_row(
            "provisioned by claim / failed attempts",
            f"{data['provisioned']:,} / {data['provisioning_failures']:,}",
            style="red" if data["provisioning_failures"] else None,
        )
    jobs = data.get("jobs") or {}
    if jobs:
        states = " / ".join(f"{jobs.get(k, 0):,}" for k in ("in_progress", "succeeded", "failed", "abandoned"))
        out.add_row("job executions in progress / succeeded / failed / dropped", states)
        out.add_row("job downloads / reboots", f"{jobs.get('downloads', 0):,} / {jobs.get('reboots', 0):,}")
    faults = ", ".join(f"{k} {v:,}" for k, v in sorted(data["faults"].items())) or "none"
    out.add_row("faults injected", faults)
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(data["errors"].items())) or "none"
    out.add_row("errors", errors, style="red" if data["errors"] else None)
    if data.get("connect_errors"):
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(data["connect_errors"].items()))
        out.add_row("connect failures", why, style="red")
    out.add_row("elapsed", f"{data['elapsed_s']:.1f} s")
    return out
