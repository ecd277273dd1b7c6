"""The core's one mutual-TLS MQTT connection to the gateway ("the cloud"): reconnects with backoff, re-subscribes
after every connect, and can be switched offline on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import Callable
from typing import Any

from gateway.errors import EdgesimError
from mqttwire.client import AsyncMqttClient, Done, Message, MqttError
from mqttwire.packets import V311

log = logging.getLogger("edgesim.edge.cloud")

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


class CloudUnavailable(EdgesimError):
    """The cloud link is offline (switched off or not connected)."""


class CloudLink:
    """`run()` keeps the connection up while `wanted`; `on_state(True/False)` reports each change."""

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        keepalive: int,
        on_message: Callable[[Message], None],
        on_state: Callable[[bool], None],
        protocol: int = V311,
    ) -> None:
        self.client = AsyncMqttClient(
            client_id,
            host,
            port,
            ssl_context=ssl_context,
            keepalive=keepalive,
            on_message=self._on_message,
            on_connection_lost=self._on_lost,
            protocol=protocol,
        )
        self.filters: dict[str, int] = {}
        self.wanted = True
        self.online = False
        self.last_error: str | None = None
        self.connects = 0
        self._on_message_cb = on_message
        self._on_state = on_state
        self._changed = asyncio.Event()
        self._replies: dict[str, asyncio.Future[tuple[str, dict[str, Any]]]] = {}

    # ---- control

    def go_offline(self) -> None:
        """Cut the link as a pulled cable would (no DISCONNECT) and stay offline until go_online()."""
        self.wanted = False
        if self.client.connected:
            self.client.abort()
            self._set_online(False)
        self._changed.set()

    def go_online(self) -> None:
        self.wanted = True
        self._changed.set()

    async def run(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            if not self.wanted:
                await self._wait_change()
                continue
            try:
                await self.client.connect(timeout=10.0)
                if self.filters:
                    granted = await self.client.subscribe(sorted(self.filters.items()))
                    refused = [f for f, code in zip(sorted(self.filters), granted, strict=True) if code >= 0x80]
                    if refused:
                        log.warning("cloud refused subscriptions: %s", ", ".join(refused))
            except MqttError as exc:
                self.client.abort()
                self.last_error = str(exc)
                log.info("cloud link: %s; retrying in %.1f s", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_change(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = MIN_BACKOFF_S
            self.connects += 1
            self.last_error = None
            self._set_online(True)
            while self.client.connected and self.wanted:
                await self._wait_change()
            if self.client.connected:  # switched offline while connected: go_offline() aborted already
                self.client.abort()
            self._set_online(False)

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def close(self) -> None:
        self.wanted = False
        await self.client.disconnect(timeout=2.0)
        self._set_online(False)

    # ---- traffic

    def send(self, topic: str, payload: bytes, qos: int, on_done: Done, properties: bytes | None = None) -> None:
        """`properties`: an encoded MQTT 5 property block, sent when the link speaks MQTT 5 (dropped for 3.1.1)."""
        if not self.online:
            on_done(MqttError("the cloud link is offline"))
            return
        self.client.send(topic, payload, qos, on_done, properties=properties)

    async def request(self, topic: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[str, dict[str, Any]]:  # noqa: ASYNC109
        """A shadow request over MQTT: publish `body` with a fresh clientToken to `topic`, and return the
        (accepted|rejected, document) reply with that token. The reply topics must be subscribed."""
        if not self.online:
            raise CloudUnavailable("the cloud link is offline")
        token = uuid.uuid4().hex
        reply: asyncio.Future[tuple[str, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._replies[token] = reply
        try:
            await self.client.publish(topic, json.dumps({**body, "clientToken": token}).encode(), qos=1)
            async with asyncio.timeout(timeout):
                return await reply
        except (MqttError, TimeoutError) as exc:
            raise CloudUnavailable(f"{topic}: {exc or 'no reply in time'}") from exc
        finally:
            self._replies.pop(token, None)

    def _on_message(self, message: Message) -> None:
        if self._replies and message.topic.endswith(("/accepted", "/rejected")):
            try:
                doc = json.loads(message.payload)
            except ValueError:
                doc = None
            token = doc.get("clientToken") if isinstance(doc, dict) else None
            waiting = self._replies.get(token) if isinstance(token, str) else None
            if waiting is not None and not waiting.done():
                assert isinstance(doc, dict)
                waiting.set_result((message.topic.rsplit("/", 1)[1], doc))
                return
        self._on_message_cb(message)

    def _on_lost(self) -> None:
        self._set_online(False)
        self._changed.set()

    def _set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        for waiting in self._replies.values():
            if not online and not waiting.done():
                waiting.set_exception(MqttError("the cloud link went offline"))
        try:
            self._on_state(online)
        except Exception:
            log.exception("cloud link state callback failed")
