"""Dashboard benchmark: does an open dashboard slow the gateway down, and how far behind real time is its live tail?

usage: python bench/dashboard.py [--quick] [--rounds N] [--json out.json] [--keep]

1,000 simulated devices (200 with --quick) publish QoS 1 once a second over mTLS into the gateway, with (c)'s rules
from bench/fleet.py on (every message into Kinesis, the PUBACK after the commit; hot readings republished). Windows of
30 s (10 s with --quick) alternate without a browser and with headless Chromium (Debian's, driven by Playwright)
showing the fleet page in one tab and the live tail of `dt/#` in another; each window measures the simulator's
PUBACKed msg/s, PUBACK latency and the gateway's CPU. In the "with" windows the tail page timestamps every row it
adds (a MutationObserver) against the device's `ts`: publish-to-screen lag.
Goals (issue 9): throughput with the dashboard open >= 0.95x without; tail lag within 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import HOST, Edgesim, _on_sigterm, _raise_nofile, prepare
from common import stop_and_clean, write_json
from fleet import Simulator, fleet_text, install_rules, provision
from mqttload import cpu_seconds
from rich.console import Console
from rich.table import Table
from shadow import _wait_idle

from devices.spec import expand, parse_fleet

console = Console()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Installed in the tail page: the lag of every row it adds, from the payload's `ts` to the moment it is on screen.
LAG_PROBE = """() => {
  window.__lags = [];
  const list = document.querySelector('#tail-list');
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) for (const node of r.addedNodes) {
      const pre = node.querySelector && node.querySelector('pre.payload');
      if (!pre) continue;
      try { const ts = JSON.parse(pre.textContent).ts; if (ts) window.__lags.push(now - Number(ts)); } catch (e) {}
    }
  }).observe(list, {childList: true});
}"""


@dataclass(frozen=True)
class Settings:
    devices: int
    window_s: float
    rounds: int
    connect_rate: float
    shards: int


FULL = Settings(1_000, 30.0, 2, 200.0, 4)
QUICK = Settings(200, 10.0, 1, 200.0, 2)


@contextlib.contextmanager
def dashboard_open(api_port: int) -> Iterator[Any]:
    """Chromium with the fleet page and the live tail of dt/# open; yields the tail page."""
    from playwright.sync_api import sync_playwright

    base = f"http://{HOST}:{api_port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            fleet = context.new_page()
            fleet.goto(base + "#/fleet")
            fleet.wait_for_selector("#fleet-table tbody tr", timeout=30_000)
            tail = context.new_page()
            tail.goto(base + "#/tail")
            tail.evaluate(LAG_PROBE)
            tail.fill("#tail-filter", "dt/#")
            tail.press("#tail-filter", "Enter")
            tail.wait_for_selector("#tail-list li", timeout=10_000)
            yield tail
        finally:
            browser.close()


def window(gw: Edgesim, sim: Simulator, seconds: float) -> dict[str, Any]:
    s0, g0, t0 = sim.status(), cpu_seconds(gw.pid), time.perf_counter()
    time.sleep(seconds)
    s1, g1, t1 = sim.status(), cpu_seconds(gw.pid), time.perf_counter()
    sim.check_alive()
    return {
        "acked_per_s": (s1["acked"] - s0["acked"]) / (s1["elapsed_s"] - s0["elapsed_s"]),
        "gw_cpu_pct": 100.0 * (g1 - g0) / (t1 - t0),
        "puback_p99_ms": s1["puback_ms"]["p99"],
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(s: Settings, home: Path) -> dict[str, Any]:
    mat = prepare(home)
    gw = Edgesim(mat)
    sim = Simulator(home, "dash")
    try:
        gw.start()
        endpoint = f"http://{HOST}:{gw.api_port}"
        install_rules(endpoint, s.shards)
        text = fleet_text("dash", s.devices, 1.0, 0.1)
        spec = parse_fleet(text, "dash.yaml")
        files, _ = provision(endpoint, spec, expand(spec), home / "fleet-certs")
        _wait_idle(gw.pid)
        sim.start(text, f"mqtts://{HOST}:{gw.port}", mat.ca, files, s.connect_rate)
        sim.wait_for("connected_s", s.devices / s.connect_rate * 3 + 60)
        time.sleep(5)  # past the connect ramp: steady 1 msg/s per device
        rounds: list[dict[str, Any]] = []
        lags: list[float] = []
        for r in range(s.rounds):
            with console.status(f"round {r + 1}/{s.rounds}: {s.window_s:g} s without a browser"):
                without = window(gw, sim, s.window_s)
            status = f"round {r + 1}/{s.rounds}: {s.window_s:g} s with the dashboard open"
            with console.status(status), dashboard_open(gw.api_port) as tail:
                time.sleep(5)  # Chromium's start-up burst over, pages loaded and streaming
                tail.evaluate("() => { window.__lags = []; }")
                with_browser = window(gw, sim, s.window_s)
                round_lags = tail.evaluate("() => window.__lags")
            lags.extend(round_lags)
            rounds.append({"without": without, "with": with_browser, "lag_samples": len(round_lags)})
            console.log(
                f"round {r + 1}: without {without['acked_per_s']:,.0f} msg/s "
                f"(gateway CPU {without['gw_cpu_pct']:.0f} %),"
                f" with {with_browser['acked_per_s']:,.0f} msg/s (CPU {with_browser['gw_cpu_pct']:.0f} %);"
                f" tail lag p50 {percentile(round_lags, 0.5)} ms over {len(round_lags)} rows"
            )
        final = sim.stop()
    finally:
        sim.kill()
        stop_and_clean(gw, home, True, console)

    def mean(mode: str, key: str) -> float:
        return statistics.fmean(r[mode][key] for r in rounds)

    return {
        "devices": s.devices,
        "without_msg_s": mean("without", "acked_per_s"),
        "with_msg_s": mean("with", "acked_per_s"),
        "without_cpu_pct": mean("without", "gw_cpu_pct"),
        "with_cpu_pct": mean("with", "gw_cpu_pct"),
        "without_p99_ms": mean("without", "puback_p99_ms"),
        "with_p99_ms": mean("with", "puback_p99_ms"),
        "lag_p50_ms": percentile(lags, 0.5),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": max(lags) if lags else None,
        "lag_samples": len(lags),
        "sent": final["sent"],
        "acked": final["acked"],
        "rounds": rounds,
    }


def report(r: dict[str, Any]) -> Table:
    ratio = r["with_msg_s"] / r["without_msg_s"] if r["without_msg_s"] else 0.0
    table = Table(title=f"dashboard open vs closed: {r['devices']:,} devices x 1 msg/s, rules on")
    for column in ("figure", "without browser", "with dashboard open", "ratio / goal"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    ok = "[green]met[/green]" if ratio >= 0.95 else "[red]missed[/red]"
    table.add_row(
        "PUBACKed msg/s", f"{r['without_msg_s']:,.0f}", f"{r['with_msg_s']:,.0f}", f"{ratio:.3f}x (>= 0.95: {ok})"
    )
    table.add_row("gateway CPU", f"{r['without_cpu_pct']:.0f} %", f"{r['with_cpu_pct']:.0f} %", "")
    table.add_row(
        "PUBACK p99, whole run so far",
        f"{r['without_p99_ms']:.1f} ms",
        f"{r['with_p99_ms']:.1f} ms",
        "cumulative: includes Chromium's start-up burst",
    )
    lag_ok = r["lag_p99_ms"] is not None and r["lag_p99_ms"] <= 1000
    table.add_row(
        "live tail lag p50 / p99 / max",
        "",
        f"{r['lag_p50_ms']} / {r['lag_p99_ms']} / {r['lag_max_ms']} ms ({r['lag_samples']:,} rows)",
        f"p99 <= 1 s: {'[green]met[/green]' if lag_ok else '[red]missed[/red]'}",
    )
    table.add_row("sent / acked (whole run)", "", f"{r['sent']:,} / {r['acked']:,}", "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 devices, one round of 10 s windows")
    parser.add_argument("--rounds", type=int, help="without/with rounds (default 2; 1 with --quick)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (certs, logs)")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    if args.rounds:
        s = Settings(s.devices, s.window_s, args.rounds, s.connect_rate, s.shards)
    if not Path(CHROMIUM).exists():
        console.log("[red]Chromium is missing[/red]: `make apt-deps` installs Debian's chromium package")
        return 1
    _raise_nofile()
    signal.signal(signal.SIGTERM, _on_sigterm)
    home = Path(tempfile.mkdtemp(prefix="edgesim-dashboard-bench-"))
    try:
        result = run(s, home)
    except KeyboardInterrupt:
        console.log("[yellow]interrupted[/yellow]")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    console.print(report(result))
    write_json(args.json, args.quick, s, {"dashboard": result}, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
