"""An edge core's configuration file (YAML): the cloud link, local broker, spooler, bridge, components and
ShadowManager sync, validated with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.edge.components import ComponentConfig
from gateway.edge.shadow_sync import ShadowSyncConfig, SyncConfigError, parse_sync_config
from gateway.edge.spool import DEFAULT_MAX_SIZE_BYTES
from gateway.errors import ConfigError, InvalidRequestException
from gateway.topics import validate_topic_filter

Endpoint = Literal["LocalMqtt", "Pubsub", "IotCore"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CloudConfig(_Model):
    endpoint: str = Field(default="http://127.0.0.1:4566", description="the gateway's HTTP API, for provisioning")
    target: str = Field(default="mqtts://127.0.0.1:8883", description="the gateway's mutual-TLS MQTT listener")
    ca: Path | None = Field(default=None, description="CA to trust for the gateway; default: the local CA")
    keepalive: int = Field(default=60, ge=0, le=1200)
    max_in_flight: int = Field(default=5, ge=1, le=100, alias="maxInFlightPublishes")
    protocol: Literal["mqtt3", "mqtt5"] = Field(
        default="mqtt3", description="MQTT version of the cloud link: mqtt5 carries bridged messages' MQTT 5 properties"
    )


class LocalBrokerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=0, le=65535, description="plain MQTT for local devices; 0 picks a free port")
    tls_port: int | None = Field(
        default=None, ge=0, le=65535, description="mutual TLS with certificates the core issues"
    )


class SpoolConfig(_Model):
    max_size_bytes: int = Field(default=DEFAULT_MAX_SIZE_BYTES, ge=1, alias="maxSizeInBytes")
    keep_qos0_when_offline: bool = Field(default=False, alias="keepQos0WhenOffline")
    on_full: Literal["reject_new", "drop_oldest"] = "reject_new"


class FleetStatusConfig(_Model):
    """How often the core reports its health to the cloud (Greengrass's `fleetStatus` nucleus setting; its default is
    a day, edgesim's 10 s so a dashboard stays current). Reports also go out on each (re)connect and component
    status change (gateway/edge/status.py)."""

    interval_s: int = Field(default=10, ge=1, alias="periodicStatusPublishIntervalSeconds")


class TopicMapping(_Model):
    """One entry of the MQTT bridge's `mqttTopicMapping` (reference §11.3)."""

    topic: str
    source: Endpoint
    target: Endpoint
    target_topic_prefix: str = Field(default="", alias="targetTopicPrefix")

    @field_validator("topic")
    @classmethod
    def _filter(cls, value: str) -> str:
        try:
            validate_topic_filter(value)
        except InvalidRequestException as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _differ(self) -> TopicMapping:
        if self.source == self.target:
            raise ValueError(f"source and target must differ (both are {self.source})")
        return self


class EdgeConfig(_Model):
    thing_name: str | None = Field(default=None, description="the core's thing; default: the NAME given to `edge run`")
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    local_broker: LocalBrokerConfig = Field(default_factory=LocalBrokerConfig)
    spooler: SpoolConfig = Field(default_factory=SpoolConfig)
    fleet_status: FleetStatusConfig = Field(default_factory=FleetStatusConfig, alias="fleetStatus")
    components_dir: Path | None = None
    components: list[ComponentConfig] = Field(default_factory=list)
    mqtt_topic_mapping: dict[str, TopicMapping] = Field(default_factory=dict, alias="mqttTopicMapping")
    shadow_manager: dict[str, Any] = Field(default_factory=dict, alias="shadowManager")

    @model_validator(mode="after")
    def _unique_components(self) -> EdgeConfig:
        names = [c.name for c in self.components]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"component names must be unique: {', '.join(repeated)}")
        if self.components and self.components_dir is None:
            raise ValueError("components need components_dir: the folder their handler modules live in")
        return self

    def shadow_sync(self) -> ShadowSyncConfig:
        return parse_sync_config(self.shadow_manager)


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"


def parse_edge_config(raw: object, source: str = "<config>", base_dir: Path | None = None) -> EdgeConfig:
    """Validate a parsed config; relative paths are taken from `base_dir` (the config file's folder)."""
    if raw is None:
        raw = {}
    try:
        config = EdgeConfig.model_validate(raw)
        config.shadow_sync()
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"{source}: {problems}") from None
    except SyncConfigError as exc:
        raise ConfigError(f"{source}: shadowManager: {exc}") from None
    if base_dir is not None:
        updates: dict[str, Any] = {}
        if config.components_dir is not None and not config.components_dir.is_absolute():
            updates["components_dir"] = (base_dir / config.components_dir).resolve()
        if config.cloud.ca is not None and not config.cloud.ca.is_absolute():
            updates["cloud"] = config.cloud.model_copy(update={"ca": (base_dir / config.cloud.ca).resolve()})
        config = config.model_copy(update=updates)
    return config


def load_edge_config(path: Path) -> EdgeConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_edge_config(raw, str(path), path.parent)


def with_overrides(config: EdgeConfig, overrides: dict[str, dict[str, Any]]) -> EdgeConfig:
    """The config with some fields of some sections replaced (None values are left alone): command-line options."""
    for section, values in overrides.items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            part = getattr(config, section).model_copy(update=kept)
            config = config.model_copy(update={section: part})
    return config
