"""Run the AWS CLI (the pip-installed v1) against a test gateway, configured only through AWS_* variables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import GatewayProcess


def aws_binary() -> str:
    beside = Path(sys.executable).parent / "aws"
    found = str(beside) if beside.exists() else shutil.which("aws")
    assert found, "the AWS CLI is part of the test extras (awscli)"
    return found


def aws(
    gw: GatewayProcess, *args: str, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{gw.ports['api']}",
            "AWS_CONFIG_FILE": str(gw.home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(gw.home / "aws-credentials"),
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
        }
    )
    done = subprocess.run(
        # The CLI v1 does not read AWS_ENDPOINT_URL (botocore does), so the endpoint is passed as users pass it.
        [aws_binary(), *args, "--endpoint-url", env["AWS_ENDPOINT_URL"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    if check:
        assert done.returncode == 0, f"aws {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
    return done


def aws_json(gw: GatewayProcess, *args: str) -> Any:
    out = aws(gw, *args, "--output", "json").stdout
    return json.loads(out) if out.strip() else None
