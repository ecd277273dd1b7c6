"""The MQTT 5 properties a device type puts on its telemetry: user properties from templates and a content type,
encoded once per device when the templates do not use per-message variables (`seq`, `timestamp`)."""

from __future__ import annotations

from collections.abc import Mapping

from devices.spec import DeviceSpec
from mqttwire import properties as mp

_PER_MESSAGE = frozenset({"seq", "timestamp"})


class TelemetryProperties:
    """`block` is the encoded property block when it never changes (None: call render() per message, or nothing to
    send when `empty`)."""

    def __init__(self, spec: DeviceSpec, variables: Mapping[str, object]) -> None:
        self.spec = spec
        self.empty = spec.protocol != 5 or not (spec.user_properties or spec.content_type)
        self.block: bytes | None = None
        per_message = any(template.names & _PER_MESSAGE for _, template in spec.user_properties)
        if not self.empty and not per_message:
            self.block = self.render(variables)

    def render(self, variables: Mapping[str, object]) -> bytes | None:
        """The encoded property block for one message (its `seq` and `timestamp` in `variables`)."""
        if self.empty:
            return None
        props: mp.Properties = {}
        if self.spec.content_type is not None:
            props[mp.CONTENT_TYPE] = self.spec.content_type
        if self.spec.user_properties:
            props[mp.USER_PROPERTY] = [(key, template.render(variables)) for key, template in self.spec.user_properties]
        return mp.encode_properties(props)
