"""`edgesim s3 ls | cat`: the local buckets, read straight from the data dir (no gateway needed)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli_api import JsonOut, console, emit, err_console
from gateway.errors import AwsError
from gateway.sinks.s3 import ObjectStore, split_location

s3_app = typer.Typer(help="Objects the s3 and firehose sinks wrote, under <data dir>/s3.", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="EDGESIM_HOME", help="Where the database lives.")]


def _store(data_dir: Path) -> ObjectStore:
    return ObjectStore(data_dir / "s3")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@s3_app.command("ls")
def s3_ls(
    location: Annotated[str | None, typer.Argument(help="BUCKET or BUCKET/PREFIX; omit to list buckets.")] = None,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """List buckets, or every object in a bucket whose key starts with PREFIX."""
    store = _store(data_dir)
    if not location:
        buckets = store.buckets()
        if as_json:
            emit(buckets, True)
        else:
            for bucket in buckets:
                console.print(escape(bucket))
        return
    bucket, prefix = split_location(location)
    try:
        objects = store.list(bucket, prefix)
    except AwsError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.code)}: {escape(exc.message)}")
        raise typer.Exit(1) from exc
    table = Table("Modified (UTC)", "Size", "Key")
    for o in objects:
        table.add_row(_when(o.modified_ms), str(o.size), escape(o.key))
    emit([o.to_json() for o in objects], as_json, table)


@s3_app.command("cat")
def s3_cat(
    location: Annotated[str, typer.Argument(help="BUCKET/KEY")],
    data_dir: DataDir = Path(".edgesim"),
) -> None:
    """Write one object's bytes to stdout, unchanged (pipe GZIP objects through `gunzip`)."""
    bucket, key = split_location(location)
    try:
        data = _store(data_dir).get(bucket, key)
    except AwsError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.code)}: {escape(exc.message)}")
        raise typer.Exit(1) from exc
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
