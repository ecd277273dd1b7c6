"""`fleet run` against a target where nothing listens says why devices could not connect, and exits non-zero."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_run_names_the_connect_failure_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "fleet", "run", str(ROOT / "examples/fleets/smoke.yaml"),
         "--target", f"mqtt://127.0.0.1:{port}", "--no-provision", "--duration", "1.5", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["connect_errors"].get("connection refused", 0) >= summary["devices"]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: devices could not connect (connection refused"), done.stderr
    assert "Traceback" not in done.stderr
