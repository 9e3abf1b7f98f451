"""The one typed door to plugin operations: what the CLI can ask of an orchestrator, wherever it runs.

The in-process Orchestrator (what the resident host and `sysops serve` run) and the control-API client
(what the CLI talks to: the local host over its Unix socket, or a server over TCP) both implement it, and
mypy checks both (see the assignments at the bottom of this module and of cli/remote.py): a verb
added to one side fails to type-check until the other has it too.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sysops.core.orchestrator import Orchestrator, PluginStatus
    from sysops.store import EventRecord, InstanceRecord, RevisionRecord


class PluginOperations(Protocol):
    """Bring plugins up and down and see what they do."""

    def up(self, path: Path) -> tuple[InstanceRecord, bool]:
        """Build a plugin directory and start it or roll to it; return (instance, changed)."""

    def down(self, name: str, *, purge: bool = False, cascade: bool = False, force: bool = False) -> None:
        """Drain and remove a plugin (with `purge`, its images and data too); one running plugins require is
        refused unless `cascade` (they go down first) or `force` (only it goes down)."""

    def rollback(self, name: str, to: int | None = None) -> InstanceRecord:
        """Roll a plugin back to an earlier revision."""

    def list(self) -> builtins.list[PluginStatus]:
        """Every plugin's status."""

    def status(self, name: str, *, limits: bool = False) -> PluginStatus:
        """One plugin's status (with limits read back and live usage when asked)."""

    def history(self, name: str) -> builtins.list[RevisionRecord]:
        """A plugin's revisions."""

    def catalog(self) -> builtins.list[dict[str, Any]]:
        """Every plugin version the installation knows, per store key (core/catalog.py's entries)."""

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The log lines of a plugin's active instance."""

    def events(self, plugin: str | None = None, *, follow: bool = False) -> Iterator[EventRecord]:
        """Lifecycle events, of one plugin or all; with `follow`, new ones as they happen."""

    def close(self) -> None:
        """Release connections."""


if TYPE_CHECKING:
    _checked: type[PluginOperations] = Orchestrator  # mypy: the in-process side is a whole door
