"""What a folder of rules writes to (Kinesis streams, SQS queues, Lambda functions), and creating what is missing.

`edgesim up --rules DIR --create-targets` runs this against its own API once it is up, through boto3 as a user's
script would, so a fresh data dir has the example rules' stream, queue and function before the first message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import EdgesimError

log = logging.getLogger("edgesim.targets")
LAMBDA_ROLE = "arn:aws:iam::123456789012:role/edgesim-lambda"


@dataclass
class Targets:
    streams: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def _templated(name: str) -> bool:
    return "${" in name or not name


def _collect(actions: Iterable[Any], into: Targets) -> None:
    for action in actions:
        if not isinstance(action, dict):
            continue
        for kind, fields in action.items():
            if not isinstance(fields, dict):
                continue
            if kind == "kinesis" and not _templated(name := str(fields.get("streamName", ""))):
                into.streams.add(name)
            elif kind == "sqs" and not _templated(name := str(fields.get("queueUrl", "")).rstrip("/").split("/")[-1]):
                into.queues.add(name)
            elif kind == "lambda":
                arn = str(fields.get("functionArn", ""))
                name = arn.split(":function:", 1)[-1].split(":", maxsplit=1)[0]
                if not _templated(name):
                    into.functions.add(name)


def rule_targets(rules_dir: Path) -> Targets:
    """Every literal stream, queue and function the folder's rules (and their errorActions) name."""
    from gateway.rules.files import read_rule_file, rule_files

    out = Targets()
    for path in rule_files(rules_dir):
        try:
            _, document = read_rule_file(path)
        except EdgesimError:
            continue  # the rules folder loader reports it
        _collect(document.get("actions", []), out)
        if isinstance(document.get("errorAction"), dict):
            _collect([document["errorAction"]], out)
    return out


def function_source(rules_dir: Path, name: str) -> Path | None:
    """A function's code by convention: ../functions/NAME.py beside the rules folder (dashes as underscores)."""
    candidate = rules_dir.resolve().parent / "functions" / f"{name.replace('-', '_')}.py"
    return candidate if candidate.is_file() else None


def create_targets(
    client: Callable[[str], Any], rules_dir: Path, shards: int = 1, concurrency: int | None = None
) -> list[str]:
    """Create the missing ones; returns one line per target saying what happened (existing ones are left alone)."""
    from botocore.exceptions import ClientError

    from gateway.cli_functions import zip_module

    wanted = rule_targets(rules_dir)
    report: list[str] = []
    kinesis = client("kinesis")
    existing = set(kinesis.list_streams()["StreamNames"])
    for stream in sorted(wanted.streams):
        if stream in existing:
            report.append(f"stream {stream}: exists")
        else:
            kinesis.create_stream(StreamName=stream, ShardCount=shards)
            report.append(f"stream {stream}: created ({shards} shard(s))")
    sqs = client("sqs")
    for queue in sorted(wanted.queues):
        attributes = {"FifoQueue": "true"} if queue.endswith(".fifo") else {}
        sqs.create_queue(QueueName=queue, Attributes=attributes)  # idempotent, as on AWS
        report.append(f"queue {queue}: ready")
    lam = client("lambda")
    for function in sorted(wanted.functions):
        source = function_source(rules_dir, function)
        try:
            lam.get_function(FunctionName=function)
            report.append(f"function {function}: exists")
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        if source is None:
            report.append(
                f"function {function}: missing, and no functions/{function.replace('-', '_')}.py beside the rules "
                f"to deploy (edgesim functions deploy {function} FILE.py:handler)"
            )
            continue
        lam.create_function(
            FunctionName=function,
            Runtime="python3.11",
            Handler=f"{source.stem}.handler",
            Role=LAMBDA_ROLE,
            Code={"ZipFile": zip_module(source)},
            Timeout=10,
        )
        if concurrency is not None:
            lam.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=concurrency)
        report.append(f"function {function}: deployed from {source}")
    return report
