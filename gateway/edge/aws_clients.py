"""boto3 clients the edge core uses to reach the gateway's API, as any AWS IoT client would.

The edge core talks to the gateway over the wire only, like devices/ does, but keeps its own small helpers:
gateway.edge does not import devices (design.md §2).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from gateway.api.auth import TOKEN_HEADER


def send_api_token(client: Any) -> None:
    """A gateway exposed beyond loopback wants its API token (EDGESIM_API_TOKEN) on every request."""
    token = os.environ.get("EDGESIM_API_TOKEN")
    if token:

        def add_token(request: Any, **_: Any) -> None:
            request.headers[TOKEN_HEADER] = token

        client.meta.events.register("before-send", add_token)


def iot_client(endpoint: str, region: str = "us-east-1") -> Any:
    client = boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "edgesim"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "edgesim"),
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=16),
    )
    send_api_token(client)
    return client
