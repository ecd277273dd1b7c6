"""In-process subscribers get what a client with the same filter would, and a failing one harms no other."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.broker.core import Broker
from gateway.broker.delivery import deliver
from gateway.broker.retained import RetainedStore
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.messages import Message
from gateway.registry import Registry
from gateway.store import Store


def test_a_failing_local_subscriber_does_not_stop_delivery_to_the_others(tmp_path: Path) -> None:
    got: list[tuple[object, ...]] = []

    def boom(topic: str, payload: bytes, qos: int, client_id: str | None, props: object) -> None:
        raise RuntimeError("view bug")

    async def scenario() -> None:
        store = Store(tmp_path / "db.sqlite")
        clock = SystemClock()
        broker = Broker(Config(data_dir=tmp_path), Registry(store, clock, "us-east-1", "123456789012"), clock,
                        RetainedStore(store))  # fmt: skip
        first = broker.subscribe_local("boom", ["a/#"], boom)
        broker.subscribe_local("ok", ["a/+", "$aws/things/x/#"], lambda *args: got.append(args))
        deliver(broker, Message("a/b", b"1", 1))
        deliver(broker, Message("$aws/things/x/shadow/update/documents", b"2", 0))
        deliver(broker, Message("b/c", b"3", 1))
        broker.unsubscribe_local(first)
        assert first.closed and not first.subscriptions
        store.close()

    asyncio.run(scenario())
    assert got == [("a/b", b"1", 1, None, None), ("$aws/things/x/shadow/update/documents", b"2", 0, None, None)]


def test_a_bad_filter_is_refused(tmp_path: Path) -> None:
    async def scenario() -> str:
        store = Store(tmp_path / "db.sqlite")
        clock = SystemClock()
        broker = Broker(Config(data_dir=tmp_path), Registry(store, clock, "us-east-1", "123456789012"), clock,
                        RetainedStore(store))  # fmt: skip
        try:
            broker.subscribe_local("bad", ["a/#/b"], lambda *args: None)
        except Exception as exc:
            return str(exc)
        finally:
            store.close()
        return ""

    assert "#" in asyncio.run(scenario())
