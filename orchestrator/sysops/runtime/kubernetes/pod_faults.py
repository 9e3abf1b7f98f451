"""What ended a plugin pod's container, read from the pod alone (no Events: RBAC stays on pods).

The kubelet restarts a crashed container in the same pod and keeps its last termination: the exit code,
the reason (`OOMKilled` when the kernel killed it at its memory limit) and the termination message. The
plugin's livenessProbe (`python -m sysops_sdk.healthcheck ADDRESS TIMEOUT`) writes that message while it
finds the plugin unresponsive, so a container the kubelet killed for failing it is told apart from a crash.
`sysops serve` names these faults in `plugin status`, in events and in the error of the call that broke, as
it does on Docker (runtime/faults.py); `pod_fault` words a pod's fault the same way for the Plugin object's
status (server/plugin_controller.py), so every path says crash, OOMKilled or unresponsive alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.utils import parse_quantity
from sysops_sdk.healthcheck import UNRESPONSIVE

from sysops.runtime.base import InstanceStatus
from sysops.runtime.faults import describe_fault

#: Reasons a container waits that are a fault of the plugin's image (named when nothing ended).
IMAGE_FAULTS = ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName")


@dataclass(frozen=True)
class Termination:
    """The latest end of a pod's container (the current state's, else the last state's)."""

    exit_code: int
    oom_killed: bool
    #: The liveness probe's record when it found the plugin unresponsive ("unresponsive: ..."), else "".
    unresponsive: str
    finished_at: datetime | None


def last_termination(container_status: Any) -> Termination | None:
    """The container's latest termination (the client's V1ContainerStatus), None when it never ended."""
    if container_status is None:
        return None
    terminated = container_status.state.terminated if container_status.state else None
    if terminated is None and container_status.last_state is not None:
        terminated = container_status.last_state.terminated
    if terminated is None:
        return None
    return _termination(terminated.exit_code, terminated.reason, terminated.message, terminated.finished_at)


def _termination(exit_code: Any, reason: Any, message: Any, finished_at: datetime | None) -> Termination:
    text = str(message or "").strip()
    oom_killed = reason == "OOMKilled"
    return Termination(
        exit_code=int(exit_code or 0),
        oom_killed=oom_killed,
        unresponsive=text.splitlines()[0] if text.startswith(UNRESPONSIVE) and not oom_killed else "",
        finished_at=finished_at,
    )


def ended_since(termination: Termination | None, since: float) -> bool:
    """Whether the container ended at or after `since` (epoch seconds; the kubelet keeps whole seconds)."""
    if termination is None or termination.finished_at is None:
        return False
    return termination.finished_at.astimezone(UTC).timestamp() >= int(since)


def pod_fault(pod: Mapping[str, Any]) -> str:
    """What went wrong with a pod's container (the pod's API JSON, as informers deliver it), worded as
    runtime/faults.py words it for the call path and `plugin status` (crash, OOMKilled, unresponsive), or ""."""
    status = pod.get("status") or {}
    container_status = (status.get("containerStatuses") or [{}])[0]
    if not container_status:
        return ""
    state = container_status.get("state") or {}
    terminated = state.get("terminated") or (container_status.get("lastState") or {}).get("terminated")
    ended = None
    if terminated:
        ended = _termination(terminated.get("exitCode"), terminated.get("reason"), terminated.get("message"), None)
    running = status.get("phase") == "Running" and "running" in state
    limits = ((((pod.get("spec") or {}).get("containers") or [{}])[0].get("resources") or {}).get("limits")) or {}
    memory = int(parse_quantity(limits["memory"])) if limits.get("memory") else 0  # type: ignore[no-untyped-call]
    fault = describe_fault(
        InstanceStatus(
            handle="",
            name=str((pod.get("metadata") or {}).get("name", "")),
            labels={},
            running=running,
            exit_code=ended.exit_code if ended is not None and not running else None,
            oom_killed=ended is not None and ended.oom_killed,
            error=ended.unresponsive if ended is not None else "",
            restart_count=int(container_status.get("restartCount", 0) or 0),
        ),
        memory,
    )
    waiting = state.get("waiting") or {}
    if not fault and waiting.get("reason") in IMAGE_FAULTS:
        return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return fault
