"""What the resident host wants to hear about instances, without the core importing the host services.

The host serves host services back to every instance (services/transport.py): a listener must exist right
after an instance's container starts, go when the instance is removed, and a plugin that became active gets
its event subscriptions. Orchestrators are made in many places (one per control call, the supervisor, the
reconcile loop), so the host registers its hooks for its store file here, and every Rollout and Orchestrator
of that installation finds them (`hooks_for`). Nothing is registered in the CLI or in unit tests that do
not ask for it: then the hooks are absent and the core works as before.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from sysops.store import InstanceRecord


class InstanceHooks(Protocol):
    """The host's side (services/hosting.py)."""

    def host_endpoint(self) -> str:
        """SYSOPS_HOST_ENDPOINT for a new instance ('' when the host serves no host services)."""
        ...

    def started(self, instance: InstanceRecord) -> None:
        """An instance's container was started (before its readiness is awaited)."""
        ...

    def removed(self, instance: InstanceRecord) -> None:
        """An instance was removed."""
        ...

    def activated(self, plugin: str) -> None:
        """A plugin's instances serve now (a first start, a roll, a rollback, an adoption)."""
        ...

    def purged(self, plugin: str) -> None:
        """`plugin down --purge` removed a plugin: forget what the host services keep of it."""
        ...


_lock = threading.Lock()
_registered: dict[Path, InstanceHooks] = {}


def _key(store_path: Path) -> Path:
    return Path(store_path).resolve()


def register(store_path: Path, hooks: InstanceHooks) -> None:
    """Send the instance events of the installation whose store is `store_path` to `hooks`."""
    with _lock:
        _registered[_key(store_path)] = hooks


def unregister(store_path: Path, hooks: InstanceHooks) -> None:
    """Stop sending them (only if `hooks` is still the one registered)."""
    with _lock:
        if _registered.get(_key(store_path)) is hooks:
            del _registered[_key(store_path)]


def hooks_for(store_path: Path) -> InstanceHooks | None:
    """The hooks registered for the installation whose store is `store_path`, if any."""
    with _lock:
        return _registered.get(_key(store_path)) if _registered else None
