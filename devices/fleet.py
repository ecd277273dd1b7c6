"""Runs a fleet: its devices on one event loop per process (`--processes N` spreads them, `--shard k/n` takes a slice),
with a connect ramp, live figures and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

from devices.claim import ClaimOptions, DeviceClaim
from devices.custom_auth import AuthOptions
from devices.device import ConnectRamp, SimDevice, Target
from devices.figures import Figures
from devices.job_agent import Downloader
from devices.provision import DeviceFiles
from devices.spec import DeviceSpec, expand, load_fleet

log = logging.getLogger("edgesim.fleet")

REPORT_EVERY_S = 0.5


@dataclass(frozen=True)
class FleetOptions:
    target: Target
    ca: Path | None = None
    connect_rate: float = 200.0
    duration: float | None = None
    processes: int = 1
    shard: tuple[int, int] | None = None
    files: dict[str, DeviceFiles] = field(default_factory=dict)  # thing name -> certificate and key
    claim: ClaimOptions | None = None  # provisioning by claim: `files` is where each device stores its own identity
    fresh: frozenset[str] = frozenset()  # JITP/JITR: devices whose first successful connect is their provisioning
    auth: AuthOptions | None = None  # custom authorizer: no client certificates, TLS with ALPN "mqtt"


class ContextCache:
    """One SSLContext per distinct client certificate (a shared fleet certificate means one for all devices)."""

    def __init__(self, ca: Path | None, alpn: list[str] | None = None) -> None:
        self.ca = ca
        self.alpn = alpn
        self._contexts: dict[Path, ssl.SSLContext] = {}
        self._plain: ssl.SSLContext | None = None

    def get(self, files: DeviceFiles | None) -> ssl.SSLContext:
        if files is None:
            if self._plain is None:
                self._plain = self._new()
            return self._plain
        context = self._contexts.get(files.cert)
        if context is None:
            context = self._contexts[files.cert] = self._new()
            context.load_cert_chain(files.cert, files.key)
        return context

    def _new(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.alpn:
            context.set_alpn_protocols(self.alpn)
        if self.ca is not None:
            context.load_verify_locations(self.ca)
        else:
            context.load_default_certs()
        return context


async def _guarded(device: SimDevice, figures: Figures) -> None:
    try:
        await device.run()
    except asyncio.CancelledError:
        raise
    except Exception:  # one broken device must not stop the fleet
        figures.error("device_crashed")
        log.exception("device %s crashed", device.spec.thing_name)


async def run_devices(
    devices: list[DeviceSpec],
    options: FleetOptions,
    figures: Figures,
    stop: asyncio.Event,
) -> None:
    """Run `devices` on this loop until `stop` is set, then drain and disconnect them all."""
    loop = asyncio.get_running_loop()
    epoch = loop.time()
    ramp = ConnectRamp(options.connect_rate)
    custom_auth = options.auth is not None and not options.auth.websocket
    contexts = ContextCache(options.ca, ["mqtt"] if custom_auth else None)
    figures.devices += len(devices)
    # Job files come from edgesim's S3 API: trust the fleet's CA for an https URL.
    downloader = Downloader(contexts.get(None) if options.ca is not None else None)
    sims = []
    claim = options.claim if options.target.tls else None
    claim_context = contexts.get(DeviceFiles(claim.claim_cert, claim.claim_key)) if claim is not None else None
    for spec in devices:
        if claim is not None and claim_context is not None:
            own = DeviceClaim(claim, claim_context, options.files[spec.thing_name], contexts.get)
            sims.append(
                SimDevice(spec, options.target, claim_context, figures, ramp, epoch, own, downloader=downloader)
            )
            continue
        context = contexts.get(options.files.get(spec.thing_name)) if options.target.tls else None
        credentials = options.auth.credentials(spec) if options.auth is not None else None
        ws_path = None
        if options.auth is not None and options.auth.websocket:
            ws_path = options.auth.websocket_path(options.target.host, options.target.port)
        sims.append(SimDevice(spec, options.target, context, figures, ramp, epoch, jit=spec.thing_name in options.fresh,
                              credentials=credentials, websocket_path=ws_path, downloader=downloader))  # fmt: skip
    tasks = [loop.create_task(_guarded(sim, figures), name=f"device-{sim.spec.thing_name}") for sim in sims]
    # The devices live as long as the run: keep the cyclic collector from re-walking them (tens of thousands of
    # objects per thousand devices) on every full collection.
    gc.freeze()
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(sim.close() for sim in sims), return_exceptions=True)
        await downloader.close()


def install_stop(stop: asyncio.Event, duration: float | None) -> None:
    """Set `stop` on Ctrl-C, SIGTERM, or after `duration` seconds."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: object) -> None:
        # A plain handler, not loop.add_signal_handler: an overloaded loop's self-pipe can be full, and asyncio then
        # drops the signal's wakeup byte (and the signal with it); call_soon_threadsafe still queues the callback.
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, on_signal)
    if duration is not None:
        loop.call_later(duration, stop.set)


# ---- several processes


def _worker(
    fleet_path: str,
    index: int,
    options: FleetOptions,
    reports: multiprocessing.Queue[tuple[int, dict[str, Any], bool]],
    stop_flag: ProcessEvent,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    spec = load_fleet(Path(fleet_path))
    mine = expand(spec, options.shard)[index :: options.processes]
    figures = Figures()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def report(final: bool = False) -> None:
            reports.put((index, figures.to_state(), final))

        async def watch() -> None:
            while not stop_flag.is_set():
                report()
                await asyncio.sleep(REPORT_EVERY_S)
            stop.set()

        watcher = loop.create_task(watch(), name="fleet-report")
        await run_devices(mine, options, figures, stop)
        await watcher
        report(final=True)

    asyncio.run(main())


def run_processes(
    fleet_path: Path,
    options: FleetOptions,
    on_figures: Callable[[Figures, float], None],
) -> Figures:
    """Spread the fleet over `options.processes` worker processes; `on_figures` sees the merged figures as they come.
    Returns the final merged figures after the duration, Ctrl-C or SIGTERM."""
    ctx = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[tuple[int, dict[str, Any], bool]] = ctx.Queue()
    stop_flag = ctx.Event()
    workers = [
        ctx.Process(
            target=_worker, args=(str(fleet_path), i, options, reports, stop_flag), name=f"fleet-{i}", daemon=True
        )
        for i in range(options.processes)
    ]
    for worker in workers:
        worker.start()
    latest: dict[int, dict[str, Any]] = {}
    final: set[int] = set()
    started = time.monotonic()
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        stop_flag.set()

    previous = signal.signal(signal.SIGINT, request_stop)
    previous_term = signal.signal(signal.SIGTERM, request_stop)
    try:
        while len(final) < len(workers):
            if options.duration is not None and time.monotonic() - started >= options.duration and not stopping:
                request_stop()
            try:
                index, state, done = reports.get(timeout=REPORT_EVERY_S)
            except Exception:  # queue.Empty: check the clock and the workers
                if all(not w.is_alive() for w in workers):
                    break
                continue
            latest[index] = state
            if done:
                final.add(index)
            on_figures(_merge(latest), time.monotonic() - started)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        stop_flag.set()
        for worker in workers:
            worker.join(15)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return _merge(latest)


def _merge(states: dict[int, dict[str, Any]]) -> Figures:
    total = Figures()
    for state in states.values():
        total.merge(Figures.from_state(state))
    return total


async def run_in_process(
    devices: list[DeviceSpec],
    options: FleetOptions,
    on_figures: Callable[[Figures, float], None],
) -> Figures:
    """All devices on this loop; `on_figures` is called a few times a second for the live view."""
    figures = Figures()
    stop = asyncio.Event()
    install_stop(stop, options.duration)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def tick() -> None:
        while True:
            on_figures(figures, loop.time() - started)
            await asyncio.sleep(0.25)

    ticker = loop.create_task(tick(), name="fleet-view")
    try:
        await run_devices(devices, options, figures, stop)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    on_figures(figures, loop.time() - started)
    return figures
