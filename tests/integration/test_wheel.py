"""The wheel runs anywhere: built from the sources, installed into a fresh venv outside the repository, and
`edgesim demo` works from an empty folder (examples ship inside the package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {"tests", "bench", "certs", "build", "dist", "node_modules"}  # and dot folders (.git, .venv, caches)


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("EDGESIM_")}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installed_in_a_fresh_venv_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build's egg-info and build/ stay out of the checkout
    src.mkdir()
    for path in ROOT.iterdir():
        if path.name in SKIPPED or path.name.startswith("."):
            continue
        if path.is_dir():
            shutil.copytree(path, src / path.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / path.name)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_clean_env(),
    )
    assert build.returncode == 0, build.stderr
    assert "deprecated" not in build.stderr.lower(), build.stderr
    (wheel,) = dist.glob("edgesim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gateway/examples/rules/all_to_kinesis.json" in names and "gateway/api/ui/index.html" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(name in line for line in requires for name in ("amqtt", "jmespath", "paho-mqtt")), requires
    assert all("<" in line for line in requires), requires  # every runtime dependency has an upper bound

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    edgesim = str(venv / "bin" / "edgesim")
    version = subprocess.run([edgesim, "--version"], cwd=empty, capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.startswith("edgesim ")
    ports = ["--api-port", "0", "--mqtts-port", "0", "--wss-port", "0", "--https-port", "0"]
    demo = subprocess.run(
        [edgesim, "demo", "--duration", "10", "--json", *ports],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_clean_env(),
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    result = json.loads(demo.stdout)
    assert result["fleet"]["acked"] > 0
    assert set(result["gateway"]["rules"]) == {"all_to_kinesis", "hot_to_sqs", "low_battery"}
    assert result["gateway"]["stream_records"] > 0
    assert (empty / ".edgesim" / "edgesim.db").exists() and (empty / "certs" / "root-ca.pem").exists()

    copied = subprocess.run([edgesim, "examples"], cwd=empty, capture_output=True, text=True, timeout=60, check=False)
    assert copied.returncode == 0, copied.stderr
    assert (empty / "examples" / "fleets" / "demo.yaml").is_file()
