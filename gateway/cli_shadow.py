"""`edgesim shadow`: read and change device shadows of a running gateway, through iot-data."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, api, console, emit
from gateway.cli_errors import json_argument

shadow_app = typer.Typer(help="Device shadows (classic and named).", no_args_is_help=True)
ShadowName = Annotated[str | None, typer.Option("--name", help="A named shadow (default: the classic shadow).")]


def _named(thing: str, name: str | None) -> dict[str, Any]:
    return {"thingName": thing, **({"shadowName": name} if name else {})}


@shadow_app.command("get")
def shadow_get(thing: str, name: ShadowName = None, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """GetThingShadow: the document with desired, reported, delta, metadata and version."""
    with api("iot-data", endpoint) as data:
        emit(json.loads(data.get_thing_shadow(**_named(thing, name))["payload"].read()), True)


@shadow_app.command("update")
def shadow_update(
    thing: str,
    document: Annotated[str, typer.Argument(help='JSON such as {"state":{"desired":{"on":true}}}, or @file.json.')],
    name: ShadowName = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
) -> None:
    """UpdateThingShadow; prints the accepted document."""
    body = json_argument(document, "shadow document")
    with api("iot-data", endpoint) as data:
        emit(json.loads(data.update_thing_shadow(**_named(thing, name), payload=body)["payload"].read()), True)


@shadow_app.command("delete")
def shadow_delete(thing: str, name: ShadowName = None, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DeleteThingShadow (the version sequence continues if it is created again)."""
    with api("iot-data", endpoint) as data:
        emit(json.loads(data.delete_thing_shadow(**_named(thing, name))["payload"].read()), True)


@shadow_app.command("list")
def shadow_list(
    thing: str,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """ListNamedShadowsForThing (every page)."""
    names: list[str] = []
    with api("iot-data", endpoint) as data:
        token = None
        while True:
            page = data.list_named_shadows_for_thing(thingName=thing, **({"nextToken": token} if token else {}))
            names += page["results"]
            token = page.get("nextToken")
            if not token:
                break
    if as_json:
        emit({"results": names}, True)
    else:
        for shadow in names:
            console.print(shadow)
