"""Can each component's handler be imported? Checked in a child process (as the workers import them) before a core
starts, so a typo fails fast in one line instead of a crash loop with a traceback at every backoff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.edge.config import EdgeConfig

_PROBE = """
import importlib, json, sys
module_name, function = sys.argv[1].rsplit(".", 1)
try:
    handler = getattr(importlib.import_module(module_name), function, None)
    problem = None if callable(handler) else f"module {module_name} has no function {function}"
except BaseException as exc:
    problem = f"cannot import {module_name}: {type(exc).__name__}: {exc}"
print(json.dumps(problem))
"""


def handler_problems(config: EdgeConfig, timeout_s: float = 30.0) -> list[str]:
    """One line per component whose handler does not import (or is not a function); empty when all are fine."""
    problems: list[str] = []
    folder = config.components_dir
    for component in config.components:
        if folder is None or not Path(folder).is_dir():
            problems.append(f"component {component.name}: components_dir {folder} is not a folder")
            continue
        env = {**os.environ, **component.environment, "PYTHONPATH": str(folder)}
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PROBE, component.handler],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            problem = json.loads(lines[-1]) if lines else f"the import check exited with {done.returncode}"
        except subprocess.TimeoutExpired:
            problem = f"importing {component.handler} took over {timeout_s:.0f} s"
        if problem:
            problems.append(f"component {component.name}: handler {component.handler}: {problem}")
    return problems
