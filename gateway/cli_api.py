"""How CLI commands reach a running gateway: boto3 against its HTTP API, as the AWS CLI would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"

Endpoint = Annotated[
    str, typer.Option("--endpoint", envvar="EDGESIM_ENDPOINT", help="The gateway's HTTP API (edgesim up).")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

console = Console()
# Errors are never wrapped: a caret must stay under the column it points at.
err_console = Console(stderr=True, soft_wrap=True)


def aws_client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    from devices.provision import send_api_token

    # Any credentials work on loopback; these keep boto3 from searching the environment for real ones.
    client = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="edgesim",
        aws_secret_access_key="edgesim",
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    send_api_token(client)
    return client


@contextlib.contextmanager
def api(service: str, endpoint: str) -> Iterator[Any]:
    """A boto3 client; AWS errors and an unreachable gateway become one clear line and exit code 1."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        yield aws_client(service, endpoint)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        line = f"{error.get('Code')}: {error.get('Message')}"
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 401:
            line = f"the gateway at {endpoint} wants its API token: set EDGESIM_API_TOKEN to the token it printed"
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise typer.Exit(1) from exc
    except EndpointConnectionError as exc:
        err_console.print(
            f"[red]error:[/red] no gateway answers at {endpoint}; start one with `edgesim up` "
            "or point --endpoint / EDGESIM_ENDPOINT at it"
        )
        raise typer.Exit(1) from exc


def get_json(endpoint: str, path: str, timeout: float = 10) -> Any:
    """GET one of the gateway's own JSON pages (not an AWS API), with the API token; failures are one line, exit 1."""
    import os
    import urllib.error
    import urllib.request

    from devices.provision import TOKEN_HEADER

    request = urllib.request.Request(endpoint.rstrip("/") + path)
    token = os.environ.get("EDGESIM_API_TOKEN")
    if token:
        request.add_header(TOKEN_HEADER, token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        line = (
            f"the gateway at {endpoint} wants its API token: set EDGESIM_API_TOKEN to the token it printed"
            if exc.code == 401
            else f"the gateway at {endpoint} answered {exc.code} {exc.reason} for {path}"
        )
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        err_console.print(
            f"[red]error:[/red] no gateway answers at {escape(endpoint)}; start one with `edgesim up` "
            "or point --endpoint / EDGESIM_ENDPOINT at it",
            highlight=False,
        )
        raise typer.Exit(1) from exc


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(table)


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """`--attr a=1 --attr b=2` style options as a dict; a malformed item names the option and the item."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} takes NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def strip_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}
