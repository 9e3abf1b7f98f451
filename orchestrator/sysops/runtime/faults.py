"""Name the fault that ended or restarted a plugin instance, and keep the engine's restart budget fair.

Used by `plugin status` (fault and last error), by rollout errors, by the Docker driver (restart budget,
instance status from the engine's JSON), and by the routed CLI when a call finds its instance dead or
restarting (`describe_instance_failure`, `unreachable_error`) or overran its deadline (`pids_limit_hits`).
That last caller is the hot path of `sysops <command>`, which must not import the Docker SDK, so this
module talks to the engine's HTTP API over its Unix socket with the standard library only, and only after
a call has already failed.

The restart budget: the engine restarts a crashed container at most MAX_RESTARTS times and never forgets
a crash (its on-failure count only grows). An instance that then runs for `stability_window()` seconds
gets a fresh budget (`budget_action`): the driver raises the engine's retry cap to the current count plus
MAX_RESTARTS, so crashes in the current budget are `RestartCount - (MaximumRetryCount - MAX_RESTARTS)`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sysops_sdk.healthcheck import UNRESPONSIVE

from sysops.errors import PluginUnavailableError
from sysops.runtime.base import InstanceStatus

#: Restarts the engine makes after a crash before the instance is left stopped (marked Failed).
MAX_RESTARTS = 3
#: Seconds an instance must run without crashing before its restart budget is whole again (default).
DEFAULT_STABILITY_WINDOW = 600.0
#: The plugin server's line once it serves: normal output, never a reason for a failure.
_SERVING_LINE = re.compile(r"^sysops-plugin: \S+ \S+ serving on ")
_OWN_PREFIX = "sysops-plugin: "
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


def given_up(status: InstanceStatus) -> bool:
    """Whether the engine stopped restarting an instance: stopped, no restart pending, its budget spent."""
    return not status.running and not status.restarting and status.restart_count >= MAX_RESTARTS


def describe_fault(status: InstanceStatus, memory_limit: int, peak: int | None = None) -> str:
    """One line naming what went wrong with an instance, or "" when nothing did."""
    restarts = f", restarted {status.restart_count} time{'s' * (status.restart_count != 1)}"
    if status.error.startswith(UNRESPONSIVE):  # killed by its livenessProbe (Kubernetes: pod_faults.py)
        return f"{status.error}{restarts}" if status.restart_count else status.error
    if status.oom_killed:
        text = oom_message(memory_limit, peak)
        if status.running:
            return f"{text}{restarts}" if status.restart_count else text
        if given_up(status):
            return f"Failed after {status.restart_count} restarts: last exit {text}"
        return f"{text}{restarts} (the engine starts it again)" if status.restarting else text
    if status.running:
        return f"crashed{restarts} (last exit code unknown)" if status.restart_count else ""
    if status.exit_code in (None, 0):
        return ""
    if given_up(status):
        return f"Failed after {status.restart_count} restarts: last exit code {status.exit_code}"
    pending = " (the engine starts it again)" if status.restarting else ""
    return f"exited with code {status.exit_code}" + (restarts if status.restart_count else "") + pending


def engine_timestamp(text: str) -> float | None:
    """Epoch seconds of an engine timestamp such as 2024-05-01T10:00:00.123456789Z (None when unset)."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return None


def crashes_in_budget(attrs: Mapping[str, Any]) -> int:
    """Restarts the engine made since the instance's restart budget was last whole (from inspect JSON)."""
    restarts = int(attrs.get("RestartCount") or 0)
    policy = (attrs.get("HostConfig") or {}).get("RestartPolicy") or {}
    allowed = int(policy.get("MaximumRetryCount") or MAX_RESTARTS)
    return max(0, restarts - max(0, allowed - MAX_RESTARTS))


def status_from_attrs(attrs: Mapping[str, Any]) -> InstanceStatus:
    """An instance's status from the engine's inspect JSON; `restart_count` counts the current budget only."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    running = bool(state.get("Running")) and not state.get("Restarting")
    return InstanceStatus(
        handle=str(attrs.get("Id")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        running=running,
        exit_code=None if running else int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        started_at=str(state.get("StartedAt") or ""),
        finished_at=str(state.get("FinishedAt") or ""),
        pid=int(state.get("Pid") or 0),
        restart_count=crashes_in_budget(attrs),
        restarting=bool(state.get("Restarting")),
        image=str(attrs.get("Image") or ""),
        token=next((item.split("=", 1)[1] for item in config.get("Env") or [] if item.startswith("SYSOPS_TOKEN=")), ""),
    )


def stability_window() -> float:
    """Seconds without a crash after which an instance's restart budget is whole (`SYSOPS_STABLE_SECONDS`)."""
    try:
        return max(0.0, float(os.environ.get("SYSOPS_STABLE_SECONDS", DEFAULT_STABILITY_WINDOW)))
    except ValueError:
        return DEFAULT_STABILITY_WINDOW


class BudgetAction(StrEnum):
    """What the driver does about an instance's restart budget."""

    KEEP = "keep"
    #: The instance ran stably since its last crash: give it a whole budget again.
    REARM = "rearm"
    #: The engine gave up after a crash that ended a stable run: that crash was the first of a new budget.
    RESTART = "restart"


def budget_action(attrs: Mapping[str, Any], now: float, window: float) -> BudgetAction:
    """Decide from inspect JSON whether an instance's restart budget is due to be whole again."""
    state = attrs.get("State") or {}
    crashes = crashes_in_budget(attrs)
    started = engine_timestamp(str(state.get("StartedAt") or ""))
    if crashes == 0 or started is None or state.get("Restarting"):
        return BudgetAction.KEEP
    if state.get("Running"):
        return BudgetAction.REARM if now - started >= window else BudgetAction.KEEP
    finished = engine_timestamp(str(state.get("FinishedAt") or ""))
    gave_up = crashes >= MAX_RESTARTS and int(state.get("ExitCode") or 0) != 0
    if gave_up and finished is not None and finished - started >= window:
        return BudgetAction.RESTART
    return BudgetAction.KEEP


def _reason(lines: Sequence[str]) -> str:
    """The last line that says something: the plugin server's own message, else the last non-empty line."""
    meaningful = [line.strip() for line in lines if line.strip()]
    own = [line.removeprefix(_OWN_PREFIX) for line in meaningful if line.startswith(_OWN_PREFIX)]
    return own[-1] if own else meaningful[-1] if meaningful else ""


def last_error(status: InstanceStatus, log_lines: Sequence[str], memory_limit: int) -> str:
    """The real failure of an instance: OOM, or its exit code with the last telling log line after it served.

    The plugin server's "serving on ..." line is normal output and is never the reason. For an instance
    that runs again after crashes, the reason is taken from the run before the latest start.
    """
    serving = [index for index, line in enumerate(log_lines) if _SERVING_LINE.match(line.strip())]
    if status.error.startswith(UNRESPONSIVE):
        return describe_fault(status, memory_limit)
    if status.running:
        if not status.restart_count or not serving:
            return ""
        previous = serving[-2] + 1 if len(serving) > 1 else 0
        reason = _reason(log_lines[previous : serving[-1]])
        crashed = f"crashed, restarted {status.restart_count} time{'s' * (status.restart_count != 1)}"
        return f"{crashed}: {reason}" if reason else crashed
    if status.oom_killed:
        return oom_message(memory_limit, None)
    if status.exit_code == 0:
        return (
            "stopped outside sysops with exit code 0 (the engine restarted, or `docker stop`); "
            "reconciliation starts it again a few seconds after the stop"
        )
    reason = _reason(log_lines[serving[-1] + 1 :] if serving else log_lines) or status.error
    code = f"exited with code {status.exit_code}"
    return f"{code}: {reason}" if reason else code


def restarting_message(plugin: str, status: InstanceStatus) -> str:
    """`plugin 'x' is restarting (crash 2 of 3: exit code 1)`, or that it failed when the budget is spent."""
    cause = "OOMKilled" if status.oom_killed else f"exit code {status.exit_code}"
    if given_up(status):
        return f"plugin {plugin!r} failed after {status.restart_count} restarts (last {cause})"
    if not status.restart_count:
        return f"plugin {plugin!r} stopped ({cause})"
    if status.running and not status.oom_killed:  # started again, not serving yet: the exit code is gone
        return f"plugin {plugin!r} is restarting (crash {status.restart_count} of {MAX_RESTARTS})"
    return f"plugin {plugin!r} is restarting (crash {status.restart_count} of {MAX_RESTARTS}: {cause})"


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


def _instance_attrs(endpoint: str) -> list[dict[str, Any]] | None:
    """Inspect JSON of the plugin container serving `endpoint` (a list, empty when gone; None: no engine)."""
    instance = os.path.basename(os.path.dirname(endpoint.removeprefix("unix://")))
    if not instance:
        return None
    filters = urllib.parse.quote(json.dumps({"label": [f"sysops.instance={instance}"]}))
    listed = _engine_get(f"/containers/json?all=1&filters={filters}", timeout=2.0)
    if listed is None:
        return None
    found = []
    for summary in listed:
        if (summary.get("Labels") or {}).get("sysops.role"):
            continue
        attrs = _engine_get(f"/containers/{summary['Id']}/json", timeout=2.0)
        if attrs:
            found.append(attrs)
    return found


def describe_instance_failure(endpoint: str, since: float, wait: float = 3.0) -> str | None:
    """Why the instance serving `endpoint` broke a call begun at `since` (epoch seconds), if it did.

    `endpoint` is the instance's `unix://<run dir>/<instance id>/plugin.sock`. Returns e.g.
    "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit), restarted 1 time", or None when the
    engine says the instance did not die (or cannot be asked). Waits up to `wait` seconds for the engine
    to record the death: the stream can break a few milliseconds before the engine notices.
    """
    deadline = time.monotonic() + wait
    while True:
        found = _instance_attrs(endpoint)
        for attrs in found or []:
            state = attrs.get("State", {})
            status = status_from_attrs(attrs)
            started = engine_timestamp(str(state.get("StartedAt") or ""))
            if not status.running or (started is not None and started >= since):
                memory = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
                text = describe_fault(status, memory)
                if text and (status.oom_killed or not status.running):
                    return text
        if found is None or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def pids_limit_hits(endpoint: str) -> tuple[int, int] | None:
    """(times the pids limit refused a fork, the limit) of the running instance serving `endpoint`, from its
    cgroup's `pids.events` (v1 and v2); None when it is not running here or the count cannot be read."""
    from sysops.runtime.docker.cgroups import CgroupLocator

    for attrs in _instance_attrs(endpoint) or []:
        state = attrs.get("State") or {}
        if not state.get("Running"):
            continue
        parent = str((attrs.get("HostConfig") or {}).get("CgroupParent") or "/docker")
        reading = CgroupLocator().read(int(state.get("Pid") or 0), str(attrs.get("Id")), parent)
        hits = reading.usage.get("pids_max_hits") if reading else None
        limit = reading.limits.get("pids_max") if reading else None
        if isinstance(hits, int) and isinstance(limit, int):
            return hits, limit
    return None


def unreachable_error(plugin: str, endpoint: str, error: PluginUnavailableError, wait: float = 1.5) -> Exception:
    """The error for a call no instance took: "plugin 'x' is restarting (crash 2 of 3: exit code 1)" when the
    engine says its instance crashed (waiting up to `wait` seconds for the engine to notice), else `error`."""
    if not endpoint.startswith("unix://"):
        return error
    deadline = time.monotonic() + wait
    while True:
        found = _instance_attrs(endpoint)
        late = found is None or time.monotonic() > deadline
        for attrs in found or []:
            status = status_from_attrs(attrs)
            if (not status.running and (status.restart_count or status.exit_code)) or (late and status.restart_count):
                return PluginUnavailableError(
                    restarting_message(plugin, status), hint=f"see `sysops plugin status {plugin}`"
                )
        if late:
            return error
        time.sleep(0.1)
