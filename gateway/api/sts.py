"""STS on the one endpoint (query protocol): GetCallerIdentity and a minimal AssumeRole.

CLI checks, Terraform and many test fixtures ask `sts get-caller-identity` before anything else. Sessions from
AssumeRole are remembered (in memory) so a caller signing with them is told the assumed role.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web

from gateway.api.model import load_service
from gateway.api.query import QueryCodec
from gateway.errors import AwsError

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})")
SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
MIN_DURATION, MAX_DURATION, DEFAULT_DURATION = 900, 43_200, 3_600


class ValidationError(AwsError):
    code = "ValidationError"
    http_status = 400


@dataclass(frozen=True)
class Session:
    arn: str
    user_id: str
    account: str
    expires_ms: int
    secret: str = ""  # kept so SigV4 WebSocket upgrades signed with these temporary credentials verify
    token: str = ""


def _id(prefix: str, length: int = 16) -> str:
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length))


@cache
def codec() -> QueryCodec:
    model = load_service("sts")
    return QueryCodec(
        {
            "metadata": {"xmlNamespace": "https://sts.amazonaws.com/doc/2011-06-15/"},
            "operations": model.operations,
            "shapes": model.shapes,
        }
    )


class StsService:
    def __init__(self, account: str) -> None:
        self.account = account
        self.sessions: dict[str, Session] = {}

    def get_caller_identity(self, access_key: str | None, now_ms: int) -> dict[str, Any]:
        session = self.sessions.get(access_key or "")
        if session is not None and session.expires_ms > now_ms:
            return {"UserId": session.user_id, "Account": session.account, "Arn": session.arn}
        return {"UserId": self.account, "Account": self.account, "Arn": f"arn:aws:iam::{self.account}:root"}

    def temporary_credentials(self, now_ms: int) -> dict[str, tuple[str, str]]:
        """Unexpired AssumeRole credentials: access key -> (secret, session token)."""
        return {key: (s.secret, s.token) for key, s in self.sessions.items() if s.expires_ms > now_ms and s.secret}

    def assume_role(self, params: dict[str, Any], now_ms: int) -> dict[str, Any]:
        role_arn = str(params.get("RoleArn") or "")
        session_name = str(params.get("RoleSessionName") or "")
        found = ROLE_ARN.fullmatch(role_arn)
        if found is None:
            raise ValidationError(f"{role_arn} is invalid")
        if not SESSION_NAME.fullmatch(session_name):
            raise ValidationError(
                f"1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
            )
        duration = params.get("DurationSeconds", DEFAULT_DURATION)
        if not isinstance(duration, int) or not MIN_DURATION <= duration <= MAX_DURATION:
            too_long = isinstance(duration, int) and duration > MAX_DURATION
            raise ValidationError(
                f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
                f"Member must have value {'less' if too_long else 'greater'} than or equal to "
                f"{MAX_DURATION if too_long else MIN_DURATION}"
            )
        account, role = found.group(1), found.group(2)
        role_id = _id("AROA")
        access_key = _id("ASIA")
        expires = now_ms + duration * 1000
        arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session_name}"
        secret, token = secrets.token_urlsafe(30)[:40], secrets.token_urlsafe(96)
        self.sessions[access_key] = Session(arn, f"{role_id}:{session_name}", account, expires, secret, token)
        return {
            "Credentials": {
                "AccessKeyId": access_key,
                "SecretAccessKey": secret,
                "SessionToken": token,
                "Expiration": expires / 1000,
            },
            "AssumedRoleUser": {"AssumedRoleId": f"{role_id}:{session_name}", "Arn": arn},
            "PackedPolicySize": 0,
        }


def access_key_of(authorization: str | None) -> str | None:
    if not authorization or "Credential=" not in authorization:
        return None
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


async def handle(request: web.Request, sts: StsService, form: dict[str, str], now_ms: int) -> web.StreamResponse:
    query = codec()
    action = form.get("Action", "")
    try:
        params = query.read_input(action, form)
        if action == "GetCallerIdentity":
            result = sts.get_caller_identity(access_key_of(request.headers.get("Authorization")), now_ms)
        elif action == "AssumeRole":
            result = sts.assume_role(params, now_ms)
        elif query.operation(action) is None:
            raise _InvalidAction(f"Could not find operation {action} for version 2011-06-15")
        else:
            raise _InvalidAction(f"{action} is not supported by edgesim")
        return web.Response(body=query.response(action, result), content_type="text/xml")
    except AwsError as error:
        return web.Response(
            status=error.http_status,
            body=query.error(error.code, error.message, error.http_status < 500),
            content_type="text/xml",
        )


class _InvalidAction(AwsError):
    code = "InvalidAction"
    http_status = 400
