"""The device provisioning MQTT API (fleet provisioning by claim), as AWS IoT documents it.

    $aws/certificates/create/<json|cbor>                       CreateKeysAndCertificate
    $aws/certificates/create-from-csr/<json|cbor>              CreateCertificateFromCsr
    $aws/provisioning-templates/<name>/provision/<json|cbor>   RegisterThing

each answered on `<topic>/accepted` or `<topic>/rejected` with `{"statusCode", "errorCode", "errorMessage"}`.
Answers go to the requesting connection only (they carry private keys and tokens, and every claim device
subscribes to the same topics); an MQTT 5 request's correlation data comes back with its answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.broker.connection import Connection
from gateway.broker.delivery import parts
from gateway.errors import AwsError, EdgesimError
from gateway.identity.provisioning_template import TemplateError, evaluate
from gateway.messages import Message
from gateway.provisioning import cbor
from gateway.provisioning.templates import ProvisioningTemplates
from gateway.registry import Registry
from gateway.registry.provisioning_apply import apply_plan
from mqttwire import properties as mqtt5

if TYPE_CHECKING:
    from gateway.broker.core import Broker

log = logging.getLogger("edgesim.provisioning")

TEMPLATES_PREFIX = "$aws/provisioning-templates/"
TOKEN_TTL_MS = 3600 * 1000  # AWS: an ownership token is good for one hour
HOOK_TIMEOUT_S = 5.0  # AWS: the pre-provisioning hook must answer within 5 seconds
Invoke = Callable[[str, bytes], Awaitable[tuple[bytes, str | None]]]


class Rejected(EdgesimError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def document(self) -> dict[str, Any]:
        return {"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message}


@dataclass(frozen=True)
class Request:
    operation: str  # "create" | "create-from-csr" | "provision"
    template: str | None = None
    format: str = "json"  # or "cbor": the payload's encoding, both ways


def parse_topic(topic: str) -> Request | None:
    """The request a topic names, None for anything else (including /accepted and /rejected)."""
    base, _, fmt = topic.rpartition("/")
    if fmt not in ("json", "cbor"):
        return None
    if base == "$aws/certificates/create":
        return Request("create", None, fmt)
    if base == "$aws/certificates/create-from-csr":
        return Request("create-from-csr", None, fmt)
    if base.startswith(TEMPLATES_PREFIX) and base.endswith("/provision"):
        name = base[len(TEMPLATES_PREFIX) : -len("/provision")]
        if name and "/" not in name:
            return Request("provision", name, fmt)
    return None


def decode(payload: bytes, fmt: str) -> dict[str, Any]:
    try:
        if fmt == "cbor":
            doc = cbor.loads(payload) if payload else {}
        else:
            doc = json.loads(payload) if payload.strip() else {}
    except (cbor.CborError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Rejected(400, "InvalidPayload", f"The payload is not valid {fmt.upper()}") from None
    if not isinstance(doc, dict):
        raise Rejected(400, "InvalidPayload", "The payload must be an object")
    return doc


def encode(answer: dict[str, Any], fmt: str) -> bytes:
    return cbor.dumps(answer) if fmt == "cbor" else json.dumps(answer).encode()


class ProvisioningMqttApi:
    def __init__(
        self, broker: Broker, registry: Registry, templates: ProvisioningTemplates, invoke: Invoke | None = None
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.templates = templates
        self.invoke = invoke
        self.clock = registry.clock
        self.stats = {"certificates": 0, "provisioned": 0, "rejected": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        broker.message_hooks.append(self.on_message)

    def on_message(self, message: Message) -> None:
        if not message.topic.startswith("$aws/"):
            return
        request = parse_topic(message.topic)
        if request is None or message.client_id is None or message.door == "provisioning":
            return
        task = asyncio.get_running_loop().create_task(self._handle(request, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, request: Request, message: Message) -> None:
        try:
            if request.operation == "create":
                answer = self.create_keys_and_certificate()
            elif request.operation == "create-from-csr":
                answer = self.create_certificate_from_csr(decode(message.payload, request.format))
            else:
                assert request.template is not None
                answer = await self.register_thing(request.template, decode(message.payload, request.format), message)
            topic = message.topic + "/accepted"
        except Rejected as err:
            self.stats["rejected"] += 1
            answer, topic = err.document(), message.topic + "/rejected"
        except Exception:
            log.exception("provisioning request on %s failed", message.topic)
            self.stats["rejected"] += 1
            answer = Rejected(500, "InternalFailure", "Internal service failure").document()
            topic = message.topic + "/rejected"
        assert message.client_id is not None
        self._answer(message.client_id, topic, encode(answer, request.format), message.properties)

    # ---- the three operations
    def _token_for(self, certificate_id: str) -> str:
        token = secrets.token_urlsafe(96)
        with self.registry.store.transaction():
            now = self.clock.wall_ms()
            self.registry.store.db.execute("DELETE FROM certificate_ownership_tokens WHERE expires_ms < ?", (now,))
            self.registry.store.db.execute(
                "INSERT INTO certificate_ownership_tokens(token, certificate_id, expires_ms) VALUES (?,?,?)",
                (token, certificate_id, now + TOKEN_TTL_MS),
            )
        return token

    def create_keys_and_certificate(self) -> dict[str, Any]:
        out = self._registry_call(lambda: self.registry.create_keys_and_certificate(False))
        self.stats["certificates"] += 1
        return {
            "certificateId": out["certificateId"],
            "certificatePem": out["certificatePem"],
            "privateKey": out["keyPair"]["PrivateKey"],
            "certificateOwnershipToken": self._token_for(out["certificateId"]),
        }

    def create_certificate_from_csr(self, request: dict[str, Any]) -> dict[str, Any]:
        csr = request.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr:
            raise Rejected(400, "InvalidPayload", "certificateSigningRequest is required")
        out = self._registry_call(lambda: self.registry.create_certificate_from_csr(csr, False))
        self.stats["certificates"] += 1
        return {
            "certificateId": out["certificateId"],
            "certificatePem": out["certificatePem"],
            "certificateOwnershipToken": self._token_for(out["certificateId"]),
        }

    @staticmethod
    def _registry_call(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return call()
        except AwsError as err:
            raise Rejected(400, "InvalidRequest", err.message) from err

    def _certificate_for(self, token: Any) -> str:
        if not isinstance(token, str) or not token:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")
        row = self.registry.store.one(
            "SELECT certificate_id, expires_ms FROM certificate_ownership_tokens WHERE token=?", (token,)
        )
        if row is None or row["expires_ms"] < self.clock.wall_ms():
            raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid.")
        return str(row["certificate_id"])

    async def register_thing(self, name: str, request: dict[str, Any], message: Message) -> dict[str, Any]:
        certificate_id = self._certificate_for(request.get("certificateOwnershipToken"))
        params = request.get("parameters") or {}
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise Rejected(400, "InvalidParameters", "parameters must be an object of strings")
        try:
            template, settings = self.templates.template(name)
        except AwsError:
            raise Rejected(404, "ResourceNotFound", f"The provisioning template {name} does not exist") from None
        if settings["type"] != "FLEET_PROVISIONING":
            raise Rejected(400, "InvalidRequest", f"The provisioning template {name} is not for fleet provisioning")
        if not settings["enabled"]:
            raise Rejected(400, "InvalidRequest", f"The provisioning template {name} is disabled")
        params = {**params, "AWS::IoT::Certificate::Id": certificate_id}
        hook = settings.get("preProvisioningHook")
        if hook:
            params = await self._run_hook(hook["targetArn"], name, certificate_id, params, message)
        try:
            result = apply_plan(self.registry, evaluate(template, params), certificate_id)
        except TemplateError as err:
            raise Rejected(400, err.error_code, err.message) from err
        self.stats["provisioned"] += 1
        answer: dict[str, Any] = {"deviceConfiguration": result.device_configuration}
        if result.thing_name is not None:
            answer["thingName"] = result.thing_name
        return answer

    async def _run_hook(
        self, target: str, name: str, certificate_id: str, params: dict[str, str], message: Message
    ) -> dict[str, str]:
        if self.invoke is None:
            raise Rejected(500, "InternalFailure", "No Lambda service is available for the pre-provisioning hook")
        row = self.registry.certificate_row(certificate_id)
        event = {
            "claimCertificateId": message.principal,
            "certificateId": certificate_id,
            "certificatePem": row["pem"] if row is not None else "",
            "templateArn": self.templates.arn(name),
            "clientId": message.client_id,
            "parameters": params,
        }
        try:
            raw, error = await asyncio.wait_for(self.invoke(target, json.dumps(event).encode()), HOOK_TIMEOUT_S)
            answer = json.loads(raw) if error is None else None
        except (AwsError, TimeoutError, ValueError, RecursionError) as exc:
            log.warning("pre-provisioning hook %s failed: %s", target, exc)
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("allowProvisioning"), bool):
            raise Rejected(500, "InternalFailure", "The pre-provisioning hook failed or returned an invalid answer")
        if not answer["allowProvisioning"]:
            raise Rejected(403, "AccessDenied", "The pre-provisioning hook denied the provisioning request")
        overrides = answer.get("parameterOverrides") or {}
        if not isinstance(overrides, dict):
            raise Rejected(500, "InternalFailure", "The pre-provisioning hook returned invalid parameterOverrides")
        merged = dict(params)
        merged.update({str(k): str(v) for k, v in overrides.items()})
        merged["AWS::IoT::Certificate::Id"] = certificate_id
        return merged

    # ---- answering one connection
    def _answer(self, client_id: str, topic: str, payload: bytes, props: dict[int, Any] | None) -> None:
        reply: dict[int, Any] | None = None
        if props and mqtt5.CORRELATION_DATA in props:
            reply = {mqtt5.CORRELATION_DATA: props[mqtt5.CORRELATION_DATA]}
        now = self.clock.wall_ms()
        self._send_to(client_id, Message(topic, payload, 1, False, None, None, now, "provisioning", properties=reply))
        response_topic = (props or {}).get(mqtt5.RESPONSE_TOPIC)
        if isinstance(response_topic, str) and response_topic != topic:
            self._send_to(
                client_id, Message(response_topic, payload, 1, False, None, None, now, "provisioning", properties=reply)
            )

    def _send_to(self, client_id: str, message: Message) -> None:
        conn = self.broker.sessions.get(client_id)
        if not isinstance(conn, Connection) or conn.closed:
            return
        granted = -1
        for sub in self.broker.trie.match(message.topic):
            if sub.conn is conn:
                granted = max(granted, min(sub.qos, message.qos))
        authorizer = conn.authorizer
        if granted < 0 or authorizer is None or not authorizer.can_receive(message.topic):
            return
        head, tail = parts(message, conn.version, False, granted, 0)
        if granted == 0:
            conn.send(head)
        elif conn.deliver_qos1(head, tail, None):
            self.broker.out_qos1 += 1
        self.broker.stats["messages_out"] += 1
