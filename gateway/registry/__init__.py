"""The thing registry: things, types, groups, certificates, policies and their attachments."""

from gateway.registry.service import Registry, RegistryChange

__all__ = ["Registry", "RegistryChange"]
