"""The base class every plugin subclasses, as sketched in ADR-006 ("Core Plugin Interface").

A plugin is one object per running instance. The plugin server creates it, calls `initialize()` before
the instance reports ready, routes commands to it, hands its `snapshot()` to the next version on a hot
reload, and calls `cleanup()` on shutdown. `get_service` gives it the host's services (services.py): the
typed clients over its connection to the host, or, in a plugin's tests, the services given to the
constructor (`Plugin(services=FakeHost().services())`), and then only those.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from sysops_sdk._errors import ServiceUnavailableError
from sysops_sdk._host_client import HostClient
from sysops_sdk.services import SERVICE_CLIENTS

__all__ = ["Plugin", "ServiceUnavailableError"]

#: A requirement of `Plugin.requires`: a plugin name and an optional PEP 440 range ("monitoring>=1.0").
_REQUIREMENT = re.compile(r"\s*([a-z0-9][-a-z0-9]*)\s*(.*?)\s*")


class Plugin(ABC):
    """Base plugin interface: identity, lifecycle hooks, state hand-over and service injection."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    requires: ClassVar[list[str]] = []
    conflicts: ClassVar[list[str]] = []

    def __init__(self, services: Mapping[str, Any] | None = None) -> None:
        #: Services given to the constructor (tests): when given, get_service serves only these.
        self._injected: dict[str, Any] | None = dict(services) if services is not None else None
        self._host: HostClient | None = None
        self._clients: dict[str, object] = {}
        self._clients_lock = threading.Lock()

    @abstractmethod
    def initialize(self) -> None:
        """Initialize plugin resources; raising here marks the instance Failed."""

    @abstractmethod
    def cleanup(self) -> None:
        """Release plugin resources; called once on graceful shutdown."""

    def get_service(self, name: str) -> Any:
        """Return the host service `name`: state, config, metrics, alerts (or alerting), events, logs.

        The typed client (sysops_sdk.services) is created on first use, without a network call; a call
        of a service policy does not grant this plugin raises PermissionDeniedError.
        """
        injected = self._injected
        offered = injected if injected is not None else SERVICE_CLIENTS
        if name not in offered:
            available = ", ".join(sorted(offered)) or "none"
            raise ServiceUnavailableError(
                f"plugin {self.name!r} asked for service {name!r}, which is not available (available: {available})"
            )
        if injected is not None:
            return injected[name]
        with self._clients_lock:
            if name not in self._clients:
                self._host = self._host or HostClient()
                self._clients[name] = SERVICE_CLIENTS[name](self._host)
            return self._clients[name]

    def publish(self, topic: str, payload: Any) -> int:
        """Publish the JSON-able `payload` on the event bus under `topic`; return the event's id."""
        return int(self.get_service("events").publish(topic, payload))

    def is_plugin_available(self, name: str, spec: str = "") -> bool:
        """Whether plugin `name` runs beside this one, ready, with a version in `spec` ("" = any); the host
        answers (service `plugins`, no permission needed)."""
        return bool(self.get_service("plugins").available(name, spec))

    def check_dependencies(self) -> bool:
        """Whether every requirement runs now: the manifest's `requires` and `conflicts` (the host checks them)
        and the class's `requires` (e.g. "monitoring>=1.0")."""
        plugins = self.get_service("plugins")
        if plugins.check():
            return False
        for requirement in self.requires:
            match = _REQUIREMENT.fullmatch(requirement)
            if match is None or not plugins.available(match.group(1), match.group(2)):
                return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """Return state to hand to the next version on a hot reload (JSON-serializable)."""
        return {}  # stateless by default

    def restore(self, state: dict[str, Any]) -> None:
        """Receive the state the previous version returned from `snapshot()`."""
        return None
