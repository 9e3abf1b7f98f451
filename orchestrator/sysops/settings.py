"""Where sysops keeps its state and how long it waits, from the environment (`SYSOPS_*`).

Kept free of heavy imports: a routed `sysops <command>` reads these settings on every call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sysops.private_paths import ensure_private_dir

# A Unix socket path must fit in sun_path (108 bytes); leave room for "<instance>/plugin.sock".
_MAX_RUN_DIR_LENGTH = 70
#: Where the short run directory goes when `<home>/run` is too long for socket paths (tests change it).
FALLBACK_RUN_BASE = Path("/tmp")


def _default_home() -> Path:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "sysops"


def _float_env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """Settings of one sysops installation (one state directory)."""

    #: State directory: the SQLite store, plugin sockets, build caches. `SYSOPS_HOME`.
    home: Path = field(default_factory=lambda: Path(os.environ.get("SYSOPS_HOME") or _default_home()))
    #: Seconds a new instance has to answer the health check. `SYSOPS_READY_TIMEOUT`.
    ready_timeout: float = field(default_factory=lambda: _float_env("SYSOPS_READY_TIMEOUT", 30.0))
    #: Seconds in-flight invocations get to finish when an instance is stopped. `SYSOPS_DRAIN_TIMEOUT`.
    drain_timeout: float = field(default_factory=lambda: _float_env("SYSOPS_DRAIN_TIMEOUT", 10.0))
    #: Image every plugin image is built FROM. `SYSOPS_BASE_IMAGE`.
    base_image: str = field(default_factory=lambda: os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0"))

    @property
    def store_path(self) -> Path:
        """The SQLite database."""
        return self.home / "state.db"

    @property
    def installation_id(self) -> str:
        """Short stable id of this state directory; labels every object it creates."""
        import hashlib  # not on the routed-command path, which never asks for it

        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    @property
    def run_dir(self) -> Path:
        """Parent of per-instance socket directories (short enough for Unix socket paths)."""
        preferred = self.home / "run"
        if len(str(preferred.resolve())) <= _MAX_RUN_DIR_LENGTH:
            return preferred
        return FALLBACK_RUN_BASE / f"sysops-run-{os.geteuid()}" / self.installation_id

    def ensure_home(self) -> Path:
        """Create (or check) the state directory, private to this user (it holds every instance token)."""
        return ensure_private_dir(self.home)

    def ensure_run_dir(self) -> Path:
        """Create (or check) the socket parent directory and every sysops directory above it, all 0700.

        The /tmp fallback is refused when someone else owns it or it is a symlink: another local user
        could otherwise pre-create it and replace the plugin sockets inside.
        """
        run_dir = self.run_dir
        if run_dir.parent == self.home:
            self.ensure_home()
        else:
            ensure_private_dir(run_dir.parent)
        return ensure_private_dir(run_dir)

    @property
    def cache_dir(self) -> Path:
        """Wheel cache for plugin requirements."""
        return self.home / "cache"
