"""Credentials for fleets that connect without client certificates: a custom authorizer's MQTT username (the
authorizer's name, token and its signature in the query part) and password, as the AWS IoT Device SDK's
custom-authorizer connect sends them; or a SigV4-presigned WebSocket URL, as its websocket connect builds it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from devices.spec import AuthSpec, DeviceSpec
from devices.template import compile_template

_USERNAME_VARIABLES = frozenset({"fleet", "type", "i", "n", "ordinal", "thing_name"})
PRESIGN_EXPIRES_S = 86400


@dataclass(frozen=True)
class AuthOptions:
    """Plain data, so it crosses to worker processes."""

    authorizer: str | None
    username: str = "{thing_name}"  # a template text
    password: str | None = None
    token_key_name: str | None = None
    token: str | None = None
    signature: str | None = None
    by: str = "custom-authorizer"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_spec(cls, spec: AuthSpec) -> AuthOptions:
        return cls(spec.authorizer, spec.username.text, spec.password, spec.token_key_name, spec.token,
                   spec.signature, spec.by, spec.access_key_id, spec.secret_access_key, spec.session_token,
                   spec.region)  # fmt: skip

    @property
    def websocket(self) -> bool:
        return self.by == "sigv4-websocket"

    def credentials(self, device: DeviceSpec) -> tuple[str, bytes | None] | None:
        """(username, password) for a custom authorizer; None for SigV4 (the URL carries the signature)."""
        if self.websocket:
            return None
        user = compile_template(self.username, _USERNAME_VARIABLES).render({**device.variables(), "n": device.count})
        query = [f"x-amz-customauthorizer-name={quote(self.authorizer or '', safe='')}"]
        if self.token_key_name is not None and self.token is not None:
            query.append(f"{quote(self.token_key_name, safe='')}={quote(self.token, safe='')}")
        if self.signature is not None:
            query.append(f"x-amz-customauthorizer-signature={quote(self.signature, safe='')}")
        password = None if self.password is None else self.password.encode()
        return f"{user}?{'&'.join(query)}", password

    def websocket_path(self, host: str, port: int) -> str:
        """`/mqtt?X-Amz-Algorithm=AWS4-HMAC-SHA256&...` signed for service `iotdevicegateway`; a session token is
        added after signing, as AWS IoT expects it."""
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        key = self.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID", "")
        secret = self.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        token = self.session_token or os.environ.get("AWS_SESSION_TOKEN")
        request = AWSRequest(method="GET", url=f"https://{host}:{port}/mqtt")
        SigV4QueryAuth(Credentials(key, secret), "iotdevicegateway", self.region, PRESIGN_EXPIRES_S).add_auth(request)
        url = urlsplit(request.url)
        path = f"{url.path}?{url.query}"
        if token:
            path += f"&X-Amz-Security-Token={quote(token, safe='')}"
        return path
