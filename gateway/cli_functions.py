"""`edgesim functions`: deploy, invoke and inspect Lambda functions of a running gateway (boto3 `lambda`)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, api, emit, err_console, get_json, parse_pairs

functions_app = typer.Typer(help="Lambda functions: deploy Python handlers, invoke, list, logs.", no_args_is_help=True)

DEFAULT_ROLE = "arn:aws:iam::123456789012:role/edgesim-lambda"


def zip_module(source: Path) -> bytes:
    """One Python file as a Lambda deployment package."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(source, source.name)
    return buffer.getvalue()


def _parse_env(pairs: list[str]) -> dict[str, str]:
    return parse_pairs(pairs, "--env")


@functions_app.command("deploy")
def functions_deploy(
    name: str,
    target: Annotated[str, typer.Argument(help="path/to/module.py:handler_function")],
    timeout: Annotated[int | None, typer.Option(help="Seconds before an invocation is killed (AWS default 3).")] = None,
    memory: Annotated[int | None, typer.Option(help="MemorySize in MB (reported to the handler).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE environment variable; repeatable.")] = None,
    runtime: Annotated[str, typer.Option(help="python3.x runtime name.")] = "python3.12",
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Zip one Python file and CreateFunction, or UpdateFunctionCode (+ configuration) when NAME exists."""
    path_text, sep, function = target.rpartition(":")
    if not sep or not function or not path_text.endswith(".py"):
        raise typer.BadParameter("TARGET must look like path/to/module.py:handler")
    source = Path(path_text)
    if not source.is_file():
        raise typer.BadParameter(f"{source} is not a file")
    code = zip_module(source)
    handler = f"{source.stem}.{function}"
    settings: dict[str, Any] = {"Handler": handler, "Runtime": runtime}
    if timeout is not None:
        settings["Timeout"] = timeout
    if memory is not None:
        settings["MemorySize"] = memory
    if env:
        settings["Environment"] = {"Variables": _parse_env(env)}
    with api("lambda", endpoint) as client:
        try:
            client.get_function(FunctionName=name)
            exists = True
        except client.exceptions.ResourceNotFoundException:
            exists = False
        if exists:
            client.update_function_code(FunctionName=name, ZipFile=code)
            result = client.update_function_configuration(FunctionName=name, **settings)
            action = "updated"
        else:
            result = client.create_function(
                FunctionName=name, Role=DEFAULT_ROLE, Code={"ZipFile": code}, PackageType="Zip", **settings
            )
            action = "created"
    summary = {
        "action": action,
        "functionName": result["FunctionName"],
        "functionArn": result["FunctionArn"],
        "handler": result["Handler"],
        "codeSha256": result["CodeSha256"],
    }
    if as_json:
        emit(summary, True)
    else:
        typer.echo(f"{action} {result['FunctionArn']} (handler {result['Handler']})")


@functions_app.command("invoke")
def functions_invoke(
    name: str,
    payload: Annotated[str, typer.Option(help="The event, as JSON.")] = "{}",
    event: Annotated[bool, typer.Option("--async", help="InvocationType Event: queue it and return.")] = False,
    tail: Annotated[
        bool, typer.Option("--tail", "--log", help="Print the invocation's log (LogType Tail) to stderr.")
    ] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
) -> None:
    """Invoke NAME and print what the handler returned; a function error exits with status 1."""
    try:
        json.loads(payload)
    except ValueError as exc:
        raise typer.BadParameter(f"--payload is not valid JSON: {exc}") from exc
    with api("lambda", endpoint) as client:
        response = client.invoke(
            FunctionName=name,
            Payload=payload.encode(),
            InvocationType="Event" if event else "RequestResponse",
            LogType="Tail" if tail and not event else "None",
        )
    if event:
        typer.echo(f"queued (status {response['StatusCode']})")
        return
    if tail and response.get("LogResult"):
        err_console.print(base64.b64decode(response["LogResult"]).decode("utf-8", "replace"), markup=False)
    typer.echo(response["Payload"].read().decode("utf-8", "replace"))
    if response.get("FunctionError"):
        err_console.print(f"[red]function error:[/red] {response['FunctionError']}")
        raise typer.Exit(1)


@functions_app.command("list")
def functions_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """ListFunctions."""
    rows: list[dict[str, Any]] = []
    with api("lambda", endpoint) as client:
        for page in client.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                rows.append(
                    {
                        "name": fn["FunctionName"],
                        "runtime": fn.get("Runtime"),
                        "handler": fn.get("Handler"),
                        "timeout": fn.get("Timeout"),
                        "memory": fn.get("MemorySize"),
                        "lastModified": fn.get("LastModified"),
                    }
                )
    table = Table("function", "runtime", "handler", "timeout", "MB", caption="more (last modified): --json")
    for row in rows:
        table.add_row(row["name"], row["runtime"], row["handler"], f"{row['timeout']} s", str(row["memory"]))
    emit({"functions": rows}, as_json, table)


@functions_app.command("logs")
def functions_logs(
    name: str,
    limit: Annotated[int, typer.Option(help="Show at most this many recent invocations.")] = 10,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Recent invocation logs of NAME (kept in the gateway's memory; read from /edgesim/lambda/logs)."""
    everything: dict[str, list[dict[str, Any]]] = get_json(endpoint, "/edgesim/lambda/logs")
    entries = everything.get(name, [])[-limit:] if limit > 0 else []
    if as_json:
        emit({"functionName": name, "invocations": entries}, True)
        return
    if not entries:
        typer.echo(f"no recent invocations of {name}")
        return
    for entry in entries:
        typer.echo(entry["log"].rstrip("\n"))
