"""The Jobs MQTT API: requests on `$aws/things/<thing>/jobs/...`, answers on `/accepted` and `/rejected` (with the
clientToken echoed and, for MQTT 5, the request's correlation data)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.errors import AwsError
from gateway.jobs.device import DeviceJobs
from gateway.jobs.engine import Publish
from gateway.jobs.exceptions import JobsRejected, mqtt_code
from gateway.messages import Message
from mqttwire import properties as mqtt5

log = logging.getLogger("edgesim.jobs")

PREFIX = "$aws/things/"
_THING = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_JOB = re.compile(r"[a-zA-Z0-9_-]{1,64}|\$next")


@dataclass(frozen=True)
class JobsTopic:
    thing: str
    operation: str  # "get" (pending list), "start-next", "describe", "update", "invalid" (no such API)
    job_id: str | None
    base: str  # the request topic; replies add /accepted or /rejected


def parse_jobs_topic(topic: str) -> JobsTopic | None:
    """A Jobs request topic, or None (replies, notifications and anything else)."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic[len(PREFIX) :].split("/")
    if len(parts) < 3 or parts[1] != "jobs" or _THING.fullmatch(parts[0]) is None:
        return None
    thing, rest = parts[0], parts[2:]
    if rest == ["get"]:
        return JobsTopic(thing, "get", None, topic)
    if rest == ["start-next"]:
        return JobsTopic(thing, "start-next", None, topic)
    if len(rest) == 2 and rest[1] in ("get", "update") and _JOB.fullmatch(rest[0]):
        return JobsTopic(thing, "describe" if rest[1] == "get" else "update", rest[0], topic)
    if rest[-1] in ("accepted", "rejected") or rest in (["notify"], ["notify-next"]):
        return None  # the service's own answers and notifications
    # In the Jobs namespace but no API: answered with InvalidTopic.
    return JobsTopic(thing, "invalid", None, topic)


Request = tuple[JobsTopic, bytes, "dict[int, Any] | None"]
# (reply topic, body, clientToken, the request's MQTT 5 properties)
Reply = tuple[str, dict[str, Any], Any, "dict[int, Any] | None"]


def _token(payload: bytes) -> Any:
    try:
        token = json.loads(payload).get("clientToken")
    except (ValueError, AttributeError, RecursionError):
        return None
    return token if isinstance(token, str) and 1 <= len(token) <= 64 else None


class JobsMqtt:
    def __init__(self, device: DeviceJobs, clock: Clock, publish: Publish) -> None:
        self.device = device
        self.engine = device.engine
        self.clock = clock
        self.publish = publish
        self.stats = {"requests": 0, "rejected": 0}
        self._pending: list[Request] = []

    def on_message(self, message: Message) -> None:
        """Broker hook: every routed message passes here. Jobs requests that arrive in one event-loop turn are
        answered together after one commit (group commit), each reply only once its change is on disk."""
        if message.door == "jobs" or not message.topic.startswith(PREFIX) or "/jobs/" not in message.topic:
            return
        topic = parse_jobs_topic(message.topic)
        if topic is None:
            return
        self._pending.append((topic, message.payload, message.properties))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        counted = dict(self.stats)  # a batch that is retried one by one counts each request once
        try:
            with self.engine.change():
                replies = [self._answer(*request) for request in batch]
        except Exception as exc:  # a failed commit: each request again on its own, so only its sender hears of it
            log.warning("jobs batch of %d failed to commit (%s); retrying one by one", len(batch), exc)
            self.stats.update(counted)
            replies = []
            for request in batch:
                try:
                    with self.engine.change():
                        replies.append(self._answer(*request))
                except Exception as item_exc:
                    log.error("jobs %s for %s failed: %s", request[0].operation, request[0].thing, item_exc)
                    self.stats["rejected"] += 1
                    failure = {"code": "InternalError", "message": "Internal service failure"}
                    replies.append((f"{request[0].base}/rejected", failure, _token(request[1]), request[2]))
        for reply in replies:
            self._reply(*reply)

    def _answer(self, topic: JobsTopic, payload: bytes, properties: dict[int, Any] | None) -> Reply:
        """Apply one request inside the batch's transaction: the reply to send once it commits."""
        self.stats["requests"] += 1
        token: Any = None
        try:
            try:
                request = json.loads(payload or b"{}")
            except (ValueError, RecursionError) as exc:
                raise JobsRejected("InvalidJson", f"The request is not valid UTF-8 JSON: {exc}") from exc
            if not isinstance(request, dict):
                raise JobsRejected("InvalidJson", "The request must be a JSON object")
            token = request.get("clientToken")
            if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 64):
                token = None
                raise JobsRejected("InvalidRequest", "clientToken must be a string of 1 to 64 characters")
            return f"{topic.base}/accepted", self._execute(topic, request), token, properties
        except AwsError as error:
            self.stats["rejected"] += 1
            rejected: dict[str, Any] = {"code": mqtt_code(error), "message": error.message}
            state = getattr(error, "execution_state", None)
            if state is not None:
                rejected["executionState"] = state
            return f"{topic.base}/rejected", rejected, token, properties

    def _execute(self, topic: JobsTopic, request: dict[str, Any]) -> dict[str, Any]:
        if topic.operation == "invalid":
            raise JobsRejected("InvalidTopic", f"{topic.base} does not map to any Jobs API")
        if topic.operation == "get":
            return self.device.get_pending(topic.thing)
        if topic.operation == "start-next":
            return self.device.start_next(topic.thing, request)
        assert topic.job_id is not None
        if topic.operation == "describe":
            return self.device.describe(topic.thing, topic.job_id, request)
        if topic.job_id == "$next":
            raise JobsRejected("InvalidTopic", "$next can only be described, not updated")
        return self.device.update(topic.thing, topic.job_id, request)

    def _reply(self, topic: str, body: dict[str, Any], token: Any, request_props: dict[int, Any] | None) -> None:
        now = self.clock.wall_ms()
        body["timestamp"] = now // 1000
        if token is not None:
            body["clientToken"] = token
        payload = json.dumps(body).encode()
        props = None
        if request_props and mqtt5.CORRELATION_DATA in request_props:
            props = {mqtt5.CORRELATION_DATA: request_props[mqtt5.CORRELATION_DATA]}
        response_topic = (request_props or {}).get(mqtt5.RESPONSE_TOPIC)
        if response_topic is not None and response_topic != topic:
            self.publish(Message(response_topic, payload, 1, False, None, None, now, "jobs", properties=props))
        self.publish(Message(topic, payload, 1, False, None, None, now, "jobs", properties=props))
