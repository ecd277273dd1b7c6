"""MQTT over a WebSocket (RFC 6455, subprotocol `mqtt`) inside TLS, for the client: the HTTP upgrade once TLS is up,
then every MQTT byte in masked binary frames. Packets written before the upgrade is answered wait for it."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
from typing import Any

from mqttwire.connection import Connection, Owner

MAX_HEADER = 16 * 1024


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked client frame (a client must mask; RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    if not n:
        return head + mask
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + mask + masked


class _Unframer:
    """Stands in for the connection's owner: turns what TLS decrypted into MQTT bytes before the owner sees them."""

    def __init__(self, conn: WebSocketConnection, owner: Owner) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_owner", owner)

    def _received(self, conn: Connection) -> None:
        ws: WebSocketConnection = object.__getattribute__(self, "_conn")
        if ws.unframe() and ws.buffer:
            object.__getattribute__(self, "_owner")._received(conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_owner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_owner"), name, value)


class WebSocketConnection(Connection):
    def __init__(
        self, owner: Owner, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None, host: str, path: str,
        host_header: str,
    ) -> None:  # fmt: skip
        super().__init__(owner, loop, tls, host)
        self.owner = _Unframer(self, owner)  # type: ignore[assignment]
        self._owner = owner
        self.path, self.host_header = path, host_header
        self.raw = bytearray()
        self.upgraded = False
        self.upgrade_sent = False
        self.waiting: list[bytes] = []

    def _upgrade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        self.upgrade_sent = True
        super().send(request.encode())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.tls is None:
            self._upgrade()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        handshake = self.handshake
        if not self.upgrade_sent and handshake is not None and handshake.done() and not handshake.exception():
            self._upgrade()

    def send(self, data: bytes) -> None:
        if not self.upgraded:
            self.waiting.append(data)
            return
        super().send(frame(data))

    def unframe(self) -> bool:
        """Move what arrived from `buffer` through the WebSocket layer back into `buffer` as MQTT bytes; False when
        the connection has ended (refused upgrade, a close frame, a protocol error)."""
        self.raw += self.buffer
        self.buffer.clear()
        if not self.upgraded:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                if len(self.raw) > MAX_HEADER:
                    return self._fail("WebSocket upgrade answer too long")
                return True
            status = bytes(self.raw[: self.raw.find(b"\r\n")]).decode("latin-1")
            if " 101 " not in status + " ":
                return self._fail(f"WebSocket upgrade refused: {status}")
            del self.raw[: end + 4]
            self.upgraded = True
            waiting, self.waiting = self.waiting, []
            for data in waiting:
                self.send(data)
        return self._frames()

    def _frames(self) -> bool:
        raw = self.raw
        while len(raw) >= 2:
            opcode, size = raw[0] & 0x0F, raw[1] & 0x7F
            offset = 2
            if size == 126:
                if len(raw) < 4:
                    break
                size, offset = struct.unpack_from("!H", raw, 2)[0], 4
            elif size == 127:
                if len(raw) < 10:
                    break
                size, offset = struct.unpack_from("!Q", raw, 2)[0], 10
            if raw[1] & 0x80:
                return self._fail("the server masked a frame")
            if len(raw) < offset + size:
                break
            payload = bytes(raw[offset : offset + size])
            del raw[: offset + size]
            if opcode in (0x0, 0x2):
                self.buffer += payload
            elif opcode == 0x8:
                self.close()
                return bool(self.buffer)
            elif opcode == 0x9:
                super().send(frame(payload, 0xA))
            elif opcode != 0xA:
                return self._fail(f"unexpected WebSocket opcode {opcode}")
        return True

    def _fail(self, why: str) -> bool:
        self._owner._protocol_error(self, why)
        return False
