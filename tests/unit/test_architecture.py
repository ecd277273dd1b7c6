"""design.md §2's arrows, checked by `make test` as well as `make lint`: nothing below gateway.app imports it (not even
for type checking), devices/ never imports gateway/, and gateway.edge does not import devices/."""

from __future__ import annotations

import ast
import builtins
import functools
import os
from pathlib import Path

import pytest
from importlinter import cli

ROOT = Path(__file__).resolve().parents[2]
# The layer above app: the CLI and the demo build a Gateway; everything else receives narrow Protocols.
ABOVE_APP = {"gateway/app.py", "gateway/__main__.py", "gateway/cli.py", "gateway/demo.py", "gateway/demo_view.py"}


@functools.cache
def nodes(path: Path) -> list[ast.AST]:
    """The file's imports and class definitions, at any depth (parsed once for every test here)."""
    wanted = (ast.Import, ast.ImportFrom, ast.ClassDef)
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, wanted)]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions, `if TYPE_CHECKING:` blocks), as dotted names."""
    found: set[str] = set()
    for node in nodes(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "examples" not in p.relative_to(ROOT).parts)


def offenders(files: list[Path], forbidden: str) -> list[str]:
    out = []
    for path in files:
        hits = {m for m in imported_modules(path) if m == forbidden or m.startswith(forbidden + ".")}
        if hits:
            out.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(hits))}")
    return out


def test_nothing_below_app_imports_the_gateway() -> None:
    below = [p for p in python_files("gateway") if str(p.relative_to(ROOT)) not in ABOVE_APP]
    below = [p for p in below if not p.name.startswith("cli_")]  # the CLI's command modules sit above app too
    assert len(below) > 100  # the walk really sees the package
    assert offenders(below, "gateway.app") == []


def test_devices_never_import_the_gateway() -> None:
    assert offenders(python_files("devices"), "gateway") == []


def test_the_edge_does_not_import_devices() -> None:
    assert offenders(python_files("gateway/edge"), "devices") == []


def test_the_walk_sees_a_type_checking_import(tmp_path: Path) -> None:
    sample = tmp_path / "part.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.app import Gateway\n")
    assert "gateway.app" in imported_modules(sample)


def test_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """The same contracts `make lint` runs (.importlinter), including indirect imports through other modules."""
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        code = cli.lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().out


SERVICE_PACKAGES = [
    "broker",
    "registry",
    "shadow",
    "rules",
    "sinks/kinesis",
    "sinks/sqs",
    "sinks/firehose",
    "sinks/lambda_",
]
# Raised and caught inside one module, never shown to a client; or, for the component worker, in a process that
# imports nothing from edgesim.
OFF_THE_ROOT = {
    "gateway/errors.py": {"EdgesimError"},  # the root itself
    "gateway/edge/component_worker.py": {"EdgeError", "LoadError"},
    "gateway/sinks/kinesis/kpl.py": {"_Malformed"},
}
BUILTIN_ERRORS = {n for n in dir(builtins) if n.endswith(("Error", "Exception"))}


@pytest.mark.parametrize("package", SERVICE_PACKAGES)
def test_each_service_package_has_its_exceptions_module(package: str) -> None:
    assert (ROOT / "gateway" / package / "exceptions.py").is_file()


def test_every_error_class_derives_from_the_root() -> None:
    """A class on a built-in exception (instead of gateway.errors' root) is allowed only where listed above."""
    stragglers = []
    for path in python_files("gateway"):
        where = str(path.relative_to(ROOT))
        for node in nodes(path):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & BUILTIN_ERRORS and node.name not in OFF_THE_ROOT.get(where, set()):
                    stragglers.append(f"{where}: {node.name}({', '.join(sorted(bases))})")
    assert stragglers == []
