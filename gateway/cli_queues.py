"""`edgesim queues`: SQS queues of a running gateway (boto3 `sqs`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, api, console, emit

queues_app = typer.Typer(help="SQS queues: create (idempotent, as on AWS), list.", no_args_is_help=True)


@queues_app.command("create")
def queues_create(
    name: Annotated[str, typer.Argument(help="Queue name; a name ending in .fifo makes a FIFO queue.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """CreateQueue: the queue's URL (an existing queue with the same attributes is returned as it is)."""
    attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    with api("sqs", endpoint) as sqs:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    emit({"QueueUrl": url}, True) if as_json else console.print(f"queue {name}: {url}", highlight=False)


@queues_app.command("list")
def queues_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """ListQueues with their approximate depths."""
    rows = []
    with api("sqs", endpoint) as sqs:
        for url in sqs.list_queues().get("QueueUrls", []):
            attrs = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            rows.append(
                {
                    "name": url.rsplit("/", 1)[-1],
                    "url": url,
                    "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
                    "inFlight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                }
            )
    table = Table("queue", "visible", "in flight")
    for row in rows:
        table.add_row(row["name"], str(row["visible"]), str(row["inFlight"]))
    emit({"queues": rows}, as_json, table)
