"""`edgesim streams tail FILE --stream NAME`: ship the lines of a growing file to a stream, Kinesis-Agent style."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, api, err_console
from gateway.cli_streams import DataDir, streams_app
from gateway.streams_tail import LogTail, partition_keys

BATCH = 500  # PutRecords' limit
MAX_RETRIES = 8


def _ship(kinesis: Any, stream: str, records: list[dict[str, Any]]) -> None:
    """PutRecords, resending only the records that failed (throttling), with backoff; all or an error."""
    pending = records
    for attempt in range(MAX_RETRIES):
        result = kinesis.put_records(StreamName=stream, Records=pending)
        if not result.get("FailedRecordCount"):
            return
        pending = [r for r, out in zip(pending, result["Records"], strict=True) if "ErrorCode" in out]
        time.sleep(min(2.0, 0.1 * 2**attempt))
    raise RuntimeError(f"{len(pending)} record(s) still refused after {MAX_RETRIES} tries")


@streams_app.command("tail")
def streams_tail(
    file: Annotated[Path, typer.Argument(help="The log file to follow (it may not exist yet).")],
    stream: Annotated[str, typer.Option("--stream", help="The Kinesis stream to put each line into.")],
    partition_key: Annotated[
        str,
        typer.Option(help="random (the agent's default), deterministic (hash of the line), fixed:VALUE or json:FIELD."),
    ] = "random",
    start: Annotated[
        str, typer.Option("--from", help="start or end of the file, when there is no checkpoint.")
    ] = "end",
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file (default: under --data-dir, one per file and stream).")
    ] = None,
    once: Annotated[bool, typer.Option(help="Ship what the file holds now, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the file.")] = 0.5,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """Follow FILE as the Kinesis Agent does: each complete line (newline kept) becomes a record; rotation (rename or
    copy-truncate) is followed; the checkpoint means a restart neither resends nor skips lines."""
    if start not in ("start", "end"):
        raise typer.BadParameter("--from takes start or end")
    try:
        key_for = partition_keys(partition_key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if file.exists() and not file.is_file():
        err_console.print(f"[red]error:[/red] {file} is not a regular file")
        raise typer.Exit(1)
    digest = hashlib.sha256(f"{file.resolve()}|{stream}".encode()).hexdigest()[:16]
    where = checkpoint or data_dir / "tail-checkpoints" / f"{stream}-{digest}.json"
    tail = LogTail(file, where, from_start=start == "start")
    shipped = 0
    try:
        with api("kinesis", endpoint) as kinesis:
            kinesis.describe_stream_summary(StreamName=stream)  # a missing stream is one clear line, up front
            while True:
                lines = tail.read_lines(BATCH)
                if lines:
                    records = [{"Data": line, "PartitionKey": key_for(line)} for line in lines]
                    try:
                        _ship(kinesis, stream, records)
                    except RuntimeError as exc:
                        err_console.print(f"[red]error:[/red] {exc}")
                        raise typer.Exit(1) from exc
                    tail.commit()
                    shipped += len(lines)
                    if not as_json:
                        err_console.print(f"shipped {len(lines)} line(s) to {stream} ({shipped} in all)")
                    continue
                if once:
                    break
                time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        tail.close()
    if as_json:
        typer.echo(json.dumps({"stream": stream, "file": str(file), "shipped": shipped, "checkpoint": str(where)}))
