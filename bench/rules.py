"""Rules engine benchmark: compiled SQL evaluation next to json.loads, and the topic index at 10 vs 10,000 rules.

Run: `.venv/bin/python bench/rules.py [--json out.json]` (or `make bench`). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.rules import EvalContext, compile_rule
from gateway.rules.index import RuleIndex

PAYLOAD = json.dumps(
    {
        "deviceId": "sensor-0042",
        "ts": 1732780800123,
        "temperature": 31.7,
        "humidity": 48.2,
        "battery": 71,
        "status": "ok",
        "location": {"lat": 52.5201, "lon": 13.4049, "site": "berlin-3"},
        "readings": [{"n": "temp", "v": 31.7}, {"n": "hum", "v": 48.2}, {"n": "co2", "v": 612}, {"n": "pm25", "v": 8}],
        "fw": {"version": "2.4.1", "channel": "stable"},
    }
).encode()

RULES = {
    "SELECT *": "SELECT * FROM 'fleet/+/telemetry'",
    "projection + functions": "SELECT deviceId, location.site AS site, round(temperature) AS t, upper(status) AS s, "
    "topic(2) AS dev, fw.version AS fw FROM 'fleet/+/telemetry'",
    "WHERE AND/OR": "SELECT deviceId FROM 'fleet/+/telemetry' WHERE (temperature > 30 AND humidity < 60) "
    "OR battery < 20 OR status <> 'ok'",
    "CASE": "SELECT CASE status WHEN 'ok' THEN 'green' WHEN 'warn' THEN 'amber' ELSE 'red' END AS light, "
    "CASE WHEN temperature > 30 THEN 'hot' ELSE 'fine' END AS feel FROM 'fleet/+/telemetry'",
    "nested SELECT over array": "SELECT (SELECT VALUE n FROM readings WHERE v > 10) AS names FROM 'fleet/+/telemetry'",
}


def per_call_us(fn: Any, number: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=5)
    return min(runs) / number * 1e6


def _evaluate_fresh(compiled: Any) -> Any:
    ctx = EvalContext(
        payload=PAYLOAD,
        topic="fleet/sensor-0042/telemetry",
        client_id="sensor-0042",
        timestamp_ms=1732780800123,
        trace_id="t",
    )
    return compiled.evaluate(ctx)


def evaluation_figures(number: int) -> list[dict[str, Any]]:
    parse_us = per_call_us(lambda: json.loads(PAYLOAD), number)
    rows = []
    for name, sql in RULES.items():
        compiled = compile_rule(sql, "2016-03-23")
        ctx = EvalContext(
            payload=PAYLOAD,
            topic="fleet/sensor-0042/telemetry",
            client_id="sensor-0042",
            timestamp_ms=1732780800123,
            trace_id="t",
        )
        assert compiled.evaluate(ctx).matched, name
        _ = ctx.document_v2  # parse once, as the engine does for every rule that a message reaches

        eval_us = per_call_us(functools.partial(compiled.evaluate, ctx), number)
        with_parse_us = per_call_us(functools.partial(_evaluate_fresh, compiled), number // 2)
        rows.append(
            {
                "rule": name,
                "evaluate_us": eval_us,
                "evaluate_with_parse_us": with_parse_us,
                "json_loads_us": parse_us,
                "ratio": eval_us / parse_us,
            }
        )
    return rows


def index_figures(number: int) -> list[dict[str, Any]]:
    rows = []
    for count in (10, 10_000):
        index: RuleIndex[int] = RuleIndex()
        for i in range(count):
            index.put(f"r{i}", f"fleet/site{i}/+/telemetry", i)
        topic = "fleet/site7/sensor-1/telemetry"
        assert index.match(topic) == [7]
        miss = "other/site7/sensor-1/telemetry"
        rows.append(
            {
                "rules": count,
                "match_us": per_call_us(functools.partial(index.match, topic), number),
                "miss_us": per_call_us(functools.partial(index.match, miss), number),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    number = 2_000 if args.quick else 20_000
    console = Console()
    evaluation = evaluation_figures(number)
    table = Table(title=f"Compiled rule evaluation, {len(PAYLOAD)}-byte payload (goal: evaluate <= 1x json.loads)")
    for column in ("rule", "evaluate µs", "evaluate incl. parse µs", "json.loads µs", "evaluate / json.loads"):
        table.add_column(column, justify="right" if column != "rule" else "left")
    for row in evaluation:
        table.add_row(
            row["rule"],
            f"{row['evaluate_us']:.2f}",
            f"{row['evaluate_with_parse_us']:.2f}",
            f"{row['json_loads_us']:.2f}",
            f"{row['ratio']:.2f}x",
        )
    console.print(table)
    index = index_figures(number * 5)
    table = Table(title="Topic index (goal: 10,000 rules <= 2x the cost of 10)")
    for column in ("rules", "match µs", "no-match µs"):
        table.add_column(column, justify="right")
    for row in index:
        table.add_row(f"{row['rules']:,}", f"{row['match_us']:.2f}", f"{row['miss_us']:.2f}")
    console.print(table)
    ratio = index[1]["match_us"] / index[0]["match_us"]
    console.print(
        f"10,000 / 10 rules: {ratio:.2f}x; median evaluate/json.loads: "
        f"{statistics.median(r['ratio'] for r in evaluation):.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps({"evaluation": evaluation, "index": index, "index_ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
