"""The parts the Gateway and the EdgeCore are both built from, started on one AsyncExitStack.

Each function starts a part and registers its stop on the stack at once, so the owner's `async with` (see
gateway.tasks.Lifecycle) stops exactly what started, in reverse order, whether it exits or fails half-way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from gateway.broker.core import Broker
from gateway.broker.listeners import Listeners
from gateway.broker.retained import RetainedStore
from gateway.broker.sessions import SessionStore
from gateway.clock import Clock
from gateway.config import Config
from gateway.identity.authorizer import DEV_POLICY_DOCUMENT
from gateway.identity.keystore import LocalCA
from gateway.registry import Registry
from gateway.shadow.document import ShadowLimits
from gateway.shadow.service import ShadowService
from gateway.store import Store


def open_store(stack: contextlib.AsyncExitStack, path: Path) -> Store:
    store = Store(path)
    stack.callback(store.close)
    return store


@dataclass(frozen=True)
class MqttCore:
    """A registry, the broker with its listeners, and the shadow service on top: a gateway's core, or an edge
    core's local one."""

    registry: Registry
    broker: Broker
    listeners: Listeners
    shadows: ShadowService


def start_mqtt_core(
    stack: contextlib.AsyncExitStack,
    config: Config,
    store: Store,
    clock: Clock,
    local_ca: LocalCA | None,
    dev_policy_name: str | None,
) -> MqttCore:
    """`local_ca`: the CA whose certificates the registry issues and trusts; `dev_policy_name`: the policy anonymous
    clients of a plain listener get (created if missing), or None when there is no such listener."""
    registry = Registry(store, clock, config.region, config.account)
    if local_ca is not None:
        registry.local_ca = local_ca.root
        registry.ensure_ca_registered(local_ca.root.cert_pem.decode())
    dev_policy = registry.ensure_policy(dev_policy_name, DEV_POLICY_DOCUMENT) if dev_policy_name else None
    broker = Broker(config, registry, clock, RetainedStore(store), dev_policy, SessionStore(store))
    listeners = Listeners(broker)
    # Unwinds as: the broker drops its connections, then the listening servers close (and wait for them).
    stack.push_async_callback(listeners.stop)
    broker.start()
    stack.push_async_callback(broker.stop)
    shadows = ShadowService(store, broker, clock, ShadowLimits())
    return MqttCore(registry, broker, listeners, shadows)
