"""What discovery hands back: the plugins found, where each came from, and what was skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sysops.core.manifest import Manifest


@dataclass(frozen=True)
class Location:
    """A directory that may hold a plugin, before its plugin.yaml is read."""

    path: Path
    #: Part A's candidate origin: "directory PATH" or "package DIST".
    origin: str
    #: How it was found, for people: "plugin_dirs of /home/me/config.yaml", "entry point hello of hello-dist 1.0".
    source: str


@dataclass(frozen=True)
class DiscoveredPlugin:
    """A plugin directory with a valid plugin.yaml."""

    name: str
    version: str
    path: Path
    origin: str
    source: str
    manifest: Manifest = field(compare=False, repr=False)

    def as_row(self) -> dict[str, Any]:
        """The plugin as `sysops plugin discover` prints it (JSON keys, table columns)."""
        return {"name": self.name, "version": self.version, "path": str(self.path), "origin": self.origin,
                "source": self.source}  # fmt: skip


@dataclass(frozen=True)
class Skipped:
    """Something that looked like a plugin (or a place to look) but was not taken, and the one-line reason."""

    where: str
    why: str

    def as_row(self) -> dict[str, Any]:
        """The entry as `sysops plugin discover` prints it."""
        return {"where": self.where, "why": self.why}


@dataclass(frozen=True)
class Scan:
    """What one scanner found: places with a plugin.yaml to validate, and what it skipped."""

    locations: list[Location] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Discovery:
    """Every plugin found (validated, one per name and version) and every entry skipped."""

    found: list[DiscoveredPlugin] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
