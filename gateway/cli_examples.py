"""The example rules, fleets, edge config and functions, shipped inside the package (a wheel has no repository)."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_errors import fail


def packaged_examples() -> Path:
    """The examples folder installed with the package (in a checkout, gateway/examples links to ./examples)."""
    return Path(str(files("gateway") / "examples"))


def examples_command(
    dest: Annotated[Path, typer.Argument(help="Where to copy them.")] = Path("examples"),
    force: Annotated[bool, typer.Option("--force", help="Replace files that are already there.")] = False,
) -> None:
    """Copy the examples (rules, fleets, edge config, functions) here, so the README's example paths work."""
    source = packaged_examples()
    if not source.is_dir():
        fail(f"this installation has no examples (looked in {source})")
    if dest.exists() and not force:
        fail(f"{dest} exists; pass --force to overwrite the example files in it")
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    typer.echo(f"copied the examples to {dest}/")
