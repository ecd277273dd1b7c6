"""A small synchronous paho wrapper for tests: connect over mTLS, publish and wait for acks, collect messages."""

from __future__ import annotations

import queue
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Device:
    def __init__(
        self,
        port: int,
        client_id: str,
        cert: Path | None = None,
        key: Path | None = None,
        ca: Path | None = None,
        *,
        transport: str = "tcp",
        clean_session: bool = True,
        keepalive: int = 60,
    ) -> None:
        self.port = port
        self.keepalive = keepalive
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, transport=transport
        )  # type: ignore[arg-type]
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if ca is not None:
            self.client.tls_set(
                ca_certs=str(ca),
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_rc: object = None
        self.session_present: bool | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self._subacks: dict[int, threading.Event] = {}
        self.granted: dict[int, list[int]] = {}
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: object, userdata: object, flags: object, rc: object, props: object = None) -> None:
        self.connect_rc = rc
        self.session_present = bool(getattr(flags, "session_present", False))
        if not getattr(rc, "is_failure", False):
            self.connected.set()

    def _on_disconnect(self, *args: object) -> None:
        self.disconnected.set()

    def _on_subscribe(self, client: object, userdata: object, mid: int, codes: list[object], props: object) -> None:
        self.granted[mid] = [int(getattr(c, "value", c)) for c in codes]  # type: ignore[call-overload]
        self._subacks.setdefault(mid, threading.Event()).set()

    def connect(self, timeout: float = 10.0) -> Device:
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            raise ConnectionError(f"no CONNACK (rc={self.connect_rc})")
        return self

    def try_connect(self, timeout: float = 5.0) -> bool:
        try:
            self.connect(timeout)
        except (ConnectionError, OSError, ssl.SSLError):
            return False
        return True

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> list[int] | None:
        _rc, mid = self.client.subscribe(topic_filter, qos)
        event = self._subacks.setdefault(mid, threading.Event())
        if not event.wait(timeout):
            return None
        return self.granted[mid]

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 5.0
    ) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return True
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def expect(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def expect_none(self, wait: float = 0.7) -> None:
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
