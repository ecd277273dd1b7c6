"""The http rule action: POST the rule's output to a URL behind a confirmed topic rule destination."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext, Template, compile_template
from gateway.rules.destinations import check_endpoint_url

MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 3.0  # AWS's http action gives the endpoint 3 seconds


@register("http")
class HttpAction:
    kind = "http"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        url = fields.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidRequestException("http.url is required")
        confirmation = fields.get("confirmationUrl")
        if confirmation is not None and (not isinstance(confirmation, str) or not confirmation):
            raise InvalidRequestException("http.confirmationUrl must be a non-empty string")
        if "${" in url and confirmation is None:
            raise InvalidRequestException("http.confirmationUrl is required when http.url uses substitution templates")
        if fields.get("auth") is not None:
            raise InvalidRequestException("http.auth (SigV4 signing) is not supported by edgesim")
        if fields.get("enableBatching"):
            raise InvalidRequestException("http.enableBatching is not supported by edgesim")
        confirmation = confirmation or url
        for name, value in (("url", url), ("confirmationUrl", confirmation)):
            if "${" not in value:
                check_endpoint_url(value, f"http.{name}")
        if "${" not in url and "${" not in confirmation and not url.startswith(confirmation):
            raise InvalidRequestException("http.confirmationUrl must be a prefix of http.url")
        self.headers: list[tuple[str, Template]] = []
        headers = fields.get("headers") or []
        if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
            raise InvalidRequestException(f"http.headers must be a list of at most {MAX_HEADERS} {{key, value}}")
        for header in headers:
            if not (isinstance(header, dict) and isinstance(header.get("key"), str) and header["key"]):
                raise InvalidRequestException("each http.headers entry needs a key and a value")
            if not isinstance(header.get("value"), str):
                raise InvalidRequestException(f"http header {header['key']!r} needs a string value")
            self.headers.append((header["key"], compile_template(header["value"])))
        self.fields = TemplatedFields.compile({"url": url, "confirmationUrl": confirmation})
        self.destinations = sinks.destinations
        # As AWS does, a rule naming a URL with no destination yet creates one (which sends the confirmation).
        if "${" not in confirmation and self.destinations.find(confirmation) is None:
            self.destinations.create(confirmation)

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["url"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        fields = self.fields.render(ctx)
        url, confirmation = str(fields["url"]), str(fields["confirmationUrl"])
        destination = self.destinations.find(confirmation)
        if destination is None:
            raise ActionError(f"no topic rule destination for {confirmation}: create and confirm one first")
        if destination["status"] != "ENABLED":
            raise ActionError(
                f"topic rule destination {destination['arn']} is {destination['status']}, not ENABLED "
                "(confirm it with ConfirmTopicRuleDestination and the token sent to its confirmation URL)"
            )
        if not url.startswith(confirmation):
            raise ActionError(f"{url} is not under the destination's confirmation URL {confirmation}")
        data = output_bytes(output)
        headers = {key: template.render(ctx) for key, template in self.headers}
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = "application/octet-stream" if isinstance(output, bytes) else "application/json"
        try:
            async with self.destinations.session().post(
                url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as response:
                if response.status >= 300:
                    detail = (await response.text(errors="replace"))[:200]
                    raise ActionError(f"HTTP {response.status} from {url}: {detail}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ActionError(f"POST {url} failed: {exc or exc.__class__.__name__}") from exc
