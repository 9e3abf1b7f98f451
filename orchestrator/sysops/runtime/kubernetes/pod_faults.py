"""What ended a plugin pod's container, read from the pod alone (no Events: RBAC stays on pods).

The kubelet restarts a crashed container in the same pod and keeps its last termination: the exit code,
the reason (`OOMKilled` when the kernel killed it at its memory limit) and the termination message. The
plugin's livenessProbe (`python -m sysops_sdk.healthcheck ADDRESS TIMEOUT`) writes that message while it
finds the plugin unresponsive, so a container the kubelet killed for failing it is told apart from a crash.
`sysops serve` names these faults in `plugin status`, in events and in the error of the call that broke, as
it does on Docker (runtime/faults.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sysops_sdk.healthcheck import UNRESPONSIVE


@dataclass(frozen=True)
class Termination:
    """The latest end of a pod's container (the current state's, else the last state's)."""

    exit_code: int
    oom_killed: bool
    #: The liveness probe's record when it found the plugin unresponsive ("unresponsive: ..."), else "".
    unresponsive: str
    finished_at: datetime | None


def last_termination(container_status: Any) -> Termination | None:
    """The container's latest termination, None when it never ended."""
    if container_status is None:
        return None
    terminated = container_status.state.terminated if container_status.state else None
    if terminated is None and container_status.last_state is not None:
        terminated = container_status.last_state.terminated
    if terminated is None:
        return None
    message = str(terminated.message or "").strip()
    oom_killed = terminated.reason == "OOMKilled"
    return Termination(
        exit_code=int(terminated.exit_code),
        oom_killed=oom_killed,
        unresponsive=message.splitlines()[0] if message.startswith(UNRESPONSIVE) and not oom_killed else "",
        finished_at=terminated.finished_at,
    )


def ended_since(termination: Termination | None, since: float) -> bool:
    """Whether the container ended at or after `since` (epoch seconds; the kubelet keeps whole seconds)."""
    if termination is None or termination.finished_at is None:
        return False
    return termination.finished_at.astimezone(UTC).timestamp() >= int(since)
