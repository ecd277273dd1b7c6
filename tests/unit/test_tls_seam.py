"""The one stdlib seam: asyncio's per-connection TLS read buffer, shrunk for the doors that still use asyncio's TLS.

The MQTT door terminates TLS itself (gateway/broker/tls.py) and must not go through asyncio.sslproto at all.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from gateway.broker import listeners, tls
from gateway.broker.connection import Connection
from gateway.broker.core import Broker
from gateway.identity import ca as ca_mod
from gateway.identity.keystore import ensure_local_ca, write_device_files


def test_tls_read_buffer_is_shrunk_and_still_fits_two_records() -> None:
    assert asyncio.sslproto.SSLProtocol.max_size == listeners.TLS_READ_BUFFER_BYTES
    assert listeners.TLS_READ_BUFFER_BYTES >= 2 * 16 * 1024  # TLS records carry at most 16 KiB of plaintext


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mqtt_listener_terminates_tls_itself(tmp_path: Path, version: ssl.TLSVersion) -> None:
    asyncio.run(_connect_to_mqtt_listener(tmp_path, version))


async def _connect_to_mqtt_listener(tmp_path: Path, version: ssl.TLSVersion) -> None:
    local, _ = ensure_local_ca(tmp_path / "certs")
    server_ctx = listeners.server_ssl_context(
        str(local.server_cert_path), str(local.server_key_path), [local.root.cert_pem.decode()]
    )
    issued = ca_mod.issue_device_cert(local.root, now=datetime.now(UTC))
    cert = write_device_files(tmp_path, "device", issued.cert_pem.decode(), (issued.key_pem or b"").decode(), None)
    client_ctx = ssl.create_default_context(cafile=str(local.root_cert_path))
    client_ctx.load_cert_chain(str(cert), str(tmp_path / "device.private.key"))
    client_ctx.minimum_version = client_ctx.maximum_version = version

    # Only what Connection touches before its first packet: the TLS layer is under test, not the broker.
    opened: asyncio.Queue[Connection] = asyncio.Queue()
    closed: asyncio.Queue[Connection] = asyncio.Queue()
    broker = SimpleNamespace(
        loop=asyncio.get_running_loop(),
        connect_timeout=10.0,
        inflight_window=100,
        connection_opened=opened.put_nowait,
        connection_closed=closed.put_nowait,
    )
    doors = listeners.Listeners(cast(Broker, broker))
    port = await doors.start_mqtt("mqtts", "127.0.0.1", 0, server_ctx)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        conn = await asyncio.wait_for(opened.get(), 5)
        assert isinstance(conn.transport, tls.TlsTransport)
        assert not isinstance(conn.transport, asyncio.sslproto._SSLProtocolTransport)
        assert conn.transport.get_extra_info("ssl_object").version() == version.name.replace("_", ".")
        assert conn.cert_der == ssl.PEM_cert_to_DER_cert(issued.cert_pem.decode())
        # The client's close_notify is answered with ours, which is what lets wait_closed() return.
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
        assert await asyncio.wait_for(closed.get(), 5) is conn
    finally:
        await doors.stop()
