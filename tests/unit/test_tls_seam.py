"""The one stdlib seam: asyncio's per-connection TLS read buffer, shrunk for memory per connection."""

from __future__ import annotations

import asyncio.sslproto

from gateway.broker import listeners


def test_tls_read_buffer_is_shrunk_and_still_fits_two_records() -> None:
    assert asyncio.sslproto.SSLProtocol.max_size == listeners.TLS_READ_BUFFER_BYTES
    assert listeners.TLS_READ_BUFFER_BYTES >= 2 * 16 * 1024  # TLS records carry at most 16 KiB of plaintext
