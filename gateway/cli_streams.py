"""`edgesim streams`: Kinesis streams of a running gateway, and a small checkpointing consumer (KCL-style)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, api, console, emit

streams_app = typer.Typer(help="Kinesis Data Streams: create, list, read with checkpoints.", no_args_is_help=True)
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="EDGESIM_HOME", help="Where checkpoints are kept.")]


class Checkpoints:
    """Per-(group, stream, shard) positions in the data dir's database, so a consumer group resumes."""

    def __init__(self, data_dir: Path, group: str) -> None:
        from gateway.store import Store

        self.store = Store(data_dir / "edgesim.db")
        self.group = group

    def get(self, stream: str, shard: str) -> str | None:
        row = self.store.one(
            "SELECT sequence FROM stream_checkpoints WHERE group_name=? AND stream=? AND shard=?",
            (self.group, stream, shard),
        )
        return None if row is None else str(row["sequence"])

    def put(self, stream: str, shard: str, sequence: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO stream_checkpoints(group_name, stream, shard, sequence, updated_ms) "
                "VALUES (?,?,?,?,?)",
                (self.group, stream, shard, sequence, int(time.time() * 1000)),
            )

    def close(self) -> None:
        self.store.close()


def _show(record: dict[str, Any], shard: str) -> list[dict[str, Any]]:
    """The record as printed: one entry per user record when it is a KPL aggregate (as the KCL de-aggregates)."""
    from gateway.sinks.kinesis.kpl import deaggregate, is_aggregated

    aggregated = is_aggregated(record["Data"])
    out = []
    for user in deaggregate(record["Data"], record["PartitionKey"]):
        try:
            text: Any = user.data.decode("utf-8")
        except UnicodeDecodeError:
            text = {"base64": base64.b64encode(user.data).decode()}
        shown: dict[str, Any] = {
            "shard": shard,
            "sequenceNumber": record["SequenceNumber"],
            "partitionKey": user.partition_key,
            "data": text,
        }
        if aggregated:
            shown["subSequenceNumber"] = user.sub_sequence
        out.append(shown)
    return out


@streams_app.command("read")
def streams_read(
    stream: str,
    start: Annotated[str, typer.Option("--from", help="trim-horizon or latest (when no checkpoint).")] = "trim-horizon",
    follow: Annotated[bool, typer.Option(help="Keep reading new records until Ctrl-C.")] = False,
    group: Annotated[str | None, typer.Option(help="Consumer group: resume from, and save, checkpoints.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    data_dir: DataDir = Path(".edgesim"),
    as_json: JsonOut = False,
) -> None:
    """Read every shard (parents before children), printing records; --group checkpoints each batch."""
    if start not in ("trim-horizon", "latest"):
        raise typer.BadParameter("--from takes trim-horizon or latest")
    checkpoints = Checkpoints(data_dir, group) if group else None
    seen = 0
    try:
        with api("kinesis", endpoint) as kinesis:
            shards = kinesis.list_shards(StreamName=stream)["Shards"]
            iterators: dict[str, str | None] = {}
            for shard in shards:  # shard numbers grow with lineage, so parents come first
                shard_id = shard["ShardId"]
                saved = checkpoints.get(stream, shard_id) if checkpoints else None
                if saved:
                    it = kinesis.get_shard_iterator(
                        StreamName=stream,
                        ShardId=shard_id,
                        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                        StartingSequenceNumber=saved,
                    )
                else:
                    it = kinesis.get_shard_iterator(
                        StreamName=stream, ShardId=shard_id, ShardIteratorType=start.upper().replace("-", "_")
                    )
                iterators[shard_id] = it["ShardIterator"]
            while any(iterators.values()):
                idle = True
                for shard_id, iterator in list(iterators.items()):
                    if iterator is None:
                        continue
                    page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
                    iterators[shard_id] = page.get("NextShardIterator")
                    for record in page["Records"]:
                        for shown in _show(record, shard_id):
                            typer.echo(
                                json.dumps(shown) if as_json else f"{shard_id} {shown['partitionKey']}: {shown['data']}"
                            )
                        seen += 1
                        if limit is not None and seen >= limit:
                            if checkpoints:
                                checkpoints.put(stream, shard_id, record["SequenceNumber"])
                            return
                    if page["Records"]:
                        idle = False
                        if checkpoints:
                            checkpoints.put(stream, shard_id, page["Records"][-1]["SequenceNumber"])
                if idle:
                    if not follow:
                        break
                    time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if checkpoints:
            checkpoints.close()


@streams_app.command("create")
def streams_create(
    name: str, shards: Annotated[int, typer.Option(help="Shard count.")] = 1, endpoint: Endpoint = DEFAULT_ENDPOINT
) -> None:
    """CreateStream; a stream that already exists is left as it is (exit 0), so setup scripts can run twice."""
    with api("kinesis", endpoint) as kinesis:
        try:
            kinesis.create_stream(StreamName=name, ShardCount=shards)
        except kinesis.exceptions.ResourceInUseException:
            summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            console.print(f"stream {name} exists ({summary['OpenShardCount']} open shard(s)); left as it is")
            return
    console.print(f"stream {name} with {shards} shard(s)")


@streams_app.command("list")
def streams_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """ListStreams with their open shard counts."""
    rows = []
    with api("kinesis", endpoint) as kinesis:
        for name in kinesis.list_streams()["StreamNames"]:
            summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            rows.append(
                {
                    "name": name,
                    "openShards": summary["OpenShardCount"],
                    "retentionHours": summary["RetentionPeriodHours"],
                }
            )
    table = Table("stream", "open shards", "retention (h)")
    for row in rows:
        table.add_row(row["name"], str(row["openShards"]), str(row["retentionHours"]))
    emit({"streams": rows}, as_json, table)


from gateway import cli_streams_tail as _tail  # noqa: E402, F401 - registers `streams tail` on streams_app
