"""The `iot` custom-authorizer operations (CreateAuthorizer ... TestInvokeAuthorizer), over gateway/identity."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.api.targets import REST_HANDLERS
from gateway.errors import AwsError, InvalidRequestException, ResourceNotFoundException
from gateway.identity import custom_auth
from gateway.identity.authn import Credentials
from gateway.identity.custom_auth import NAME_PARAM, SIGNATURE_PARAM

if TYPE_CHECKING:
    from gateway.api.parts import AuthParts


class InvalidResponseException(AwsError):
    code = "InvalidResponseException"
    http_status = 400


def _password(raw: Any) -> bytes | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw
    try:
        return base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        return str(raw).encode()


async def test_invoke(gw: AuthParts, params: dict[str, Any]) -> dict[str, Any]:
    """Run the authorizer as a connection would, without connecting; the function's answer comes back as is."""
    authenticator = gw.auth.custom
    name = params["authorizerName"]
    spec = authenticator.authorizers.get(name)
    if spec is None:
        raise ResourceNotFoundException(f"Authorizer {name} does not exist")
    mqtt = params.get("mqttContext") or {}
    http = params.get("httpContext") or {}
    tls = params.get("tlsContext") or {}
    query = custom_auth.query_params(http.get("queryString") or "")
    headers = dict(http.get("headers") or {})
    token = params.get("token")
    if token is not None and spec.get("tokenKeyName"):
        headers[spec["tokenKeyName"]] = token
    if params.get("tokenSignature") is not None:
        headers[SIGNATURE_PARAM] = params["tokenSignature"]
    headers[NAME_PARAM] = name
    creds = Credentials(
        door="wss" if http else "alpn", client_id=mqtt.get("clientId") or "", server_name=tls.get("serverName"),
        username=mqtt.get("username"), password=_password(mqtt.get("password")), headers=headers, query=query,
        raw_query=(http.get("queryString") or "").lstrip("?"),
    )  # fmt: skip
    outcome = await authenticator.evaluate(creds)
    if outcome.answer is None:
        why = outcome.refusal or "not authenticated"
        raise InvalidResponseException(why) if outcome.failed else InvalidRequestException(why)
    answer = outcome.answer
    return {
        "isAuthenticated": answer.is_authenticated,
        "principalId": answer.principal_id,
        "policyDocuments": list(answer.raw_documents),
        "refreshAfterInSeconds": answer.refresh_after_s,
        "disconnectAfterInSeconds": answer.disconnect_after_s,
    }


HANDLERS: dict[str, Callable[[AuthParts, dict[str, Any]], Any]] = {
    "CreateAuthorizer": lambda gw, p: gw.auth.authorizers.create(p),
    "DescribeAuthorizer": lambda gw, p: gw.auth.authorizers.describe(p["authorizerName"]),
    "ListAuthorizers": lambda gw, p: gw.auth.authorizers.list(p),
    "UpdateAuthorizer": lambda gw, p: gw.auth.authorizers.update(p),
    "DeleteAuthorizer": lambda gw, p: gw.auth.authorizers.delete(p["authorizerName"]),
    "SetDefaultAuthorizer": lambda gw, p: gw.auth.authorizers.set_default(p["authorizerName"]),
    "DescribeDefaultAuthorizer": lambda gw, p: gw.auth.authorizers.describe_default(),
    "TestInvokeAuthorizer": test_invoke,
}

for _name, _handler in HANDLERS.items():
    REST_HANDLERS[("iot", _name)] = _handler
