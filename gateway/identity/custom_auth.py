"""Custom authorizers, the pure part: where a device puts its authorizer name, token and signature (MQTT username
query string, HTTP headers or query string), token signature verification, the event the authorizer function
gets and the checks its answer must pass (AWS IoT developer guide, "Custom authentication and authorization")."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.errors import EdgesimError, MalformedPolicyException
from gateway.identity.authn import Credentials
from gateway.identity.policy_doc import PolicyDocument, parse_policy_document

NAME_PARAM = "x-amz-customauthorizer-name"
SIGNATURE_PARAM = "x-amz-customauthorizer-signature"
FUNCTION_TIMEOUT_S = 5.0  # AWS: an authorizer function has 5 seconds
MIN_KEY_BITS = 2048
MIN_TTL_S, MAX_TTL_S = 300, 86_400  # disconnectAfterInSeconds / refreshAfterInSeconds bounds
MAX_POLICY_DOCUMENTS = 10
MAX_POLICY_DOCUMENT_CHARS = 2048
_PRINCIPAL = re.compile(r"[a-zA-Z0-9]{1,128}")


class InvalidAnswer(EdgesimError):
    """The authorizer function's answer is not one AWS IoT accepts."""


@dataclass(frozen=True)
class Presented:
    """A custom authorizer's credentials as one connection sent them."""

    authorizer: str | None  # None: the account's default authorizer
    token: str | None
    signature: str | None
    username: str | None  # the MQTT username before its query string (as the function sees it: whole)


def username_params(username: str) -> tuple[str, dict[str, str]]:
    """`user?a=1&b=2` -> ("user", {"a": "1", "b": "2"}), values URL-decoded."""
    user, _, query = username.partition("?")
    return user, query_params(query)


def query_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in query.lstrip("?").split("&"):
        if part:
            key, _, value = part.partition("=")
            params.setdefault(unquote(key), unquote(value))
    return params


def presented(creds: Credentials, token_key: str | None) -> Presented:
    """Find the authorizer name, token and signature: in the MQTT username's query string, else in HTTP headers,
    else in the HTTP query string. The token is looked up under the authorizer's token key name."""
    sources: list[Mapping[str, str]] = []
    if creds.username and "?" in creds.username:
        sources.append(username_params(creds.username)[1])
    if creds.headers:
        sources.append({k.lower(): v for k, v in creds.headers.items()})
    if creds.query:
        sources.append(creds.query)

    def find(name: str | None) -> str | None:
        if not name:
            return None
        for source in sources:
            value = source.get(name, source.get(name.lower()))
            if value is not None:
                return value
        return None

    return Presented(find(NAME_PARAM), find(token_key), find(SIGNATURE_PARAM), creds.username)


def names_authorizer(creds: Credentials) -> str | None:
    """The authorizer a connection names, if any (before the authorizer itself, and so its token key, is known)."""
    return presented(creds, None).authorizer


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """A token signing key: an RSA public key of at least 2048 bits, PEM encoded (ValueError otherwise)."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("is not a PEM-encoded public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("is not an RSA public key")
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(f"is {key.key_size} bits; the minimum is {MIN_KEY_BITS}")
    return key


def signature_valid(token: str, signature_b64: str, public_keys: Mapping[str, str]) -> bool:
    """RSA PKCS#1 v1.5 with SHA-256 over the token, base64 signature, against any of the authorizer's keys."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    for pem in public_keys.values():
        try:
            load_public_key(pem).verify(signature, token.encode(), padding.PKCS1v15(), hashes.SHA256())
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def event(creds: Credentials, found: Presented, signature_verified: bool) -> dict[str, Any]:
    """The JSON the authorizer function is invoked with; fields that do not apply are left out."""
    protocols = ["tls"]
    data: dict[str, Any] = {}
    if creds.server_name:
        data["tls"] = {"serverName": creds.server_name}
    if creds.door in ("wss", "https"):
        protocols.append("http")
        data["http"] = {"headers": dict(creds.headers), "queryString": f"?{creds.raw_query}" if creds.raw_query else ""}
    if creds.door != "https":
        protocols.append("mqtt")
        mqtt: dict[str, Any] = {}
        if creds.username is not None:
            mqtt["username"] = creds.username
        if creds.password is not None:
            mqtt["password"] = base64.b64encode(creds.password).decode()
        if creds.client_id:
            mqtt["clientId"] = creds.client_id
        data["mqtt"] = mqtt
    body: dict[str, Any] = {
        "signatureVerified": signature_verified,
        "protocols": protocols,
        "protocolData": data,
        "connectionMetadata": {"id": str(uuid.uuid4())},
    }
    if found.token is not None:
        body["token"] = found.token
    return body


@dataclass(frozen=True)
class Answer:
    is_authenticated: bool
    principal_id: str
    documents: tuple[PolicyDocument, ...]
    raw_documents: tuple[str, ...]
    disconnect_after_s: int
    refresh_after_s: int


def _seconds(raw: dict[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAnswer(f"{key} must be an integer")
    if not MIN_TTL_S <= value <= MAX_TTL_S:
        raise InvalidAnswer(f"{key} must be between {MIN_TTL_S} and {MAX_TTL_S}, got {value}")
    return value


def parse_answer(payload: bytes) -> Answer:
    """Validate the function's answer as AWS IoT does; InvalidAnswer says what is wrong."""
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise InvalidAnswer(f"the answer is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    authenticated = raw.get("isAuthenticated")
    if not isinstance(authenticated, bool):
        raise InvalidAnswer("isAuthenticated must be a boolean")
    principal = raw.get("principalId")
    if not isinstance(principal, str) or not _PRINCIPAL.fullmatch(principal):
        raise InvalidAnswer("principalId must be 1 to 128 letters and digits")
    texts = raw.get("policyDocuments", [])
    if not isinstance(texts, list) or len(texts) > MAX_POLICY_DOCUMENTS:
        raise InvalidAnswer(f"policyDocuments must be a list of at most {MAX_POLICY_DOCUMENTS} documents")
    documents: list[PolicyDocument] = []
    raw_documents: list[str] = []
    for i, item in enumerate(texts):
        text = json.dumps(item) if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InvalidAnswer(f"policyDocuments[{i}] must be a policy document (a JSON string)")
        try:
            documents.append(parse_policy_document(text, max_chars=MAX_POLICY_DOCUMENT_CHARS))
        except MalformedPolicyException as exc:
            raise InvalidAnswer(f"policyDocuments[{i}]: {exc.message}") from None
        raw_documents.append(text)
    return Answer(
        authenticated,
        principal,
        tuple(documents),
        tuple(raw_documents),
        _seconds(raw, "disconnectAfterInSeconds", MAX_TTL_S),
        _seconds(raw, "refreshAfterInSeconds", MAX_TTL_S),
    )
