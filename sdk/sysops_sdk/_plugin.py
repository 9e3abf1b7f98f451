"""The base class every plugin subclasses, as sketched in ADR-006 ("Core Plugin Interface").

A plugin is one object per running instance. The plugin server creates it, calls `initialize()` before
the instance reports ready, routes commands to it, hands its `snapshot()` to the next version on a hot
reload, and calls `cleanup()` on shutdown.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar


class ServiceUnavailableError(LookupError):
    """A plugin asked for a host service that this orchestrator does not provide to it."""


class Plugin(ABC):
    """Base plugin interface: identity, lifecycle hooks, state hand-over and service injection."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    requires: ClassVar[list[str]] = []
    conflicts: ClassVar[list[str]] = []

    def __init__(self, services: Mapping[str, Any] | None = None) -> None:
        self._services: dict[str, Any] = dict(services or {})

    @abstractmethod
    def initialize(self) -> None:
        """Initialize plugin resources; raising here marks the instance Failed."""

    @abstractmethod
    def cleanup(self) -> None:
        """Release plugin resources; called once on graceful shutdown."""

    def get_service(self, name: str) -> Any:
        """Return the host service `name` (metrics, alerting, ...) that policy granted to this plugin."""
        try:
            return self._services[name]
        except KeyError:
            available = ", ".join(sorted(self._services)) or "none"
            raise ServiceUnavailableError(
                f"plugin {self.name!r} asked for service {name!r}, which is not available (available: {available})"
            ) from None

    def snapshot(self) -> dict[str, Any]:
        """Return state to hand to the next version on a hot reload (JSON-serializable)."""
        return {}  # stateless by default

    def restore(self, state: dict[str, Any]) -> None:
        """Receive the state the previous version returned from `snapshot()`."""
        return None
