"""Fixtures: a real gateway process on ephemeral loopback ports, and provisioning through its registry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Creds:
    thing: str
    cert: Path
    key: Path
    ca: Path
    certificate_id: str


@dataclass
class GatewayProcess:
    home: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log: object = None
    separate_stderr: bool = False  # stderr to its own file (stderr_path) instead of gateway.log
    env: dict[str, str] | None = None  # extra environment variables for the gateway process
    max_descriptors: int | None = None  # run the gateway under this RLIMIT_NOFILE (soft and hard)

    @property
    def stderr_path(self) -> Path:
        return self.home / "gateway.stderr.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def certs_dir(self) -> Path:
        return self.home / "certs"

    @property
    def ca_file(self) -> Path:
        return self.certs_dir / "root-ca.pem"

    def start(self) -> GatewayProcess:
        ports_file = self.home / "ports.json"
        ports_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "up",
            "--mqtts-port",
            "0",
            "--wss-port",
            "0",
            "--api-port",
            "0",
            "--https-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--certs-dir",
            str(self.certs_dir),
            "--ports-file",
            str(ports_file),
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        self.log = log = open(self.home / "gateway.log", "ab")  # noqa: SIM115 - closed in stop()
        err = open(self.stderr_path, "ab") if self.separate_stderr else None  # noqa: SIM115 - closed below
        limit = self.max_descriptors

        def lower_limit() -> None:
            import resource

            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=err or subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            preexec_fn=lower_limit if limit is not None else None,  # noqa: PLW1509 - no threads in the test process yet
        )
        if err is not None:
            err.close()  # the child has its own descriptor
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ports_file.exists() and ports_file.read_text():
                self.ports = json.loads(ports_file.read_text())
                return self
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("gateway exited:\n" + (self.home / "gateway.log").read_text())
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("gateway did not start in 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log is not None:
            self.log.close()  # type: ignore[attr-defined]
            self.log = None

    @contextlib.contextmanager
    def registry(self) -> Iterator[object]:
        """The registry in the same database, as the CLI opens it; the gateway sees changes within a second."""
        from gateway.clock import SystemClock
        from gateway.identity import ca as ca_mod
        from gateway.registry import Registry
        from gateway.store import Store

        store = Store(self.data_dir / "edgesim.db")
        registry = Registry(store, SystemClock(), "us-east-1", "123456789012")
        registry.local_ca = ca_mod.load_issued(self.ca_file.read_bytes(), (self.certs_dir / "root-ca.key").read_bytes())
        try:
            yield registry
        finally:
            store.close()

    def provision(
        self,
        thing: str,
        policy: dict[str, object] | None = None,
        *,
        attributes: dict[str, str] | None = None,
        active: bool = True,
        exclusive: bool = False,
    ) -> Creds:
        from gateway.identity.keystore import write_device_files

        with self.registry() as reg:
            if not reg.thing_exists(thing):  # type: ignore[attr-defined]
                reg.create_thing(thing, None, attributes or {})  # type: ignore[attr-defined]
            out = reg.create_keys_and_certificate(set_as_active=active)  # type: ignore[attr-defined]
            reg.attach_thing_principal(
                thing,
                out["certificateArn"],  # type: ignore[attr-defined]
                "EXCLUSIVE_THING" if exclusive else None,
            )
            if policy is not None:
                name = f"p-{uuid.uuid4().hex[:10]}"
                reg.create_policy(name, json.dumps(policy))  # type: ignore[attr-defined]
                reg.attach_policy(name, out["certificateArn"])  # type: ignore[attr-defined]
        cert = write_device_files(
            self.home / "devices",
            f"{thing}-{out['certificateId'][:8]}",
            out["certificatePem"],
            out["keyPair"]["PrivateKey"],
            None,
        )
        key = cert.with_name(cert.name.replace(".cert.pem", ".private.key"))
        return Creds(thing, cert, key, self.ca_file, out["certificateId"])


def allow_all_policy() -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw")).start()
    yield gw
    gw.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test (browser screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
