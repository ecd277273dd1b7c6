"""Bare amqtt broker for the benchmark: one TLS listener, anonymous auth, nothing else.

usage: python bench/amqtt_ref.py PORTS_FILE CERTFILE KEYFILE CAFILE
Binds 127.0.0.1 on an ephemeral port and writes {"mqtts": port} to PORTS_FILE once listening; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path


async def main(ports_file: Path, certfile: str, keyfile: str, cafile: str) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {
            "default": {
                "type": "tcp",
                "bind": "127.0.0.1:0",
                "ssl": True,
                "certfile": certfile,
                "keyfile": keyfile,
                "cafile": cafile,
            }
        },
        # Only anonymous auth: no $SYS publisher, no packet/event logging plugins.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    server = broker._servers["default"].instance
    port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    await asyncio.to_thread(ports_file.write_text, json.dumps({"mqtts": port}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
