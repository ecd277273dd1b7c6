"""A small synchronous paho MQTT 5 client for tests: properties both ways, reason codes kept for assertions."""

from __future__ import annotations

import queue
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions


def props(kind: int, **values: Any) -> Properties:
    """paho Properties for packet type `kind` (PacketTypes.CONNECT, PUBLISH, WILLMESSAGE, ...)."""
    out = Properties(kind)
    for name, value in values.items():
        setattr(out, name, value)
    return out


class V5Client:
    def __init__(
        self,
        port: int,
        client_id: str,
        cert: Path | None = None,
        key: Path | None = None,
        ca: Path | None = None,
        *,
        keepalive: int = 60,
    ) -> None:
        self.port = port
        self.keepalive = keepalive
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                                keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: tuple[Any, Any, Any] | None = None  # (flags, reason code, properties)
        self.disconnect_reason: Any = None
        self.pubacks: dict[int, Any] = {}
        self._puback_events: dict[int, threading.Event] = {}
        self.subacks: dict[int, list[int]] = {}
        self._suback_events: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: object, userdata: object, flags: Any, rc: Any, properties: Any) -> None:
        self.connack = (flags, rc, properties)
        if not rc.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def _on_disconnect(self, client: object, userdata: object, flags: Any, rc: Any, properties: Any) -> None:
        self.disconnect_reason = rc
        self.disconnected.set()

    def _on_publish(self, client: object, userdata: object, mid: int, rc: Any, properties: Any) -> None:
        with self._lock:
            self.pubacks[mid] = rc
            self._puback_events.setdefault(mid, threading.Event()).set()

    def _on_subscribe(self, client: object, userdata: object, mid: int, codes: list[Any], properties: Any) -> None:
        with self._lock:
            self.subacks[mid] = [int(c.value) for c in codes]
            self._suback_events.setdefault(mid, threading.Event()).set()

    def connect(self, clean_start: bool = True, timeout: float = 10.0, **connect_props: Any) -> V5Client:
        properties = props(PacketTypes.CONNECT, **connect_props) if connect_props else None
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive, clean_start=clean_start,
                            properties=properties)  # fmt: skip
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"no successful CONNACK: {self.connack}")
        return self

    def try_connect(self, **kwargs: Any) -> bool:
        try:
            self.connect(timeout=5.0, **kwargs)
        except (ConnectionError, OSError):
            return False
        return True

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0, **options: Any) -> list[int]:
        sub_props = options.pop("properties", None)
        _rc, mid = self.client.subscribe(topic_filter, options=SubscribeOptions(qos=qos, **options),
                                         properties=sub_props)  # fmt: skip
        with self._lock:
            event = self._suback_events.setdefault(mid, threading.Event())
        if not event.wait(timeout):
            raise TimeoutError("no SUBACK")
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 5.0,
                **publish_props: Any) -> Any:  # fmt: skip
        """The PUBACK's reason code (QoS 1) or None (QoS 0)."""
        properties = props(PacketTypes.PUBLISH, **publish_props) if publish_props else None
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return None
        with self._lock:
            event = self._puback_events.setdefault(info.mid, threading.Event())
        if not event.wait(timeout):
            raise TimeoutError("no PUBACK")
        return self.pubacks[info.mid]

    def expect(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def expect_none(self, wait: float = 0.7) -> None:
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def close(self, reason: int = 0, **disconnect_props: Any) -> None:
        properties = props(PacketTypes.DISCONNECT, **disconnect_props) if disconnect_props else None
        from paho.mqtt.reasoncodes import ReasonCode

        self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason), properties)
        self.client.loop_stop()

    def drop(self) -> None:
        """Cut the connection without DISCONNECT (the will goes out)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
