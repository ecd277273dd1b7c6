"""What every bench script does at the end: stop the gateway (showing its last log lines), clean up, write JSON."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console


def stop_and_clean(gw: Any, home: Path, keep: bool, console: Console) -> None:
    if gw is not None:
        with contextlib.suppress(Exception):
            tail = gw.log_tail(10)
            if tail.strip():
                console.log(f"edgesim log (tail):\n{tail}")
        gw.stop()
    if keep:
        console.log(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


def write_json(path: Path | None, quick: bool, settings: Any, results: dict[str, Any], console: Console) -> None:
    if path is None:
        return
    payload = {"quick": quick, "settings": asdict(settings), "results": results}
    path.write_text(json.dumps(payload, indent=2, default=str))
    console.log(f"wrote {path}")
