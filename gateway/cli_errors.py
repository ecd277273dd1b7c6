"""Expected mistakes on the command line (a missing file, bad JSON, a port in use, no gateway) as one clear line."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.markup import escape

from gateway.cli_api import err_console

_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
}
TOKEN_HINT = "set EDGESIM_API_TOKEN to the token the gateway printed at start-up"


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit 1."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(1)


def os_error_line(exc: OSError, path: Path | str | None = None, what: str = "file") -> str:
    where = path if path is not None else exc.filename
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot read {what} {where}: {reason}"


def read_bytes(path: Path, what: str = "file") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(os_error_line(exc, path, what))


def read_text(path: Path, what: str = "file") -> str:
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{what} {path} is not UTF-8 text")


def json_line(exc: json.JSONDecodeError, source: str) -> str:
    return f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"


def read_json(path: Path, what: str = "file") -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(json_line(exc, f"{what} {path}"))


def json_argument(value: str, what: str) -> bytes:
    """A JSON document given inline or as @file, checked before anything is sent."""
    if value.startswith("@"):
        path = Path(value[1:])
        body = read_bytes(path, what)
        source = f"{what} {path}"
    else:
        body, source = value.encode(), what
    try:
        json.loads(body)
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text")
    except json.JSONDecodeError as exc:
        fail(json_line(exc, source))
    return body


def port_in_use_line(exc: OSError, flags: dict[str, int | None]) -> str | None:
    """'port 4566 (--api-port) is in use…' for a bind that failed with EADDRINUSE, else None."""
    if exc.errno != errno.EADDRINUSE:
        return None
    match = re.search(r"\(\s*'[^']*',\s*(\d+)\s*\)", str(exc))
    port = int(match.group(1)) if match else None
    flag = next((name for name, value in flags.items() if port is not None and value == port), None)
    what = f"port {port}" if port is not None else "a port"
    named = f" ({flag})" if flag else ""
    return f"{what}{named} is in use; choose another or 0 for any free port"


def one_line(exc: BaseException) -> str | None:
    """A clear line for an expected mistake that reached the top without one; None for a real bug."""
    import yaml
    from botocore.exceptions import ClientError, EndpointConnectionError

    from gateway.errors import EdgesimError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        line = f"{error.get('Code')}: {error.get('Message')}"
        return f"{line} ({TOKEN_HINT})" if status in (401, 403) and "token" in line.lower() else line
    if isinstance(exc, EndpointConnectionError):
        return f"no gateway answers at {exc.kwargs.get('endpoint_url')}; start one with `edgesim up`"
    if isinstance(exc, EdgesimError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if isinstance(exc, yaml.YAMLError):
        return f"not valid YAML: {' '.join(str(exc).split())}"
    if isinstance(exc, UnicodeDecodeError):
        return "a file is not UTF-8 text"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {_REASONS.get(exc.errno or 0, exc.strerror or str(exc))}"
    if isinstance(exc, OSError):
        return port_in_use_line(exc, {})
    return None
