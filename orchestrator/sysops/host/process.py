"""`sysops host run`: the resident host's process, in the foreground (the CLI backgrounds it; systemd can run it).

It holds the installation's host lock for as long as it runs (a second host refuses to start), re-adopts
what runs (the control server's start-up reconciliation), serves the control API and the routed-command
socket on Unix sockets inside SYSOPS_HOME (0600 from creation: file permissions are the authentication,
as with the Docker socket), supervises every plugin, and writes host.json for the CLI to find it. It ends
on SIGTERM or SIGINT, and on its own when its installation goes away (SYSOPS_HOME or its socket removed
or replaced), so a deleted test directory never leaves a host behind. Plugins keep running when it stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from sysops.core.locks import held_lock
from sysops.errors import SysopsError
from sysops.host.launcher import HOST_PROTOCOL, HostRecord, host_environment
from sysops.host.paths import HostPaths, host_paths
from sysops.private_paths import ensure_private_dir, write_private_file
from sysops.settings import Settings

LOG = logging.getLogger("sysops.host")
#: How often the host checks that its installation and its socket are still there.
ORPHAN_CHECK_SECONDS = 2.0
#: Seconds in-flight calls get when the host stops.
STOP_GRACE_SECONDS = 5.0


class HostAlreadyRunningError(SysopsError):
    """Another host holds this installation's host lock."""


def run_host(settings: Settings | None = None, runtime: str = "docker") -> None:
    """Run the host until SIGTERM/SIGINT or until its installation is gone."""
    settings = settings or Settings()
    settings.ensure_home()
    paths = host_paths(settings)
    ensure_private_dir(paths.start_lock.parent)
    if paths.control_socket.parent != settings.home:
        settings.ensure_run_dir()
    with held_lock(paths.host_lock, blocking=False) as held:
        if not held:
            raise HostAlreadyRunningError(
                f"a sysops host already runs for {settings.home}", hint="`sysops host status` shows it"
            )
        _serve_until_stopped(settings, paths, runtime)


def _serve_until_stopped(settings: Settings, paths: HostPaths, runtime: str) -> None:
    from sysops.host.serving import start_host_servers

    for stale in (paths.control_socket, paths.call_socket, paths.record):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()  # a host killed with -9 leaves them; we hold the host lock, so they are nobody's
    servers = start_host_servers(settings, paths, runtime)
    record = HostRecord(os.getpid(), HOST_PROTOCOL, time.time(), runtime, host_environment())
    write_private_file(paths.record, json.dumps(record.as_dict()))
    LOG.info("host %s serving %s (runtime %s, pid %d)", HOST_PROTOCOL, paths.control_socket, runtime, os.getpid())
    stopped = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        LOG.info("stopping on signal %d", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ours = {path: _identity(path) for path in (paths.control_socket, paths.call_socket)}
    try:
        while not stopped.wait(ORPHAN_CHECK_SECONDS):
            if not settings.home.is_dir() or any(_identity(path) != identity for path, identity in ours.items()):
                LOG.warning(
                    "%s or one of its sockets is gone: stopping (the next command starts a host)", settings.home
                )
                break
            if not paths.record.exists():  # the CLI finds the host by it: put it back
                write_private_file(paths.record, json.dumps(record.as_dict()))
    finally:
        servers.stop(STOP_GRACE_SECONDS)
        for path, identity in ours.items():
            if identity is not None and _identity(path) == identity:  # never a socket of a newer host
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(FileNotFoundError):
            if json.loads(paths.record.read_text()).get("pid") == os.getpid():
                paths.record.unlink()
        LOG.info("host stopped")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
