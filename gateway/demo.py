"""`edgesim demo`: the gateway, the example rules and sinks, and a simulated fleet, with one live view of all three.

The fleet talks to the gateway over MQTT/TLS and the setup goes through its HTTP API with boto3, exactly as a user's
own devices and scripts would; only the figures are read from the gateway object directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from devices.device import Target
from devices.figures import Figures
from devices.fleet import FleetOptions, install_stop, run_devices
from devices.provision import Provisioner, iot_client
from devices.spec import FleetSpec, expand, load_fleet
from devices.view import summary
from gateway.app import Gateway
from gateway.cli_api import aws_client
from gateway.cli_examples import packaged_examples
from gateway.cli_functions import zip_module
from gateway.config import Config
from gateway.demo_view import DemoNames, demo_view
from gateway.edge.config import load_edge_config, with_overrides
from gateway.edge.core import EdgeCore

STREAM = "telemetry"
QUEUE = "hot-readings"
FUNCTION = "low-battery"
ROLE = "arn:aws:iam::123456789012:role/edgesim-demo"
# Installed with the package (a wheel has no repository; in a checkout gateway/examples links to ./examples).
EXAMPLES = packaged_examples()
FUNCTION_SOURCE = EXAMPLES / "functions" / "low_battery.py"
EDGE_NAME = "demo-edge"


@dataclass(frozen=True)
class DemoSinks:
    queue_url: str


def _setup_sinks(endpoint: str) -> DemoSinks:
    """The stream, queue and function the example rules write to (idempotent)."""
    kinesis = aws_client("kinesis", endpoint)
    if STREAM not in kinesis.list_streams()["StreamNames"]:
        kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    queue_url = aws_client("sqs", endpoint).create_queue(QueueName=QUEUE)["QueueUrl"]
    lam = aws_client("lambda", endpoint)
    if FUNCTION_SOURCE.is_file():
        code = zip_module(FUNCTION_SOURCE)
        try:
            lam.get_function(FunctionName=FUNCTION)
            lam.update_function_code(FunctionName=FUNCTION, ZipFile=code)
        except lam.exceptions.ResourceNotFoundException:
            lam.create_function(
                FunctionName=FUNCTION,
                Runtime="python3.11",
                Handler=f"{FUNCTION_SOURCE.stem}.handler",
                Role=ROLE,
                Code={"ZipFile": code},
                Timeout=10,
            )
        # A few warm workers serve the demo; each new one is a Python process starting up on the same cores as the
        # gateway and the fleet, so a wave of low batteries should queue, not fork dozens at once.
        lam.put_function_concurrency(FunctionName=FUNCTION, ReservedConcurrentExecutions=3)
    return DemoSinks(queue_url)


def _gateway_figures(gw: Gateway) -> dict[str, Any]:
    row = gw.store.one("SELECT count(*) AS n FROM kinesis_records WHERE stream=?", (STREAM,))
    queue = gw.sqs.queues.get(QUEUE)
    depth = queue.counts(now=gw.clock.wall_ms())["ApproximateNumberOfMessages"] if queue is not None else 0
    return {
        "rules": {
            name: {k: m[k] for k in ("matched", "action_success", "action_failure")}
            for name, m in sorted(gw.rules.metrics().items())
        },
        "stream_records": int(row["n"]) if row is not None else 0,
        "queue_messages": depth,
        "lambda": gw.lambdas.stats.get(FUNCTION, {"invocations": 0, "errors": 0}),
        "shadow_updates": gw.shadows.stats["updates"],
        "connections": len(gw.broker.sessions),
        "policy_denials": gw.broker.stats["denied"],
    }


@contextlib.asynccontextmanager
async def _edge_core(
    gw: Gateway, cfg: Config, figures: Figures, stop: asyncio.Event
) -> AsyncIterator[tuple[EdgeCore, asyncio.Task[None]]]:
    """examples/edge/edge.yaml's core against this gateway, and its local devices (examples/fleets/edge-devices.yaml)
    on the core's own plain MQTT listener: the dashboard's edge page has something to show."""
    edge_config = with_overrides(
        load_edge_config(EXAMPLES / "edge" / "edge.yaml"),
        {
            "cloud": {
                "endpoint": f"http://127.0.0.1:{gw.ports['api']}",
                "target": f"mqtts://127.0.0.1:{gw.ports['mqtts']}",
                "ca": gw.local_ca.root_cert_path,
            },
            "local_broker": {"port": 0},
        },
    )
    async with EdgeCore(EDGE_NAME, edge_config, cfg.data_dir / "edge" / EDGE_NAME, cfg.certs_dir) as core:
        local = expand(load_fleet(EXAMPLES / "fleets" / "edge-devices.yaml"))
        options = FleetOptions(Target("127.0.0.1", core.ports["local_mqtt"], tls=False), None, connect_rate=50)
        task = asyncio.get_running_loop().create_task(run_devices(local, options, figures, stop), name="edge-devices")
        yield core, task


async def run_demo(
    cfg: Config, spec: FleetSpec, duration: float | None, quiet_stdout: bool = False, edge: bool = False
) -> dict[str, Any]:
    devices = expand(spec)
    async with Gateway(cfg) as gw, contextlib.AsyncExitStack() as stack:
        endpoint = f"http://127.0.0.1:{gw.ports['api']}"
        await asyncio.to_thread(_setup_sinks, endpoint)
        provisioner = Provisioner(iot_client(endpoint), spec, cfg.certs_dir / "fleet")
        files = await asyncio.to_thread(provisioner.provision, devices)
        target = Target("127.0.0.1", gw.ports["mqtts"], tls=True)
        options = FleetOptions(target, gw.local_ca.root_cert_path, connect_rate=100, files=files)
        figures = Figures()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        install_stop(stop, duration)
        fleet = loop.create_task(run_devices(devices, options, figures, stop), name="demo-fleet")
        started = time.monotonic()
        core: EdgeCore | None = None
        edge_figures = Figures()
        if edge:
            core, edge_devices = await stack.enter_async_context(_edge_core(gw, cfg, edge_figures, stop))
        thermostat = next((d.thing_name for d in devices if d.shadow is not None), devices[0].thing_name)
        names = DemoNames(
            api=f"http://127.0.0.1:{gw.ports['api']}",
            mqtts_port=gw.ports["mqtts"],
            fleet=spec.fleet,
            thermostat=thermostat,
            stream=STREAM,
            queue=QUEUE,
            function=FUNCTION,
        )
        ui = Console(stderr=True) if quiet_stdout else Console()  # --json keeps stdout for the summary

        def view() -> RenderableType:
            fleet_figures = summary(figures, time.monotonic() - started)
            status = core.status() if core is not None else None
            return demo_view(ui, fleet_figures, _gateway_figures(gw), status, names)

        with Live(view(), refresh_per_second=4, console=ui) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
                live.update(view())
            await fleet
            if core is not None:
                await edge_devices
            live.update(view())
        result = {"fleet": summary(figures, time.monotonic() - started), "gateway": _gateway_figures(gw)}
        if core is not None:
            result["edge"] = {"core": core.status(), "devices": summary(edge_figures, time.monotonic() - started)}
        return result
