"""Where the resident host of an installation listens, logs and records itself, all inside SYSOPS_HOME.

Kept free of heavy imports: the routed-command path computes these on every call. A Unix socket path
must fit in sun_path (108 bytes); when SYSOPS_HOME is too deep, the sockets go to the installation's
short private run directory instead (settings.run_dir, 0700, ours only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sysops.settings import Settings

#: Longest socket path we bind (sun_path is 108 bytes with its terminating NUL; leave a margin).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class HostPaths:
    """The files of one installation's host."""

    #: gRPC control API (every verb but routed commands), 0600.
    control_socket: Path
    #: The routed-command socket (newline-delimited JSON, no gRPC in the CLI), 0600.
    call_socket: Path
    #: Who runs: pid, protocol, start time (JSON, 0600).
    record: Path
    #: The host's log, rotated by size.
    log: Path
    #: Held while a CLI starts the host, so two CLIs never start two.
    start_lock: Path
    #: Held by the host for as long as it runs, so two hosts never run.
    host_lock: Path


def host_paths(settings: Settings | None = None) -> HostPaths:
    """The host files of the installation of `settings` (default: the environment's)."""
    settings = settings or Settings()
    home = settings.home
    socket_dir = home if len(str(home.resolve() / "control.sock")) <= _MAX_SOCKET_PATH else settings.run_dir
    return HostPaths(
        control_socket=socket_dir / "host.sock",
        call_socket=socket_dir / "call.sock",
        record=home / "host.json",
        log=home / "host.log",
        start_lock=home / "locks" / "host-start.lock",
        host_lock=home / "locks" / "host.lock",
    )
