"""Request routing from botocore's service models: (method, path, query, headers, body) → operation + parameters.

Using the models boto3 itself is generated from means every request boto3 can send maps to the operation it names,
with each member read from the place (path, query string, header, body) the model puts it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote

from botocore.loaders import Loader

from gateway import jsonutil
from gateway.errors import InvalidRequestException


@dataclass(frozen=True)
class RestRoute:
    operation: str
    method: str
    pattern: re.Pattern[str]
    literal_query: tuple[tuple[str, str], ...]
    input_shape: str | None
    literal_chars: int


@dataclass(frozen=True)
class ServiceModel:
    name: str
    shapes: Mapping[str, Any]
    routes: tuple[RestRoute, ...]
    operations: Mapping[str, Any]


def _compile_uri(uri: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...], int]:
    path, _, query = uri.partition("?")
    literal_query = tuple(
        (k, v) for k, _, v in (part.partition("=") for part in query.split("&") if part) if not v.startswith("{")
    )
    regex = ""
    literal = 0
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{"):
            name = piece[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            regex += f"(?P<{re.sub(r'[^0-9a-zA-Z_]', '_', name)}>{'.+' if greedy else '[^/]+'})"
        else:
            regex += re.escape(piece)
            literal += len(piece)
    return re.compile(regex + "/?$"), literal_query, literal


@cache
def load_service(name: str) -> ServiceModel:
    model = Loader().load_service_model(name, "service-2")
    routes = []
    for op_name, op in model["operations"].items():
        pattern, literal_query, literal = _compile_uri(op["http"]["requestUri"])
        routes.append(
            RestRoute(op_name, op["http"]["method"], pattern, literal_query, op.get("input", {}).get("shape"), literal)
        )
    # Most literal characters first, so `/things/{name}/principals` wins over `/things/{name}`.
    routes.sort(key=lambda r: (-r.literal_chars, -len(r.literal_query)))
    return ServiceModel(name, model["shapes"], tuple(routes), model["operations"])


def match_route(
    service: ServiceModel, method: str, raw_path: str, query: Mapping[str, str]
) -> tuple[RestRoute, dict[str, str]] | None:
    """The operation for a request; path labels come back percent-decoded, one segment each."""
    for route in service.routes:
        if route.method != method:
            continue
        found = route.pattern.match(raw_path)
        if found is None:
            continue
        if any(query.get(k) != v for k, v in route.literal_query):
            continue
        return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


def _convert(shape: Mapping[str, Any], raw: str, where: str) -> Any:
    kind = shape.get("type")
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
    except ValueError as exc:
        raise InvalidRequestException(f"{where}: {raw!r} is not a number") from exc
    if kind == "boolean":
        return raw.lower() == "true"
    return raw


def parse_input(
    service: ServiceModel,
    route: RestRoute,
    labels: Mapping[str, str],
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """Collect the operation's input members from wherever the model says they travel."""
    params: dict[str, Any] = {}
    if route.input_shape is None:
        return params
    shape = service.shapes[route.input_shape]
    members: Mapping[str, Any] = shape.get("members", {})
    payload_member = shape.get("payload")
    label_names = {re.sub(r"[^0-9a-zA-Z_]", "_", k): k for k in labels}
    for member, spec in members.items():
        location = spec.get("location")
        wire_name = spec.get("locationName", member)
        member_shape = service.shapes[spec["shape"]]
        if location == "uri":
            key = re.sub(r"[^0-9a-zA-Z_]", "_", wire_name)
            if key in label_names:
                params[member] = _convert(member_shape, labels[key], member)
        elif location == "querystring":
            if wire_name in query:
                params[member] = _convert(member_shape, query[wire_name], member)
        elif location == "header":
            value = headers.get(wire_name)
            if value is not None:
                params[member] = _convert(member_shape, value, member)
    if payload_member is not None:
        kind = service.shapes[members[payload_member]["shape"]].get("type")
        if kind in ("blob", "string"):
            params[payload_member] = body
        elif body:
            params[payload_member] = _json_body(body)
        return params
    if body:
        document = _json_body(body)
        if not isinstance(document, dict):
            raise InvalidRequestException("The request body must be a JSON object")
        for member, spec in members.items():
            if "location" not in spec and member in document:
                params[member] = document[member]
    return params


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "boolean": (bool,),
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
    "timestamp": (int, float, str),
    "blob": (str, bytes),
}


class WrongTypeError(InvalidRequestException):
    """A member of the wrong JSON type (JSON 1.0/1.1 services call it a SerializationException)."""


def validate_input(
    service: ServiceModel, shape_name: str | None, params: Mapping[str, Any], *, required: bool = True
) -> None:
    """Required members and JSON types, worded like AWS's validation errors; nothing runs on a bad request."""
    if shape_name is None:
        return
    _validate(service, service.shapes[shape_name], params, "", required)


def _validate(service: ServiceModel, shape: Mapping[str, Any], value: Any, where: str, required: bool) -> None:
    kind = shape.get("type", "structure")
    expected = _JSON_TYPES.get(kind)
    wrong = expected is not None and (
        not isinstance(value, expected) or (kind != "boolean" and isinstance(value, bool))
    )
    if wrong and not (kind == "blob" and isinstance(value, (bytes, bytearray))):
        raise WrongTypeError(
            f"1 validation error detected: Value at '{where or 'request'}' failed to satisfy constraint: "
            f"Member must be of type {kind}"
        )
    if kind == "structure":
        for member in shape.get("required", []) if required else ():
            if member not in value:
                raise InvalidRequestException(
                    f"1 validation error detected: Value null at '{where + member}' failed to satisfy "
                    "constraint: Member must not be null"
                )
        for member, spec in shape.get("members", {}).items():
            if member in value and value[member] is not None:
                _validate(service, service.shapes[spec["shape"]], value[member], f"{where}{member}.", required)
    elif kind == "list":
        member_shape = service.shapes[shape["member"]["shape"]]
        for index, item in enumerate(value):
            _validate(service, member_shape, item, f"{where.rstrip('.')}[{index}].", required)
    elif kind == "map":
        value_shape = service.shapes[shape["value"]["shape"]]
        for key, item in value.items():
            _validate(service, value_shape, item, f"{where}{key}.", required)


def _json_body(body: bytes) -> Any:
    try:
        return jsonutil.loads_body(body)
    except ValueError as exc:
        raise InvalidRequestException(f"The request body is not valid JSON: {exc}") from exc
