"""compose.yaml checked in pure Python (PyYAML): the Compose fields this project uses and their shapes, references
between services and volumes, the build context, and each `edgesim ...` command line parsed by the CLI itself.

Not a full Compose implementation: `make test` does not install Docker (700 MB) just to validate one file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import yaml

TOP_LEVEL = {"services", "volumes", "networks", "name"}
SERVICE_FIELDS = {
    "build", "image", "command", "entrypoint", "environment", "ports", "volumes", "depends_on", "healthcheck",
    "profiles", "restart", "working_dir", "user", "networks",
}  # fmt: skip
HEALTHCHECK_FIELDS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
PORT = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}:)?\d{1,5}:\d{1,5}(/(tcp|udp))?$")


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())  # SafeLoader resolves the `<<: *anchor` merge keys, as Compose does
    assert isinstance(data, dict)
    return data


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _edgesim_args(name: str, argv: list[str]) -> list[str]:
    """Parse an `edgesim ...` command line with the CLI's own parser (types, flags, required arguments)."""
    from gateway.cli import app

    command: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(command, "commands"):  # groups take no options of their own here: the next word is the command
        if not args or args[0] not in command.commands:
            return [f"{name}: command {' '.join(argv)!r}: no such edgesim command"]
        command, args = command.commands[args[0]], args[1:]
    try:
        command.make_context(command.name, list(args))
    except Exception as exc:  # click's UsageError and friends
        return [f"{name}: command {' '.join(argv)!r}: {exc}"]
    return []


def _service_problems(name: str, service: dict[str, Any], compose: dict[str, Any], root: Path) -> list[str]:
    problems = [f"{name}: unknown field {key!r}" for key in service if key not in SERVICE_FIELDS]
    build = service.get("build")
    if build is not None and not (isinstance(build, str) and (root / build / "Dockerfile").is_file()):
        problems.append(f"{name}: build context {build!r} has no Dockerfile")
    if "image" not in service and build is None:
        problems.append(f"{name}: needs image or build")
    command = service.get("command")
    if command is not None:
        if not _strings(command):
            problems.append(f"{name}: command must be a list of strings")
        elif command[0] == "edgesim":
            problems += _edgesim_args(name, command)
    env = service.get("environment", {})
    if not (isinstance(env, dict) and all(isinstance(v, str | int) for v in env.values())) and not _strings(env):
        problems.append(f"{name}: environment must map names to strings")
    for port in service.get("ports", []):
        if not (isinstance(port, str) and PORT.match(port)):
            problems.append(f"{name}: port {port!r} is not HOST_IP:HOST:CONTAINER")
    declared = set(compose.get("volumes") or {})
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else None
        if source is None or ":" not in volume:
            problems.append(f"{name}: volume {volume!r} is not SOURCE:TARGET")
        elif not source.startswith((".", "/")) and source not in declared:
            problems.append(f"{name}: volume {source!r} is not declared under the top-level volumes")
    depends = service.get("depends_on", {})
    items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
    for other, how in items:
        if other not in compose["services"]:
            problems.append(f"{name}: depends_on {other!r}, which is not a service")
        if isinstance(how, dict) and how.get("condition", "service_started") not in CONDITIONS:
            problems.append(f"{name}: depends_on {other}: unknown condition {how.get('condition')!r}")
    health = service.get("healthcheck")
    if health is not None:
        problems += [f"{name}: healthcheck: unknown field {k!r}" for k in health if k not in HEALTHCHECK_FIELDS]
        if not _strings(health.get("test")) or health["test"][0] not in ("CMD", "CMD-SHELL", "NONE"):
            problems.append(f"{name}: healthcheck test must be a list starting with CMD or CMD-SHELL")
        for key in ("interval", "timeout", "start_period"):
            if key in health and not DURATION.match(str(health[key])):
                problems.append(f"{name}: healthcheck {key} {health[key]!r} is not a duration")
    if "profiles" in service and not _strings(service["profiles"]):
        problems.append(f"{name}: profiles must be a list of names")
    return problems


def compose_problems(compose: dict[str, Any], root: Path) -> list[str]:
    problems = [
        f"unknown top-level field {key!r}" for key in compose if key not in TOP_LEVEL and not key.startswith("x-")
    ]
    services = compose.get("services")
    if not isinstance(services, dict) or not services:
        return [*problems, "no services"]
    for name, service in services.items():
        problems += _service_problems(name, service, compose, root)
    return problems


def dockerfile_problems(root: Path) -> list[str]:
    """The image installs the package from what was COPYed before `pip install`: every top-level package (and the
    examples the package links to) must be there by then."""
    import tomllib

    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    copied: set[str] = set()
    for line in (root / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            copied.update(w.rstrip("/") for w in words[1:-1])
        if words[:1] == ["RUN"] and "pip install" in line:
            break
    needed = {p for p in packages if (root / p / "__init__.py").is_file()} | {"examples", "pyproject.toml"}
    return [f"Dockerfile: {name} is not copied before `pip install`" for name in sorted(needed - copied)]
