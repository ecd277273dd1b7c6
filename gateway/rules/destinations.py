"""HTTP topic rule destinations: the confirmed URLs an `http` rule action may send to (AWS's confirmation flow).

Creating one (or a rule whose http action has no destination yet) sends AWS's confirmation request to the
confirmation URL: `POST {confirmationUrl}/?confirmationToken=…` with the destination ARN, the token and an
`enableUrl`. The endpoint's owner confirms with ConfirmTopicRuleDestination (or by opening the enableUrl);
until then, and while DISABLED, the http action refuses to send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.clock import Clock
from gateway.errors import InvalidRequestException, ResourceNotFoundException
from gateway.registry.base import paginate
from gateway.store import Store
from gateway.tasks import cancel_and_wait

log = logging.getLogger("edgesim.rules")

STATUSES = ("ENABLED", "IN_PROGRESS", "DISABLED", "ERROR", "DELETING")
CONFIRMATION_TIMEOUT_S = 10.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_endpoint_url(url: str, field: str) -> None:
    """AWS takes HTTPS endpoints only; plain http is allowed here for loopback endpoints (local test servers)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts, host = urlsplit(""), ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and (host in LOOPBACK_HOSTS or host.startswith("127.")):
        return
    raise InvalidRequestException(
        f"{field} must be an https:// URL (edgesim also takes http:// on loopback hosts); got {url!r}"
    )


class TopicRuleDestinations:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        region: str,
        account: str,
        api_endpoint: Callable[[], str],
    ) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.api_endpoint = api_endpoint
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Every http action run looks its destination up: kept in memory, written through to SQLite.
        self._docs: dict[str, dict[str, Any]] = {
            row["arn"]: json.loads(row["document"])
            for row in store.query("SELECT arn, document FROM topic_rule_destinations")
        }

    def session(self) -> aiohttp.ClientSession:
        """The one HTTP client for confirmation requests and the http rule action."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # ---- storage
    def _all(self) -> list[dict[str, Any]]:
        return [self._docs[arn] for arn in sorted(self._docs)]

    def _get(self, arn: str) -> dict[str, Any]:
        doc = self._docs.get(arn)
        if doc is None:
            raise ResourceNotFoundException(f"Topic rule destination {arn} does not exist")
        return doc

    def _put(self, doc: dict[str, Any]) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO topic_rule_destinations(arn, document) VALUES (?,?)",
                (doc["arn"], json.dumps(doc)),
            )
        self._docs[doc["arn"]] = doc

    def find(self, confirmation_url: str) -> dict[str, Any] | None:
        for doc in self._docs.values():
            if doc["confirmationUrl"] == confirmation_url:
                return doc
        return None

    @staticmethod
    def _public(doc: dict[str, Any], summary: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: doc[k] for k in ("arn", "status", "createdAt", "lastUpdatedAt", "statusReason") if doc.get(k) != ""
        }
        out["httpUrlSummary" if summary else "httpUrlProperties"] = {"confirmationUrl": doc["confirmationUrl"]}
        return out

    # ---- operations, named after AWS's
    def create_topic_rule_destination(self, configuration: dict[str, Any]) -> dict[str, Any]:
        http = (configuration or {}).get("httpUrlConfiguration")
        if not isinstance(http, dict) or not isinstance(http.get("confirmationUrl"), str):
            raise InvalidRequestException(
                "destinationConfiguration.httpUrlConfiguration.confirmationUrl is required "
                "(edgesim supports HTTP destinations only)"
            )
        url = http["confirmationUrl"]
        check_endpoint_url(url, "confirmationUrl")
        if "${" in url:
            raise InvalidRequestException(
                "A topic rule destination's confirmationUrl cannot use substitution templates"
            )
        if self.find(url) is not None:
            raise InvalidRequestException(f"A topic rule destination for {url} already exists")
        return {"topicRuleDestination": self._public(self.create(url))}

    def create(self, confirmation_url: str) -> dict[str, Any]:
        now = self.clock.wall_ms() / 1000
        doc = {
            "arn": f"arn:aws:iot:{self.region}:{self.account}:ruledestination/http/{uuid.uuid4()}",
            "status": "IN_PROGRESS",
            "createdAt": now,
            "lastUpdatedAt": now,
            "statusReason": "Awaiting confirmation",
            "confirmationUrl": confirmation_url,
        }
        return self._challenge(doc)

    def get_topic_rule_destination(self, arn: str) -> dict[str, Any]:
        return {"topicRuleDestination": self._public(self._get(arn))}

    def list_topic_rule_destinations(self, max_results: int | None, next_token: str | None) -> dict[str, Any]:
        page, token = paginate([self._public(d, summary=True) for d in self._all()], max_results, next_token)
        return {"destinationSummaries": page, **({"nextToken": token} if token else {})}

    def update_topic_rule_destination(self, arn: str, status: str) -> dict[str, Any]:
        doc = self._get(arn)
        current = doc["status"]
        if status not in ("ENABLED", "DISABLED", "IN_PROGRESS"):
            raise InvalidRequestException(f"status must be ENABLED, DISABLED or IN_PROGRESS; got {status!r}")
        if status == "IN_PROGRESS":
            self._challenge(doc)  # a new confirmation challenge, as AWS sends
            return {}
        if current in ("IN_PROGRESS", "ERROR"):
            raise InvalidRequestException(
                f"The destination is {current}: confirm it with ConfirmTopicRuleDestination and the confirmationToken "
                "sent to its confirmation URL (or set IN_PROGRESS to send a new one)"
            )
        self._set(doc, status, "")
        return {}

    def delete_topic_rule_destination(self, arn: str) -> dict[str, Any]:
        self._get(arn)
        with self.store.transaction() as db:
            db.execute("DELETE FROM topic_rule_destinations WHERE arn=?", (arn,))
        del self._docs[arn]
        return {}

    def confirm_topic_rule_destination(self, token: str) -> dict[str, Any]:
        for doc in self._all():
            if doc.get("token") and secrets.compare_digest(doc["token"], token):
                if doc["status"] in ("IN_PROGRESS", "ERROR"):
                    self._set(doc, "ENABLED", "")
                return {}
        raise InvalidRequestException("The confirmation token is not valid")

    # ---- the confirmation challenge
    def _set(self, doc: dict[str, Any], status: str, reason: str, **changes: Any) -> dict[str, Any]:
        """Store a changed copy (the cached one stays as it was if the commit fails)."""
        new = {**doc, **changes, "status": status, "statusReason": reason, "lastUpdatedAt": self.clock.wall_ms() / 1000}
        self._put(new)
        return new

    def _challenge(self, doc: dict[str, Any]) -> dict[str, Any]:
        new = self._set(doc, "IN_PROGRESS", "Awaiting confirmation", token=secrets.token_urlsafe(48))
        task = asyncio.get_running_loop().create_task(self._send_confirmation(new), name="rule-destination")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return new

    async def _send_confirmation(self, doc: dict[str, Any]) -> None:
        token, arn = doc["token"], doc["arn"]
        base = doc["confirmationUrl"]
        url = f"{base.rstrip('/')}/?confirmationToken={token}"
        body = {
            "arn": arn,
            "confirmationToken": token,
            "enableUrl": f"{self.api_endpoint()}/confirmdestination/{token}",
            "messageType": "DestinationConfirmation",
        }
        headers = {
            "x-amz-rules-engine-message-type": "DestinationConfirmation",
            "x-amz-rules-engine-destination-arn": arn,
            "Content-Type": "application/json",
        }
        reason: str | None = None
        try:
            async with self.session().post(
                url, data=json.dumps(body), headers=headers, timeout=aiohttp.ClientTimeout(total=CONFIRMATION_TIMEOUT_S)
            ) as response:
                if response.status >= 300:
                    reason = f"The confirmation request got HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"The confirmation request to {base} failed: {exc or exc.__class__.__name__}"
        if reason is None:
            return
        try:
            current = self._get(arn)
        except ResourceNotFoundException:
            return
        if current.get("token") == token and current["status"] == "IN_PROGRESS":
            log.warning("topic rule destination %s: %s", arn, reason)
            self._set(current, "ERROR", reason)

    async def stop(self) -> None:
        await cancel_and_wait(list(self._tasks))
        if self._session is not None:
            await self._session.close()
