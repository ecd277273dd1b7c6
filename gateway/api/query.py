"""The AWS query protocol (form-encoded `Action=...` requests, XML responses), driven by botocore's service models.

STS speaks it natively; SQS spoke it before its JSON protocol, and older botocore, the AWS CLI v1 and other SDKs
still send it. Requests are read into the same parameter dicts the JSON handlers take (blobs stay base64 text), and
results are written as the XML those clients parse. Wire names come from the model's `locationName`s, plus a table
for models that have dropped them since their move to JSON (`WireNames`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from gateway.errors import AwsError, InvalidRequestException


@dataclass(frozen=True)
class WireNames:
    """Wire names a model lacks: `members[(structure, member)]`, `list_members[list shape]`, `map_keys[map shape]`."""

    members: Mapping[tuple[str, str], str] = field(default_factory=dict)
    list_members: Mapping[str, str] = field(default_factory=dict)
    map_entries: Mapping[str, tuple[str, str]] = field(default_factory=dict)


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class InvalidParameterValue(AwsError):
    code = "InvalidParameterValue"
    http_status = 400


def _bad_value(raw: str, where: str, kind: str) -> InvalidParameterValue:
    return InvalidParameterValue(f"Value {raw} for parameter {where} is invalid. Reason: must be {kind}.")


class QueryCodec:
    def __init__(self, model: Mapping[str, Any], names: WireNames | None = None) -> None:
        self.model = model
        self.shapes: Mapping[str, Any] = model["shapes"]
        self.names = names or WireNames()
        self.namespace = model["metadata"].get("xmlNamespace") or ""

    # ---- requests --------------------------------------------------------------------------------------------------
    @staticmethod
    def form(body: bytes, query_string: str = "") -> dict[str, str]:
        """The request's parameters: the form body, plus any in the query string (GET requests)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestException("The request body is not valid UTF-8") from exc
        pairs = parse_qsl(query_string, keep_blank_values=True) + parse_qsl(text, keep_blank_values=True)
        return dict(pairs)

    def operation(self, action: str) -> Mapping[str, Any] | None:
        op = self.model["operations"].get(action)
        return op if isinstance(op, Mapping) else None

    def read_input(self, action: str, form: Mapping[str, str]) -> dict[str, Any]:
        op = self.operation(action) or {}
        shape_name = op.get("input", {}).get("shape")
        if shape_name is None:
            return {}
        value = self._read_struct(shape_name, form, "")
        return value if isinstance(value, dict) else {}

    def _member_name(self, struct: str, member: str, spec: Mapping[str, Any]) -> str:
        return self.names.members.get((struct, member)) or spec.get("locationName") or member

    def _read(self, shape_name: str, ref: Mapping[str, Any], form: Mapping[str, str], prefix: str) -> Any:
        shape = self.shapes[shape_name]
        kind = shape.get("type")
        if kind == "structure":
            return self._read_struct(shape_name, form, prefix)
        if kind == "list":
            return self._read_list(shape_name, ref, form, prefix)
        if kind == "map":
            return self._read_map(shape_name, ref, form, prefix)
        raw = form.get(prefix)
        if raw is None:
            return None
        if kind in ("integer", "long"):
            try:
                return int(raw)
            except ValueError:
                raise _bad_value(raw, prefix, "an integer") from None
        if kind in ("float", "double"):
            try:
                return float(raw)
            except ValueError:
                raise _bad_value(raw, prefix, "a number") from None
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise _bad_value(raw, prefix, "true or false")
            return raw.lower() == "true"
        return raw

    def _read_struct(self, shape_name: str, form: Mapping[str, str], prefix: str) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for member, spec in self.shapes[shape_name].get("members", {}).items():
            name = self._member_name(shape_name, member, spec)
            value = self._read(spec["shape"], spec, form, f"{prefix}.{name}" if prefix else name)
            if value is not None:
                out[member] = value
        return out if out or not prefix else None

    def _flattened(self, shape: Mapping[str, Any], ref: Mapping[str, Any]) -> bool:
        return bool(shape.get("flattened") or ref.get("flattened"))

    def _read_list(self, shape_name: str, ref: Mapping[str, Any], form: Mapping[str, str], prefix: str) -> Any:
        shape = self.shapes[shape_name]
        member_name = self.names.list_members.get(shape_name) or shape["member"].get("locationName")
        if self._flattened(shape, ref):
            base = ".".join([*prefix.split(".")[:-1], member_name]) if member_name else prefix
        else:
            base = f"{prefix}.{member_name or 'member'}"
        items = []
        index = 1
        while True:
            key = f"{base}.{index}"
            if key not in form and not any(k.startswith(key + ".") for k in form):
                break
            items.append(self._read(shape["member"]["shape"], shape["member"], form, key))
            index += 1
        if not items:
            return [] if form.get(prefix) == "" else None
        return items

    def _read_map(self, shape_name: str, ref: Mapping[str, Any], form: Mapping[str, str], prefix: str) -> Any:
        shape = self.shapes[shape_name]
        key_name, value_name = self._map_names(shape_name)
        base = prefix if self._flattened(shape, ref) else f"{prefix}.entry"
        out: dict[str, Any] = {}
        index = 1
        while f"{base}.{index}.{key_name}" in form:
            key = form[f"{base}.{index}.{key_name}"]
            out[key] = self._read(shape["value"]["shape"], shape["value"], form, f"{base}.{index}.{value_name}")
            index += 1
        return out or None

    def _map_names(self, shape_name: str) -> tuple[str, str]:
        if shape_name in self.names.map_entries:
            return self.names.map_entries[shape_name]
        shape = self.shapes[shape_name]
        return shape["key"].get("locationName", "key"), shape["value"].get("locationName", "value")

    # ---- responses -------------------------------------------------------------------------------------------------
    def response(self, action: str, result: Mapping[str, Any] | None) -> bytes:
        op = self.operation(action) or {}
        output = op.get("output") or {}
        body = ""
        if output.get("shape"):
            wrapper = output.get("resultWrapper") or f"{action}Result"
            body = f"<{wrapper}>{self._write_struct(output['shape'], result or {})}</{wrapper}>"
        xmlns = f' xmlns="{self.namespace}"' if self.namespace else ""
        return (
            f'<?xml version="1.0"?><{action}Response{xmlns}>{body}'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
        ).encode()

    def error(self, code: str, message: str, sender: bool) -> bytes:
        xmlns = f' xmlns="{self.namespace}"' if self.namespace else ""
        return (
            f'<?xml version="1.0"?><ErrorResponse{xmlns}><Error><Type>{"Sender" if sender else "Receiver"}</Type>'
            f"<Code>{_text(code)}</Code><Message>{_text(message)}</Message><Detail/></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()

    def _write(self, shape_name: str, ref: Mapping[str, Any], name: str, value: Any) -> str:
        shape = self.shapes[shape_name]
        kind = shape.get("type")
        if kind == "structure":
            return f"<{name}>{self._write_struct(shape_name, value)}</{name}>"
        if kind == "list":
            member_ref = shape["member"]
            item_name = self.names.list_members.get(shape_name) or member_ref.get("locationName")
            if self._flattened(shape, ref):
                return "".join(self._write(member_ref["shape"], member_ref, item_name or name, v) for v in value)
            inner = "".join(self._write(member_ref["shape"], member_ref, item_name or "member", v) for v in value)
            return f"<{name}>{inner}</{name}>"
        if kind == "map":
            key_name, value_name = self._map_names(shape_name)
            entries = [
                f"<{key_name}>{_text(str(k))}</{key_name}>"
                + self._write(shape["value"]["shape"], shape["value"], value_name, v)
                for k, v in value.items()
            ]
            if self._flattened(shape, ref):
                return "".join(f"<{name}>{entry}</{name}>" for entry in entries)
            return f"<{name}>{''.join(f'<entry>{entry}</entry>' for entry in entries)}</{name}>"
        return f"<{name}>{_text(_scalar(kind, value))}</{name}>"

    def _write_struct(self, shape_name: str, value: Mapping[str, Any]) -> str:
        parts = []
        for member, spec in self.shapes[shape_name].get("members", {}).items():
            if member in value and value[member] is not None:
                name = self._member_name(shape_name, member, spec)
                parts.append(self._write(spec["shape"], spec, name, value[member]))
        return "".join(parts)


def _scalar(kind: str | None, value: Any) -> str:
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _text(value: str) -> str:
    return escape(_XML_BAD.sub("\ufffd", value))
