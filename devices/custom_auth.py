"""Custom-authorizer credentials for a fleet's devices: the MQTT username AWS IoT reads the authorizer's name (and
token, and its signature) from, and the password, as the AWS IoT Device SDK's custom-authorizer connect sends them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from devices.spec import AuthSpec, DeviceSpec
from devices.template import compile_template

_USERNAME_VARIABLES = frozenset({"fleet", "type", "i", "n", "ordinal", "thing_name"})


@dataclass(frozen=True)
class AuthOptions:
    """Plain data, so it crosses to worker processes."""

    authorizer: str
    username: str = "{thing_name}"  # a template text
    password: str | None = None
    token_key_name: str | None = None
    token: str | None = None
    signature: str | None = None

    @classmethod
    def from_spec(cls, spec: AuthSpec) -> AuthOptions:
        return cls(spec.authorizer, spec.username.text, spec.password, spec.token_key_name, spec.token, spec.signature)

    def credentials(self, device: DeviceSpec) -> tuple[str, bytes | None]:
        user = compile_template(self.username, _USERNAME_VARIABLES).render({**device.variables(), "n": device.count})
        query = [f"x-amz-customauthorizer-name={quote(self.authorizer, safe='')}"]
        if self.token_key_name is not None and self.token is not None:
            query.append(f"{quote(self.token_key_name, safe='')}={quote(self.token, safe='')}")
        if self.signature is not None:
            query.append(f"x-amz-customauthorizer-signature={quote(self.signature, safe='')}")
        password = None if self.password is None else self.password.encode()
        return f"{user}?{'&'.join(query)}", password
