"""Name the fault that ended or restarted a plugin instance: OOMKilled, a crash, or failed after repeated crashes.

Used by `plugin status`, by rollout errors, and by the routed CLI when an invocation's stream breaks
(`describe_instance_failure`). That last caller is the hot path of `sysops <command>`, which must not import
the Docker SDK, so this module talks to the engine's HTTP API over its Unix socket with the standard
library only, and only after a call has already failed.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.parse
from datetime import datetime
from typing import Any

from sysops.runtime.base import InstanceStatus

#: Restarts the engine makes after a crash before the instance is left stopped (marked Failed).
MAX_RESTARTS = 3
_MIB = 1024 * 1024


def _mib(value: int) -> str:
    return f"{value / _MIB:.0f} MiB" if value % _MIB == 0 else f"{value / _MIB:.1f} MiB"


def oom_message(memory_limit: int, peak: int | None) -> str:
    """`OOMKilled (memory limit 64 MiB, peak 64 MiB)`; the peak is the limit when it can no longer be read."""
    if peak is None or peak < memory_limit:
        # The kernel OOM-kills only when a charge fails at the limit, so the peak reached it.
        peak_text = f"peak reached the {_mib(memory_limit)} limit"
    else:
        peak_text = f"peak {_mib(peak)}"
    return f"OOMKilled (memory limit {_mib(memory_limit)}, {peak_text})"


def describe_fault(status: InstanceStatus, memory_limit: int, peak: int | None = None) -> str:
    """One line naming what went wrong with an instance, or "" when nothing did."""
    restarts = f", restarted {status.restart_count} time{'s' * (status.restart_count != 1)}"
    if status.oom_killed:
        text = oom_message(memory_limit, peak)
        if status.running:
            return f"{text}{restarts}" if status.restart_count else text
        if status.restart_count >= MAX_RESTARTS:
            return f"Failed after {status.restart_count} restarts: last exit {text}"
        return text
    if status.running:
        return f"crashed{restarts} (last exit code unknown)" if status.restart_count else ""
    if status.exit_code in (None, 0):
        return ""
    if status.restart_count >= MAX_RESTARTS:
        return f"Failed after {status.restart_count} restarts: last exit code {status.exit_code}"
    return f"exited with code {status.exit_code}" + (restarts if status.restart_count else "")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _engine_get(path: str, timeout: float) -> Any:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    connection = _UnixConnection(host.removeprefix("unix://"), timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _started_after(started_at: str, since: float) -> bool:
    try:
        started = datetime.fromisoformat(started_at[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return False
    return started >= since


def describe_instance_failure(endpoint: str, since: float, wait: float = 3.0) -> str | None:
    """Why the instance serving `endpoint` broke a call begun at `since` (epoch seconds), if it did.

    `endpoint` is the instance's `unix://<run dir>/<instance id>/plugin.sock`. Returns e.g.
    "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit), restarted 1 time", or None when the
    engine says the instance did not die (or cannot be asked). Waits up to `wait` seconds for the engine
    to record the death: the stream can break a few milliseconds before the engine notices.
    """
    instance = os.path.basename(os.path.dirname(endpoint.removeprefix("unix://")))
    if not instance:
        return None
    filters = urllib.parse.quote(json.dumps({"label": [f"sysops.instance={instance}"]}))
    deadline = time.monotonic() + wait
    while True:
        listed = _engine_get(f"/containers/json?all=1&filters={filters}", timeout=2.0)
        for summary in listed or []:
            if (summary.get("Labels") or {}).get("sysops.role"):
                continue
            attrs = _engine_get(f"/containers/{summary['Id']}/json", timeout=2.0)
            if not attrs:
                continue
            state = attrs.get("State", {})
            running = bool(state.get("Running")) and not state.get("Restarting")
            died = not running or _started_after(str(state.get("StartedAt") or ""), since)
            if died:
                status = InstanceStatus(
                    handle=str(attrs.get("Id")),
                    name=str(attrs.get("Name", "")).lstrip("/"),
                    labels={},
                    running=running,
                    exit_code=None if running else int(state.get("ExitCode") or 0),
                    oom_killed=bool(state.get("OOMKilled")),
                    restart_count=int(attrs.get("RestartCount") or 0),
                )
                memory = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
                text = describe_fault(status, memory)
                if text and (status.oom_killed or not running or state.get("Restarting")):
                    return text
        if listed is None or time.monotonic() > deadline:
            return None
        time.sleep(0.1)
