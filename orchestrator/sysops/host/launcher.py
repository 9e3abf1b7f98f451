"""Finding, starting and stopping the resident host of an installation, from the CLI's side.

The first CLI command that needs the host starts it in the background (`sysops host run`, in a session of
its own, its output appended to SYSOPS_HOME/host.log) and waits until its control socket answers. A lock
in SYSOPS_HOME keeps two CLIs that start at once from starting two hosts; the host itself also holds a
lock for as long as it runs, so a second one started by hand refuses to run. A host of another protocol
(an upgraded sysops) is stopped and replaced. Kept free of heavy imports: the routed-command path calls
`ensure_host` when its socket is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sysops.core.locks import held_lock
from sysops.errors import EngineUnavailableError
from sysops.host.paths import HostPaths, host_paths
from sysops.host.peer import listener
from sysops.private_paths import PRIVATE_FILE_MODE, ensure_private_dir
from sysops.processes import process_alive
from sysops.settings import Settings

#: Bumped when the CLI and the host stop understanding each other; a host of another protocol is replaced.
HOST_PROTOCOL = "1"
#: Seconds a starting host has to answer (it reconciles every plugin first).
START_TIMEOUT_SECONDS = 60.0
#: Seconds `stop` waits for a host to exit after SIGTERM before it kills it.
STOP_TIMEOUT_SECONDS = 20.0
#: host.log is moved to host.log.1 when a host starts and finds it larger than this.
LOG_ROTATE_BYTES = 10 << 20
_POLL_SECONDS = 0.05
#: Environment variables the host reads (engine, timeouts, base image, policy): a CLI whose values differ
#: from the running host's replaces it, so the engine and settings a command names are the ones it gets.
HOST_ENVIRONMENT = (
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "SYSOPS_READY_TIMEOUT",
    "SYSOPS_DRAIN_TIMEOUT",
    "SYSOPS_BASE_IMAGE",
    "SYSOPS_STABLE_SECONDS",
    "SYSOPS_POLICY",
    "SYSOPS_BUS_BACKLOG",
)


@dataclass(frozen=True)
class HostRecord:
    """What a running host wrote about itself in host.json."""

    pid: int
    protocol: str
    started: float
    runtime: str
    #: The settings the host took from the environment of the command that started it (HOST_ENVIRONMENT).
    environment: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The record as JSON-able data."""
        return {
            "pid": self.pid,
            "protocol": self.protocol,
            "started": self.started,
            "runtime": self.runtime,
            "environment": self.environment,
        }


def read_record(paths: HostPaths) -> HostRecord | None:
    """The record of the host, or None when there is none or it is unreadable."""
    try:
        data = json.loads(paths.record.read_text())
        environment = data.get("environment") or {}
        return HostRecord(
            int(data["pid"]),
            str(data["protocol"]),
            float(data["started"]),
            str(data["runtime"]),
            {str(key): str(value) for key, value in environment.items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def host_environment() -> dict[str, str]:
    """The variables of this process's environment that change what a host does."""
    return {name: os.environ[name] for name in HOST_ENVIRONMENT if name in os.environ}


def running_host(settings: Settings | None = None) -> HostRecord | None:
    """The record of the host that runs and answers for this installation, or None.

    The process listening on the control socket must be the one host.json names, and ours: a stale record
    whose pid now belongs to another program, or a socket someone else planted, is no host of ours.
    """
    paths = host_paths(settings)
    record = read_record(paths)
    if record is None or listener(paths.control_socket) != (record.pid, os.geteuid()):
        return None
    return record


def ensure_host(settings: Settings | None = None) -> HostPaths:
    """Make sure the installation's host runs and answers (starting it if needed); return its paths."""
    settings = settings or Settings()
    paths = host_paths(settings)
    record = running_host(settings)
    if record is not None and _current(record):
        return paths
    settings.ensure_home()
    ensure_private_dir(paths.start_lock.parent)
    with held_lock(paths.start_lock):
        record = running_host(settings)  # another CLI may have started it while we waited for the lock
        if record is not None and _current(record):
            return paths
        if record is not None:
            # A host of another sysops, or started with another engine or settings: replaced by ours.
            sys.stderr.write(f"• restarting the sysops host: {_difference(record)}\n")
            stop_host(settings)
        elif _settled(settings, paths):
            return paths  # a host that was starting (systemd, `host run`) answers now
        _start(paths)
    return paths


def _settled(settings: Settings, paths: HostPaths) -> bool:
    """Wait while a host holds the host lock without answering; True if it then answers as ours.

    One that is starting answers within START_TIMEOUT_SECONDS; one that lost its sockets stops by itself
    within seconds (its orphan check), freeing the lock for a new host.
    """
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while (holder := lock_holder(paths.host_lock)) is not None:
        record = running_host(settings)
        if record is not None and _current(record):
            return True
        if time.monotonic() > deadline:
            raise EngineUnavailableError(
                f"a sysops host (pid {holder}) holds {settings.home} but does not answer",
                hint="`sysops host stop` stops it; `sysops host logs` says why",
            )
        time.sleep(_POLL_SECONDS)
    return False


def _current(record: HostRecord) -> bool:
    return record.protocol == HOST_PROTOCOL and record.environment == host_environment()


def _difference(record: HostRecord) -> str:
    if record.protocol != HOST_PROTOCOL:
        return f"it speaks protocol {record.protocol}, this sysops {HOST_PROTOCOL}"
    ours = host_environment()
    changed = sorted(name for name in HOST_ENVIRONMENT if record.environment.get(name) != ours.get(name))
    return f"{', '.join(changed)} differ from the environment it was started with"


def _start(paths: HostPaths) -> None:
    """Start `sysops host run` in the background and wait until its control socket answers."""
    _rotate(paths.log)
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "sysops.cli.main", "host", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C in the terminal that started it must not stop it
            close_fds=True,
        )
    finally:
        os.close(log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailableError(
                f"the sysops host did not start (exit code {process.returncode}): {last_log_line(paths.log)}",
                hint=f"see `sysops host logs` ({paths.log})",
            )
        record = read_record(paths)
        if record is not None and listener(paths.control_socket) == (process.pid, os.geteuid()):
            return
        time.sleep(_POLL_SECONDS)
    raise EngineUnavailableError(
        f"the sysops host did not answer within {START_TIMEOUT_SECONDS:g}s (pid {process.pid})",
        hint=f"see `sysops host logs` ({paths.log})",
    )


def _rotate(log: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))


def last_log_line(log: Path) -> str:
    """The last non-empty line of the host's log (what it said before it stopped)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:500] if lines else "no log"


def stop_host(settings: Settings | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> HostRecord | None:
    """Stop the installation's host (SIGTERM, then SIGKILL after `timeout`); return what was stopped.

    The pid signalled is the one listening on the control socket (SO_PEERCRED), ours and a sysops host:
    never a pid taken from host.json alone, which may have been reused by another program. Plugins keep
    running: the next host re-adopts them.
    """
    paths = host_paths(settings)
    serving = listener(paths.control_socket)
    # A host that lost its sockets (or is still starting) is found as the holder of the host lock.
    pid = serving[0] if serving is not None and serving[1] == os.geteuid() else lock_holder(paths.host_lock) or 0
    if not pid or not _is_host_process(pid) or _owner(pid) != os.geteuid():
        return None
    record = read_record(paths)
    if record is None or record.pid != pid:
        record = HostRecord(pid, "?", 0.0, "?")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(_POLL_SECONDS)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout  # a thread stuck in the kernel (a hung mount) delays even SIGKILL
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(_POLL_SECONDS)
    return record


def lock_holder(path: Path) -> int | None:
    """The pid holding the flock of `path`, from the kernel's lock table (/proc/locks), or None."""
    try:
        info = os.stat(path)
        with open("/proc/locks") as handle:
            table = handle.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in table:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:  # "->" lines (waiters) differ
            return int(fields[4])
    return None


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _is_host_process(pid: int) -> bool:
    """Whether `pid` runs `sysops host run` (as the launcher or systemd starts it)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return False
    pairs = list(itertools.pairwise(words))
    return (b"host", b"run") in pairs and any(b"sysops" in word for word in words)
