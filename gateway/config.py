"""Gateway configuration: ports, directories and limits, from flags, environment or defaults."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from gateway import limits


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGESIM_HOME", ".edgesim"))


def default_certs_dir() -> Path:
    return Path(os.environ.get("EDGESIM_CERTS", "certs"))


class MqttLimits(BaseModel):
    """AWS IoT per-connection quotas; the defaults are AWS's, benchmarks lift them."""

    max_payload_bytes: int = limits.MAX_PAYLOAD_BYTES
    max_topic_bytes: int = limits.MAX_TOPIC_BYTES
    max_topic_slashes: int = limits.MAX_TOPIC_SLASHES
    max_client_id_bytes: int = limits.MAX_CLIENT_ID_BYTES
    publishes_per_second: int = Field(
        default=limits.PUBLISHES_PER_SECOND_PER_CONNECTION,
        description="inbound PUBLISH packets per second per connection; 0 turns the quota off",
    )
    subscriptions_per_connection: int = limits.SUBSCRIPTIONS_PER_CONNECTION
    resume_messages_per_second: int = Field(
        default=10, description="queued messages sent per second to a returning persistent session (AWS: 10; 0: all)"
    )
    min_keep_alive_s: int = Field(
        default=30, description="AWS raises a client's keep-alive to at least this (30 s); tests lower it"
    )
    connect_timeout_s: float = Field(
        default=10.0,
        description="seconds from accept within which a client must have sent its CONNECT (and, over TLS, finished"
        " its handshake); a client dribbling bytes gets no more time",
    )
    max_session_expiry_s: int = Field(
        default=3600,
        description="how long a persistent session outlives its connection at most (AWS's default quota: 1 hour;"
        " AWS allows up to 7 days): MQTT 3.1.1 sessions get this, MQTT 5 ones their own interval clamped to it",
    )
    inflight_qos1: int = limits.INFLIGHT_QOS1_PER_CLIENT
    held_acks: int = Field(
        default_factory=lambda: int(os.environ.get("EDGESIM_MQTT_HELD_ACKS", str(limits.INFLIGHT_QOS1_PER_CLIENT))),
        description="PUBACKs one publisher may have waiting for durable rule actions (default: the Receive Maximum"
        " MQTT 5 clients are given); at this many its connection is not read until half have gone out (TCP slows"
        " the device instead of the gateway queueing without bound)",
    )
    outgoing_queue_bytes: int = Field(
        default=4 * 1024 * 1024,
        description="bytes buffered for a slow subscriber before QoS 0 messages to it are dropped",
    )


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class HttpLimits(BaseModel):
    """The HTTP API listener against slow and hostile clients (environment variables lift them without a flag)."""

    header_timeout_s: float = Field(
        default_factory=lambda: _env_float("EDGESIM_HTTP_HEADER_TIMEOUT_S", limits.HTTP_HEADER_TIMEOUT_S),
        description="a request head must arrive within this many seconds of the connect or the previous response",
    )
    body_timeout_s: float = Field(
        default_factory=lambda: _env_float("EDGESIM_HTTP_BODY_TIMEOUT_S", limits.HTTP_BODY_TIMEOUT_S),
        description="a request body must arrive within this many seconds",
    )
    max_connections: int | None = Field(
        default_factory=lambda: (
            int(os.environ["EDGESIM_HTTP_MAX_CONNECTIONS"]) if "EDGESIM_HTTP_MAX_CONNECTIONS" in os.environ else None
        ),
        description="connections the API port holds at once (default: a quarter of the descriptor budget)",
    )


class Config(BaseModel):
    """Everything a Gateway needs to start. Port 0 means 'pick a free port'."""

    host: str = "127.0.0.1"
    mqtts_port: int = 8883
    wss_port: int | None = 8084
    https_port: int | None = 8443
    insecure_port: int | None = None
    alpn_port: int | None = None  # one TLS port multiplexed by ALPN, like AWS IoT's 443 (gateway/broker/alpn.py)
    api_port: int = 4566
    data_dir: Path = Field(default_factory=default_data_dir)
    certs_dir: Path = Field(default_factory=default_certs_dir)
    rules_dir: Path | None = Field(default=None, description="load *.json / *.sql rules from here and watch it")
    sink_backend: str = Field(default="local", description="local sinks, or 'aws': rule actions go out through boto3")
    sink_endpoint_url: str | None = Field(default=None, description="with sink_backend=aws: an AWS-compatible endpoint")
    region: str = limits.DEFAULT_REGION
    account: str = limits.DEFAULT_ACCOUNT
    dev_policy_name: str = "edgesim-dev-anonymous"
    v3_auth_failure_connack: bool = Field(
        default=False,
        description="answer a refused MQTT 3.1.1 CONNECT with CONNACK rc=5 instead of closing the socket",
    )
    sigv4_credentials: dict[str, str] = Field(
        default_factory=dict,
        description="access key -> secret; when set, every HTTP API request must carry a valid SigV4 signature",
    )
    api_token: str | None = Field(
        default=None,
        description="token the HTTP API and dashboard require; generated at start-up when host is not loopback",
    )
    server_names: list[str] = Field(
        default_factory=list,
        description="extra DNS names for the server certificate (e.g. a container's service name) besides localhost",
    )
    mqtt: MqttLimits = Field(default_factory=MqttLimits)
    http: HttpLimits = Field(default_factory=HttpLimits)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edgesim.db"
