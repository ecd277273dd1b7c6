"""IoT Jobs benchmark: a fleet of job agents (devices/) runs one OTA job with a rollout of N per minute.

usage: python bench/jobs.py [--quick] [--devices N] [--per-minute R] [--json out.json] [--keep]

The gateway and the simulator (bench/fleet.py's `simulate` child, devices.fleet.run_in_process on one loop) run as
separate processes on 127.0.0.1 ephemeral ports. Every device is a job agent: on `notify-next` it starts the next
execution, downloads the firmware from the presigned URL the job document's placeholder became (edgesim's S3),
reports progress, and ends SUCCEEDED (90%) or FAILED after 2-8 s. The things are provisioned through the gateway's
API with one shared certificate and put in one thing group; the job (created with boto3, SNAPSHOT, the group as its
target, `jobExecutionsRolloutConfig.maximumPerMinute` = R) is followed with DescribeJob every 2 s.

Reported: completion time against the rollout's own bound (the last of N executions may start after ceil(N/R) - 1
minutes; plus the longest execution), the executions' state counts over time, the rollout rate achieved, gateway CPU
(seconds and % of one core) and RSS, and the simulator's own view (executions started, succeeded, failed,
downloads). 10,000 devices at 1,000/min by default; --quick: 300 at 600/min.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import HOST, Edgesim, prepare, rss_kb
from common import stop_and_clean, write_json
from fleet import Simulator, provision
from mqttload import cpu_seconds
from rich.console import Console
from rich.table import Table

from devices.provision import iot_client
from devices.spec import expand, parse_fleet

console = Console()
ROLE = "arn:aws:iam::123456789012:role/bench-jobs"
BUCKET = "bench-firmware"
FIRMWARE_BYTES = 64 * 1024
SUCCESS_RATE = 0.9
DURATION = (2.0, 8.0)
POLL_S = 2.0


@dataclass(frozen=True)
class Settings:
    devices: int
    per_minute: int
    connect_rate: float
    timeout_s: float


FULL = Settings(10_000, 1_000, 300.0, 1800.0)  # 1,000/min: AWS's ceiling for maximumPerMinute
QUICK = Settings(300, 600, 300.0, 300.0)

FLEET = """\
fleet: {fleet}
seed: 21
device_types:
  - name: cam
    count: {devices}
    thing_name: "{{fleet}}-cam-{{i:05d}}"
    interval: 1h
    payload: {{seq: "{{seq}}"}}
    jobs:
      success_rate: {success}
      duration: [{low}, {high}]
      progress_steps: 1
"""


def endpoint_of(gw: Edgesim) -> str:
    return f"http://{HOST}:{gw.api_port}"


def group_things(endpoint: str, group: str, things: list[str]) -> tuple[str, float]:
    iot = iot_client(endpoint)
    arn = str(iot.create_thing_group(thingGroupName=group)["thingGroupArn"])
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: iot.add_thing_to_thing_group(thingGroupName=group, thingName=t), things))
    return arn, time.perf_counter() - start


def upload_firmware(endpoint: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="fw-2.0.0.bin", Body=bytes(FIRMWARE_BYTES))


def follow(gw: Edgesim, endpoint: str, job_id: str, total: int, timeout_s: float) -> dict[str, Any]:
    """DescribeJob every POLL_S until no execution is pending: the state counts over time and the gateway's load."""
    iot = iot_client(endpoint)
    start = time.monotonic()
    cpu0 = cpu_seconds(gw.pid)
    samples: list[dict[str, Any]] = []
    peak_rss = 0
    status = "?"
    with console.status("job running") as spinner:
        while time.monotonic() - start < timeout_s:
            gw.check_alive()
            job = iot.describe_job(jobId=job_id)["job"]
            details = job.get("jobProcessDetails", {})
            counts = {
                "queued": details.get("numberOfQueuedThings", 0),
                "in_progress": details.get("numberOfInProgressThings", 0),
                "succeeded": details.get("numberOfSucceededThings", 0),
                "failed": details.get("numberOfFailedThings", 0),
                "timed_out": details.get("numberOfTimedOutThings", 0),
                "canceled": details.get("numberOfCanceledThings", 0),
            }
            rss = rss_kb(gw.pid)
            peak_rss = max(peak_rss, rss)
            t = time.monotonic() - start
            samples.append({"t": round(t, 1), **counts, "gateway_cpu_s": round(cpu_seconds(gw.pid) - cpu0, 2),
                            "gateway_rss_mb": round(rss / 1024, 1)})  # fmt: skip
            status = job["status"]
            done = counts["succeeded"] + counts["failed"] + counts["timed_out"] + counts["canceled"]
            spinner.update(f"job {status}: {done:,} / {total:,} done, {counts['in_progress']:,} in progress, "
                           f"{counts['queued']:,} queued ({t:.0f} s)")  # fmt: skip
            if status != "IN_PROGRESS" or done >= total:
                break
            time.sleep(POLL_S)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(gw.pid) - cpu0
    return {
        "status": status,
        "completion_s": round(elapsed, 1),
        "samples": samples,
        "final": samples[-1] if samples else {},
        "gateway_cpu_s": round(cpu, 1),
        "gateway_cpu_pct": round(100 * cpu / max(elapsed, 1e-9), 1),
        "gateway_rss_peak_mb": round(peak_rss / 1024, 1),
    }


def rollout_rate(endpoint: str, job_id: str) -> dict[str, Any]:
    """Executions queued per minute, from ListJobExecutionsForJob's queuedAt."""
    iot = iot_client(endpoint)
    queued: list[float] = []
    kwargs: dict[str, Any] = {"jobId": job_id, "maxResults": 250}
    while True:
        page = iot.list_job_executions_for_job(**kwargs)
        queued += [s["jobExecutionSummary"]["queuedAt"].timestamp() for s in page["executionSummaries"]]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    queued.sort()
    if not queued:
        return {"executions": 0}
    first = queued[0]
    per_minute: dict[int, int] = {}
    for t in queued:
        per_minute[int((t - first) // 60)] = per_minute.get(int((t - first) // 60), 0) + 1
    return {
        "executions": len(queued),
        "rollout_span_s": round(queued[-1] - first, 1),
        "per_minute": [per_minute.get(m, 0) for m in range(max(per_minute) + 1)],
    }


def run(s: Settings, home: Path, keep: bool) -> dict[str, Any]:
    mat = prepare(home)
    gw = Edgesim(mat)
    sim = Simulator(home, "jobs")
    results: dict[str, Any] = {}
    try:
        gw.start()
        endpoint = endpoint_of(gw)
        rss_start = rss_kb(gw.pid)
        text = FLEET.format(fleet="bj", devices=s.devices, success=SUCCESS_RATE, low=DURATION[0], high=DURATION[1])
        spec = parse_fleet(text, "jobs.yaml")
        devices = expand(spec)
        files, provision_s = provision(endpoint, spec, devices, home / "fleet-certs")
        group_arn, group_s = group_things(endpoint, "bench-jobs", [d.thing_name for d in devices])
        console.log(f"{len(devices):,} things in group bench-jobs in {group_s:.1f} s")
        upload_firmware(endpoint)
        sim.start(text, f"mqtts://{HOST}:{gw.port}", mat.ca, files, s.connect_rate)
        sim.wait_for("built_s", 120)
        status, why = sim.wait_connected(timeout_s=600, stall_s=60)
        if why is not None:
            raise RuntimeError(f"simulator: {why}: {status}")
        console.log(f"{len(devices):,} job agents connected in {status['connected_s']:.1f} s")
        rss_connected = rss_kb(gw.pid)
        iot = iot_client(endpoint)
        document = {
            "operation": "ota",
            "version": "2.0.0",
            "url": f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{BUCKET}/fw-2.0.0.bin}}",
        }
        iot.create_job(
            jobId="bench-ota",
            targets=[group_arn],
            document=json.dumps(document),
            targetSelection="SNAPSHOT",
            presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 3600},
            jobExecutionsRolloutConfig={"maximumPerMinute": s.per_minute},
        )
        followed = follow(gw, endpoint, "bench-ota", len(devices), s.timeout_s)
        # maximumPerMinute lets R executions start in each minute: the last starts after ceil(N/R) - 1 minutes.
        bound_s = 60.0 * (math.ceil(len(devices) / s.per_minute) - 1)
        results = {
            "devices": len(devices),
            "per_minute": s.per_minute,
            "provision_s": round(provision_s, 1),
            "group_s": round(group_s, 1),
            "connect_s": status["connected_s"],
            "rollout_bound_s": round(bound_s, 1),
            "expected_s": round(bound_s + DURATION[1], 1),
            **followed,
            "rollout": rollout_rate(endpoint, "bench-ota"),
            "gateway_rss_start_mb": round(rss_start / 1024, 1),
            "gateway_rss_connected_mb": round(rss_connected / 1024, 1),
        }
        results["simulator"] = sim.stop()
        return results
    finally:
        sim.kill()
        stop_and_clean(gw, home, keep, console)


def report(r: dict[str, Any]) -> Table:
    table = Table(title=f"jobs: {r['devices']:,} devices, rollout {r['per_minute']:,}/min", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    final = r["final"]
    sim = r["simulator"].get("jobs", {})
    rows = [
        ("job status", r["status"]),
        ("completion time / rollout bound + longest execution", f"{r['completion_s']:.1f} s / {r['expected_s']:.1f} s"),
        ("executions succeeded / failed / timed out / canceled",
         f"{final.get('succeeded', 0):,} / {final.get('failed', 0):,} / {final.get('timed_out', 0):,} / "
         f"{final.get('canceled', 0):,}"),
        ("rollout per minute (configured / achieved)",
         f"{r['per_minute']:,} / {', '.join(str(n) for n in r['rollout'].get('per_minute', []))}"),
        ("devices: started / succeeded / failed / downloads",
         f"{sim.get('started', 0):,} / {sim.get('succeeded', 0):,} / {sim.get('failed', 0):,} / "
         f"{sim.get('downloads', 0):,}"),
        ("gateway CPU during the job", f"{r['gateway_cpu_s']:.1f} s ({r['gateway_cpu_pct']:.0f}% of a core)"),
        ("gateway RSS start / connected / peak",
         f"{r['gateway_rss_start_mb']:.0f} / {r['gateway_rss_connected_mb']:.0f} / {r['gateway_rss_peak_mb']:.0f} MB"),
        ("provision / group / connect", f"{r['provision_s']:.0f} s / {r['group_s']:.0f} s / {r['connect_s']:.0f} s"),
        ("simulator errors", json.dumps(r["simulator"].get("errors", {}))),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def timeline_table(samples: list[dict[str, Any]], every_s: float = 15.0) -> Table:
    table = Table(title="executions by state over time (DescribeJob)")
    for column in ("t (s)", "queued", "in progress", "succeeded", "failed", "gateway CPU s", "RSS MB"):
        table.add_column(column, justify="right")
    last = -every_s
    for i, p in enumerate(samples):
        if p["t"] - last >= every_s or i == len(samples) - 1:
            last = p["t"]
            table.add_row(str(p["t"]), f"{p['queued']:,}", f"{p['in_progress']:,}", f"{p['succeeded']:,}",
                          f"{p['failed']:,}", str(p["gateway_cpu_s"]), str(p["gateway_rss_mb"]))  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 devices at 600/min (a smoke run)")
    parser.add_argument("--devices", type=int, help="fleet size (default 10,000; 300 with --quick)")
    parser.add_argument(
        "--per-minute", type=int, help="rollout maximumPerMinute, 1-1,000 (default 1,000; 600 with --quick)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the gateway's data directory")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    s = Settings(args.devices or base.devices, args.per_minute or base.per_minute, base.connect_rate, base.timeout_s)
    if s.devices < 1 or not 1 <= s.per_minute <= 1000:
        parser.error("--devices must be >= 1 and --per-minute between 1 and 1,000 (AWS's range)")
    home = Path(tempfile.mkdtemp(prefix="edgesim-bench-jobs-"))
    try:
        results = run(s, home, args.keep)
    except KeyboardInterrupt:
        console.log("interrupted")
        return 130
    except RuntimeError as exc:
        console.log(f"[red]bench failed:[/red] {exc}")
        return 1
    console.print(timeline_table(results["samples"]))
    console.print(report(results))
    write_json(args.json, args.quick, s, results, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
