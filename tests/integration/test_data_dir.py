"""One gateway per data dir, a private database, and no anonymous MQTT on the network without saying so."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, GatewayProcess


def _up(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "gateway", "up",
        "--data-dir", str(gw.data_dir), "--certs-dir", str(gw.certs_dir),
        "--mqtts-port", "0", "--api-port", "0", "--wss-port", "-1", "--https-port", "-1",
        *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd,
        check=False,
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
    )


def test_a_second_gateway_on_the_same_data_dir_is_refused_in_one_line(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    second = _up(gateway)
    assert second.returncode == 1
    assert second.stderr.strip() == f"error: data dir {gateway.data_dir} is in use by pid {gateway.proc.pid}"
    assert "edgesim is up" not in second.stdout


def test_the_database_and_its_wal_files_are_owner_only(gateway: GatewayProcess) -> None:
    db = gateway.data_dir / "edgesim.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_plain_mqtt_beyond_loopback_needs_an_explicit_flag(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path)
    refused = _up(gw, "--host", "0.0.0.0", "--insecure-port", "0")  # refused before anything binds
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "--expose-insecure-port" in refused.stderr
    assert not gw.data_dir.exists()
