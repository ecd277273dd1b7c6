"""Fleet files: the YAML/TOML format (pydantic), errors that name file, line and field, and expansion into devices."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from devices.fleet_source import FleetFileError, FleetProblem, Loc, format_path, line_of, read_toml, read_yaml
from devices.profiles import ProfileSpec
from devices.template import Template, TemplateError, compile_template

__all__ = [
    "PAYLOAD_VARIABLES",
    "AuthSpec",
    "CommandSpec",
    "DeviceSpec",
    "DeviceTypeSpec",
    "FaultSpec",
    "FleetFileError",
    "FleetProblem",
    "FleetSpec",
    "JobsSpec",
    "OfflineWindow",
    "PayloadValue",
    "ProvisioningSpec",
    "RebootSpec",
    "ShadowSpec",
    "expand",
    "load_fleet",
    "parse_fleet",
]


_NAME_VARIABLES = frozenset({"fleet", "type", "i", "n", "ordinal"})
_CLIENT_VARIABLES = _NAME_VARIABLES | {"thing_name"}
_TOPIC_VARIABLES = _CLIENT_VARIABLES | {"client_id"}
PAYLOAD_VARIABLES = frozenset({"fleet", "type", "i", "ordinal", "thing_name", "client_id", "seq", "timestamp"})

# AWS IoT limits, mirrored from gateway/ (devices/ must not import it): registry name patterns, MQTT topic limits.
_THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}")
_ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}")
_MAX_TOPIC_BYTES = 256
_MAX_TOPIC_SLASHES = 7
_MAX_CLIENT_ID_BYTES = 128
_MAX_SESSION_EXPIRY_S = 7 * 24 * 3600  # AWS IoT's maximum MQTT 5 Session Expiry Interval
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- field types -----------------------------------------------------------------------------------


def _template_validator(allowed: frozenset[str], default: str | None = None) -> Callable[[object], Template]:
    def validate(value: object) -> Template:
        if value is None and default is not None:
            value = default
        if isinstance(value, Template) and value.names <= allowed:
            return value
        if isinstance(value, Template):
            value = value.text
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string (a template)")
        try:
            return compile_template(value, allowed)
        except TemplateError as exc:
            raise PydanticCustomError("template", "{error}", {"error": f"{exc} of {json.dumps(value)}"}) from None

    return validate


def _template_text(template: Template) -> str:
    return template.text


_AS_TEXT = PlainSerializer(_template_text, return_type=str)
ThingNameTemplate = Annotated[Template, PlainValidator(_template_validator(_NAME_VARIABLES)), _AS_TEXT]
ClientTemplate = Annotated[Template, PlainValidator(_template_validator(_CLIENT_VARIABLES)), _AS_TEXT]
TopicTemplate = Annotated[Template, PlainValidator(_template_validator(_TOPIC_VARIABLES)), _AS_TEXT]
PayloadTemplate = Annotated[Template, PlainValidator(_template_validator(PAYLOAD_VARIABLES)), _AS_TEXT]
PolicyTemplate = Annotated[
    Template, PlainValidator(_template_validator(frozenset({"fleet"}), "edgesim-fleet-{fleet}")), _AS_TEXT
]


def _seconds(value: object) -> object:
    """Numbers are seconds; strings may carry a unit: '500ms', '5s', '2m', '1h'."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise PydanticCustomError(
                "duration", "Input should be seconds or a duration such as '500ms', '5s', '2m', '1h'"
            )
        return float(match[1]) * _UNITS[match[2] or "s"]
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "Input should be seconds, not a boolean")
    return value


def _pair(value: object) -> object:
    return value if isinstance(value, list | tuple) else (value, value)


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise PydanticCustomError("range", "[min, max] should have min <= max, got {value}", {"value": list(value)})
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
SecondsRange = Annotated[tuple[Seconds, Seconds], BeforeValidator(_pair), AfterValidator(_ordered)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _payload_kind(value: object) -> str | None:
    if isinstance(value, BaseModel):
        return "profile"
    if isinstance(value, dict):
        return "profile" if "profile" in value else "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str | Template):
        return "template"
    if value is None or isinstance(value, bool | int | float):
        return "scalar"
    return None


# The payload language: a mapping with a `profile` key is a generator, a string a template, the rest JSON.
if TYPE_CHECKING:
    PayloadValue: TypeAlias = (
        ProfileSpec | Template | dict[str, "PayloadValue"] | list["PayloadValue"] | bool | int | float | None
    )
else:
    PayloadValue = TypeAliasType(
        "PayloadValue",
        Annotated[
            Annotated[ProfileSpec, Tag("profile")]
            | Annotated[dict[str, "PayloadValue"], Tag("object")]
            | Annotated[list["PayloadValue"], Tag("array")]
            | Annotated[PayloadTemplate, Tag("template")]
            | Annotated[bool | int | float | None, Tag("scalar")],
            Discriminator(
                _payload_kind,
                custom_error_type="payload_type",
                custom_error_message="Input should be a mapping, list, string, number, boolean or null",
            ),
        ],
    )
_PAYLOAD_TAGS = frozenset({"object", "array", "profile", "template", "scalar"})


# --- the file format -------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OfflineWindow(_Model):
    """Seconds since the device started; with `every`, the window repeats."""

    start: Seconds
    duration: PositiveSeconds
    every: PositiveSeconds | None = None

    @model_validator(mode="after")
    def _repeat_after_end(self) -> OfflineWindow:
        if self.every is not None and self.every <= self.duration:
            raise PydanticCustomError("window", "every ({every}) should be longer than duration", {"every": self.every})
        return self


class FaultSpec(_Model):
    """Injected faults; every one defaults to off."""

    disconnect_per_hour: float = Field(default=0.0, ge=0)
    reconnect_after: SecondsRange = (1.0, 5.0)
    offline_windows: list[OfflineWindow] = []
    clock_skew: Seconds = 0.0
    malformed_fraction: Fraction = 0.0
    oversized_fraction: Fraction = 0.0


class ShadowSpec(_Model):
    """The device's shadow: `name` None is the classic shadow; `initial` is reported at connect."""

    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9:_-]{1,64}$")
    initial: dict[str, PayloadValue] = {}
    apply_delta: bool = True
    delta_delay: SecondsRange = (0.5, 0.5)


class CommandSpec(_Model):
    """A topic (filter) the device subscribes to, and where it replies `{"ok": true, "command": ...}`."""

    topic: TopicTemplate = Field(default="cmd/{thing_name}", validate_default=True)
    reply_topic: TopicTemplate | None = None


class RebootSpec(_Model):
    """After installing, the device goes offline for `downtime` (a clean DISCONNECT), reconnects, and only then reports
    the execution SUCCEEDED, as a firmware update that needs a restart does."""

    downtime: SecondsRange = (1.0, 3.0)


class JobsSpec(_Model):
    """The device runs a job agent (AWS IoT Jobs MQTT API): on `notify-next` it starts the next execution, downloads
    the URL in the job document, reports progress in `statusDetails` and ends SUCCEEDED with probability
    `success_rate`, else FAILED, after a duration drawn from `duration` by `distribution`."""

    success_rate: Fraction = 1.0
    duration: SecondsRange = (1.0, 5.0)
    distribution: Literal["uniform", "normal", "exponential"] = "uniform"
    progress_steps: int = Field(default=2, ge=0, le=20)
    download: bool = True
    url_field: str | None = Field(default=None, min_length=1, max_length=256)  # dotted path; default: the first URL
    firmware_version: str = Field(default="1.0.0", min_length=1, max_length=128)
    version_field: str = Field(default="version", min_length=1, max_length=256)  # dotted path in the job document
    shadow_field: str | None = Field(default="firmware_version", pattern=r"^[A-Za-z0-9_-]{1,128}$")
    reboot: RebootSpec | None = None
    step_timeout_minutes: int | None = Field(default=None, ge=1, le=10080)


class DeviceTypeSpec(_Model):
    """`count` devices sharing templates, timing, payload, shadow, commands and faults."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)
    count: int = Field(ge=0, le=1_000_000)
    thing_type: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9:_-]{1,128}$")
    thing_name: ThingNameTemplate = Field(default="{fleet}-{type}-{i:04d}", validate_default=True)
    client_id: ClientTemplate = Field(default="{thing_name}", validate_default=True)
    attributes: dict[Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.,@/:#-]{1,128}$")], ClientTemplate] = {}
    topic: TopicTemplate = Field(default="dt/{fleet}/{type}/{thing_name}/telemetry", validate_default=True)
    interval: PositiveSeconds = 5.0
    jitter: Fraction = 0.1
    qos: Literal[0, 1] = 1
    protocol: Literal["mqtt3", "mqtt5"] = "mqtt3"
    user_properties: dict[Annotated[str, Field(min_length=1, max_length=1024)], PayloadTemplate] = {}
    content_type: str | None = Field(default=None, min_length=1, max_length=1024)
    topic_aliases: bool = True
    session_expiry: Annotated[int, BeforeValidator(_seconds), Field(ge=0, le=_MAX_SESSION_EXPIRY_S)] = 0
    payload: dict[str, PayloadValue] = {}
    shadow: ShadowSpec | None = None
    commands: CommandSpec | None = None
    faults: FaultSpec = FaultSpec()
    jobs: JobsSpec | None = None

    @field_validator("user_properties", "content_type", "session_expiry")
    @classmethod
    def _needs_mqtt5(cls, value: object, info: ValidationInfo) -> object:
        if value and info.data.get("protocol") != "mqtt5":
            raise PydanticCustomError("needs_mqtt5", "{field} needs `protocol: mqtt5`", {"field": info.field_name})
        return value

    @field_validator("user_properties")
    @classmethod
    def _no_nul(cls, value: dict[str, Template]) -> dict[str, Template]:
        for key, template in value.items():
            if "\x00" in key or "\x00" in template.text:
                raise PydanticCustomError("user_property", "user properties must not contain NUL")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_count(cls, value: dict[str, Template], info: ValidationInfo) -> dict[str, Template]:
        cap = 50 if info.data.get("thing_type") else 3  # AWS: 50 attributes with a thing type, 3 without
        if len(value) > cap:
            raise PydanticCustomError("too_many_attributes", "at most {cap} attributes here (AWS limit)", {"cap": cap})
        return value


class ProvisioningSpec(_Model):
    """How devices get their certificates. `claim`: every device boots with the fleet's claim certificate and gets its
    own through the provisioning MQTT API (`template` names the provisioning template; `parameters` are rendered per
    device). `jitp` / `jitr`: every device has a certificate from the fleet's own CA, registered with
    auto-registration (and, for `jitp`, the JITP provisioning template `template`); the gateway registers it on the
    device's first connect."""

    by: Literal["claim", "jitp", "jitr"]
    template: str | None = Field(default=None, pattern=r"^[0-9A-Za-z_-]{1,36}$")
    parameters: dict[Annotated[str, Field(min_length=1, max_length=2048)], ClientTemplate] = Field(
        default={"ThingName": "{thing_name}"}, validate_default=True
    )

    @model_validator(mode="after")
    def _template_when_needed(self) -> ProvisioningSpec:
        if self.by != "jitr" and self.template is None:
            raise PydanticCustomError("template", "`by: {by}` needs a `template`", {"by": self.by})
        return self


class AuthSpec(_Model):
    """`by: custom-authorizer`: devices connect without a client certificate (TLS with ALPN `mqtt`, AWS IoT's port 443
    way) and send `<username>?x-amz-customauthorizer-name=<authorizer>` (plus the token, if any) and the password,
    for the named custom authorizer to judge. `by: sigv4-websocket`: devices connect over a WebSocket at a
    SigV4-presigned `/mqtt?X-Amz-...` URL (keys from the file, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_SESSION_TOKEN)."""

    by: Literal["custom-authorizer", "sigv4-websocket"]
    authorizer: str | None = Field(default=None, pattern=r"^[\w=,@-]{1,128}$")
    access_key_id: str | None = Field(default=None, min_length=1)
    secret_access_key: str | None = Field(default=None, min_length=1)
    session_token: str | None = None
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    username: ClientTemplate = Field(default="{thing_name}", validate_default=True)
    password: str | None = None
    token_key_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    token: str | None = None
    signature: str | None = None

    @model_validator(mode="after")
    def _authorizer_named(self) -> AuthSpec:
        if self.by == "custom-authorizer" and self.authorizer is None:
            raise PydanticCustomError("authorizer", "`by: custom-authorizer` needs an `authorizer`")
        return self


class FleetSpec(_Model):
    """A whole fleet file. Build it with `parse_fleet`/`load_fleet` so errors can name lines."""

    fleet: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    seed: int = 0
    policy_name: PolicyTemplate = Field(default=None, validate_default=True)
    device_types: list[DeviceTypeSpec] = Field(min_length=1)
    provisioning: ProvisioningSpec | None = None
    auth: AuthSpec | None = None
    _source: str = PrivateAttr(default="<fleet>")
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _devices: list[DeviceSpec] | None = PrivateAttr(default=None)

    @field_validator("policy_name")
    @classmethod
    def _policy_name_valid(cls, value: Template, info: ValidationInfo) -> Template:
        fleet = info.data.get("fleet")
        if fleet is not None and not _POLICY_NAME.fullmatch(name := value.render({"fleet": fleet})):
            raise PydanticCustomError("policy_name", "{name!r} is not a valid AWS policy name", {"name": name})
        return value

    @model_validator(mode="after")
    def _one_identity(self) -> FleetSpec:
        if self.auth is not None and self.provisioning is not None:
            raise PydanticCustomError("auth", "a fleet has either `auth` (no certificates) or `provisioning`, not both")
        return self

    @property
    def device_count(self) -> int:
        return sum(t.count for t in self.device_types)

    def render_policy_name(self) -> str:
        return self.policy_name.render({"fleet": self.fleet})


# --- errors that point at the file -----------------------------------------------------------------


_FIELD_NAMES = sorted(
    {
        name
        for model in (
            *(
                FleetSpec,
                DeviceTypeSpec,
                ShadowSpec,
                CommandSpec,
                FaultSpec,
                OfflineWindow,
                ProvisioningSpec,
                AuthSpec,
                JobsSpec,
                RebootSpec,
            ),
            *get_args(get_args(ProfileSpec)[0]),
        )
        for name in model.model_fields
    }
)


def _clean_loc(loc: Sequence[str | int]) -> Loc:
    """Drop pydantic's union tags and `[key]` markers so the loc follows the data."""
    out: list[str | int] = []
    items = [item for item in loc if item != "[key]"]
    i = 0
    while i < len(items):
        out.append(items[i])
        i += 1
        if out[0] == "device_types" and tuple(out[2:]) in (("payload",), ("shadow", "initial")):
            # payload: key, tag, key, tag, ...; a `profile` tag is followed by the profile's own tag.
            while i < len(items):
                out.append(items[i])
                tag = items[i + 1] if i + 1 < len(items) else None
                i += 2
                if tag in ("object", "array"):
                    continue
                if tag == "profile" and i < len(items):
                    i += 1
                out.extend(items[i:] if tag in _PAYLOAD_TAGS else items[i - 1 :])
                i = len(items)
    return tuple(out)


def _problem(source: str, lines: Mapping[Loc, int], error: Mapping[str, Any]) -> FleetProblem:
    loc = _clean_loc(error["loc"])
    message = str(error["msg"])
    if error["type"] == "union_tag_invalid":
        loc = (*loc, "profile")
    elif error["type"] == "extra_forbidden" and loc:
        message = f"unknown field {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), _FIELD_NAMES, n=1, cutoff=0.75)
        message += f" (did you mean {close[0]!r}?)" if close else " (extra fields are not permitted)"
    elif "[key]" in error["loc"]:
        message = f"invalid key: {message}"
    return FleetProblem(source, line_of(lines, loc), format_path(loc), message)


def parse_fleet(text: str, source: str = "<string>") -> FleetSpec:
    """Parse and fully validate a fleet file's text (TOML when `source` ends in .toml, else YAML)."""
    read = read_toml if source.endswith(".toml") else read_yaml
    data, lines, problems = read(text, source)
    if isinstance(data, dict):  # top-level `x-...` keys are free, e.g. to hold YAML anchors
        data = {key: value for key, value in data.items() if not str(key).startswith("x-")}
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(source, lines, error) for error in exc.errors()]
        raise FleetFileError(problems) from None
    if problems:
        raise FleetFileError(problems)
    spec._source = source
    spec._lines = lines
    _all_devices(spec)  # rendered names and topics must be valid and unique
    return spec


def load_fleet(path: Path) -> FleetSpec:
    """Read and validate a fleet file (`.toml` is TOML, anything else YAML); raises `FleetFileError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError([FleetProblem(str(path), 0, "", f"cannot read the file: {exc}")]) from None
    return parse_fleet(text, str(path))


# --- expansion -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device, fully rendered; `payload` and `shadow.initial` keep compiled templates and profiles."""

    ordinal: int  # 0-based over the whole fleet
    fleet: str
    type_name: str
    index: int  # 0-based within its device type
    count: int  # devices of this type
    thing_name: str
    client_id: str
    thing_type: str | None
    attributes: dict[str, str]
    topic: str
    interval: float
    jitter: float
    qos: int
    payload: Mapping[str, PayloadValue] = field(repr=False)
    shadow: ShadowSpec | None
    command_topic: str | None
    reply_topic: str | None
    faults: FaultSpec
    seed: int
    clock_skew: float
    protocol: int = 4  # 4: MQTT 3.1.1, 5: MQTT 5
    user_properties: tuple[tuple[str, Template], ...] = ()  # rendered per message with the payload's variables
    content_type: str | None = None
    topic_aliases: bool = True
    session_expiry: int = 0
    jobs: JobsSpec | None = None

    def variables(self) -> dict[str, object]:
        """Payload template variables; the caller adds the per-message `seq` and `timestamp`."""
        return {
            "fleet": self.fleet,
            "type": self.type_name,
            "i": self.index,
            "ordinal": self.ordinal,
            "thing_name": self.thing_name,
            "client_id": self.client_id,
        }


def expand(spec: FleetSpec, shard: tuple[int, int] | None = None) -> list[DeviceSpec]:
    """Every device in fleet order, or shard `(k, n)`: the devices with `ordinal % n == k`."""
    devices = _all_devices(spec)
    if shard is None:
        return list(devices)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: need 0 <= k < n")
    return devices[k::n]


def _device_seed(fleet_seed: int, ordinal: int) -> int:
    """A stable 64-bit seed per device: the same on every run, machine and Python version (unlike `hash`)."""
    digest = hashlib.blake2b(b"%d:%d" % (fleet_seed, ordinal), digest_size=8, person=b"edgesim-device")
    return int.from_bytes(digest.digest(), "big")


def _clock_skew(seed: int, limit: float) -> float:
    """This device's fixed skew, uniform in [-limit, limit], drawn from its seed."""
    if limit <= 0:
        return 0.0
    digest = hashlib.blake2b(b"%d" % seed, digest_size=8, person=b"edgesim-skew")
    return (2 * int.from_bytes(digest.digest(), "big") / 2**64 - 1) * limit


def _topic_problem(topic: str, *, wildcards: bool = False) -> str | None:
    if not topic or "\x00" in topic:
        return "topics must be non-empty and free of NUL"
    counted = topic[len("$aws/rules/") :].partition("/")[2] if topic.startswith("$aws/rules/") else topic
    for level in topic.split("/") if wildcards else ():
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            return "'+' and '#' must fill a whole topic level"
    if "#" in topic.rpartition("/")[0] if wildcards else "+" in topic or "#" in topic:
        return "'#' must be the last level" if wildcards else "a topic to publish to cannot contain '+' or '#'"
    if len(counted.encode()) > _MAX_TOPIC_BYTES or counted.count("/") > _MAX_TOPIC_SLASHES:
        return f"topics are limited to {_MAX_TOPIC_BYTES} bytes and {_MAX_TOPIC_SLASHES} slashes (AWS limit)"
    return None


def _filter_problem(topic: str) -> str | None:
    return _topic_problem(topic, wildcards=True)


def _no_problem(text: str) -> str | None:
    return None


def _thing_name_problem(name: str) -> str | None:
    return None if _THING_NAME.fullmatch(name) else "thing names are 1-128 characters of a-z A-Z 0-9 : _ -"


def _client_id_problem(client_id: str) -> str | None:
    ok = 0 < len(client_id.encode()) <= _MAX_CLIENT_ID_BYTES
    return None if ok else f"client ids are 1-{_MAX_CLIENT_ID_BYTES} bytes"


def _attribute_problem(value: str) -> str | None:
    return None if _ATTRIBUTE_VALUE.fullmatch(value) else "attribute values are up to 800 of a-z A-Z 0-9 _.,@/:#=[]-"


class _Expander:
    """Renders every device once, collecting at most one problem per field and every name clash."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.issues: dict[Loc, str] = {}
        self.owners: dict[str, dict[str, tuple[int, int]]] = {"thing_name": {}, "client_id": {}}
        self.clashes: dict[tuple[str, int, int], list[Any]] = {}
        self.failures = 0

    def render(self, template: Template, env: dict[str, object], loc: Loc, check: Callable[[str], str | None]) -> str:
        """The rendered text; on failure records an issue, counts it in `failures` and returns ''."""
        try:
            text = template.render(env)
        except TemplateError as exc:
            self.issues.setdefault(loc, f"cannot render {json.dumps(template.text)} for i={env['i']}: {exc}")
            self.failures += 1
            return ""
        problem = check(text)
        if problem is not None:
            self.issues.setdefault(loc, f"renders {text!r} for i={env['i']}: {problem}")
            self.failures += 1
        return text

    def device_type(self, t: int, dtype: DeviceTypeSpec, ordinal: int, out: list[DeviceSpec]) -> None:
        """Append the devices of `dtype` (whose first ordinal is `ordinal`) to `out`."""
        base: Loc = ("device_types", t)
        render = self.render
        fleet, name, count, faults, commands = self.spec.fleet, dtype.name, dtype.count, dtype.faults, dtype.commands
        thing_loc, client_loc, topic_loc = (*base, "thing_name"), (*base, "client_id"), (*base, "topic")
        command_loc, reply_loc = (*base, "commands", "topic"), (*base, "commands", "reply_topic")
        attributes = [(key, template, (*base, "attributes", key)) for key, template in dtype.attributes.items()]
        protocol = 5 if dtype.protocol == "mqtt5" else 4
        user_properties = tuple(dtype.user_properties.items())
        for i in range(count):
            failures = self.failures
            env: dict[str, object] = {"fleet": fleet, "type": name, "i": i, "n": count, "ordinal": ordinal + i}
            env["thing_name"] = thing = render(dtype.thing_name, env, thing_loc, _thing_name_problem)
            if self.failures != failures:
                continue  # the other fields may depend on the thing name
            env["client_id"] = client = render(dtype.client_id, env, client_loc, _client_id_problem)
            attrs = {key: render(template, env, loc, _attribute_problem) for key, template, loc in attributes}
            topic = render(dtype.topic, env, topic_loc, _topic_problem)
            command_topic = reply_topic = None
            if commands is not None:
                command_topic = render(commands.topic, env, command_loc, _filter_problem)
                if commands.reply_topic is not None:
                    reply_topic = render(commands.reply_topic, env, reply_loc, _topic_problem)
            if user_properties:
                message_env = {**env, "seq": 0, "timestamp": 0}
                for key, template in user_properties:
                    render(template, message_env, (*base, "user_properties", key), _no_problem)
            if self.failures != failures:
                continue
            if self.claim("thing_name", thing, t, i):
                self.claim("client_id", client, t, i)
            seed = _device_seed(self.spec.seed, ordinal + i)
            skew = _clock_skew(seed, faults.clock_skew)
            out.append(
                DeviceSpec(
                    ordinal + i, fleet, name, i, count, thing, client, dtype.thing_type, attrs, topic,
                    dtype.interval, dtype.jitter, dtype.qos, dtype.payload, dtype.shadow,
                    command_topic, reply_topic, faults, seed, skew, protocol, user_properties,
                    dtype.content_type, dtype.topic_aliases, dtype.session_expiry, dtype.jobs,
                )
            )  # fmt: skip

    def claim(self, kind: str, value: str, t: int, i: int) -> bool:
        """Record `value` as used by device (t, i); False (and a clash) when another device has it."""
        owner = self.owners[kind].setdefault(value, (t, i))
        if owner == (t, i):
            return True
        clash = self.clashes.setdefault((kind, owner[0], t), [0, value, owner[1], i])
        clash[0] += 1
        return False

    def run(self) -> list[DeviceSpec]:
        first: dict[str, int] = {}
        for t, dtype in enumerate(self.spec.device_types):
            if first.setdefault(dtype.name, t) != t:
                self.issues[("device_types", t, "name")] = (
                    f"duplicate device type name (also device_types[{first[dtype.name]}])"
                )
        devices: list[DeviceSpec] = []
        ordinal = 0
        for t, dtype in enumerate(self.spec.device_types):
            self.device_type(t, dtype, ordinal, devices)
            ordinal += dtype.count
        types = self.spec.device_types
        for (kind, a, b), (count, value, ia, ib) in self.clashes.items():
            also = f"; {count} clashes between them in all" if count > 1 else ""
            what = f"duplicate {kind.replace('_', ' ')} {value!r}: device types {types[a].name!r} (i={ia})"
            self.issues.setdefault(("device_types", b, kind), f"{what} and {types[b].name!r} (i={ib}){also}")
        return devices


def _all_devices(spec: FleetSpec) -> list[DeviceSpec]:
    """The whole fleet, rendered and checked once per spec (cached: the spec is frozen)."""
    if spec._devices is None:
        expander = _Expander(spec)
        devices = expander.run()
        if expander.issues:
            lines = spec._lines
            raise FleetFileError(
                [
                    FleetProblem(spec._source, line_of(lines, loc), format_path(loc), message)
                    for loc, message in expander.issues.items()
                ]
            )
        spec._devices = devices
    return spec._devices
