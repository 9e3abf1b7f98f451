"""The contract between the Kubernetes driver and the node agent on a pod, and how the read-back is compared.

The annotation `sysops.dev/limits` (written by the server when it creates a plugin pod): the limits the agent
must enforce, `{"pids": 64, "io_bytes_per_sec": 5242880, "network_connections": 3}` (absent keys: no limit).
The pod condition `sysops.dev/limits-applied` (written by the agent in the pod's STATUS, so the agent needs
`pods/status` patch only, never `pods` patch, which could change a pod's image): status True when the kernel
enforces what the pod asks, False otherwise; its message is the read-back, read from the cgroup files and
iptables, for one container of the pod: `{"container_id": "docker://…", "pids": 64, "read_bps":
{"254:0": 5242880}, "write_bps": {…}, "network_connections": 3, "error": ""}`. The driver gives such a pod a
readiness gate on the condition, so the kubelet keeps it unready until the agent says True. `mismatches` is
the one rule both sides use to decide whether the read-back matches; a roll waits for it (driver.py) and the
agent skips a pod whose read-back already matches (so its own patch does not make it apply again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sysops.runtime.base import ResourceLimits

LIMITS_ANNOTATION = "sysops.dev/limits"
APPLIED_CONDITION = "sysops.dev/limits-applied"
_MIB = 1024 * 1024


def _count(document: dict[str, Any], key: str) -> int | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number >= 0, not {value!r}")
    return value


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{what} is not a JSON object")
    return document


@dataclass(frozen=True)
class NodeLimits:
    """The limits a plugin pod needs from the node agent (None: not limited)."""

    pids: int | None = None
    io_bytes_per_sec: int | None = None
    network_connections: int | None = None

    @classmethod
    def of(cls, limits: ResourceLimits) -> NodeLimits:
        """The node agent's share of a plugin's limits."""
        return cls(limits.pids, limits.io_bytes_per_sec, limits.network_connections)

    def to_json(self) -> str:
        """The `sysops.dev/limits` annotation's value."""
        return json.dumps({key: value for key, value in asdict(self).items() if value is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeLimits:
        """Parse the annotation; ValueError naming what is wrong."""
        document = _object(text, LIMITS_ANNOTATION)
        unknown = sorted(set(document) - {"pids", "io_bytes_per_sec", "network_connections"})
        if unknown:
            raise ValueError(f"{LIMITS_ANNOTATION} has unknown keys: {', '.join(unknown)}")
        return cls(
            _count(document, "pids"), _count(document, "io_bytes_per_sec"), _count(document, "network_connections")
        )


@dataclass(frozen=True)
class AppliedLimits:
    """What the node agent read back for one container of a pod (`error`: why it could not apply them)."""

    container_id: str
    pids: int | None = None
    read_bps: dict[str, int] = field(default_factory=dict)
    write_bps: dict[str, int] = field(default_factory=dict)
    network_connections: int | None = None
    error: str = ""

    def to_json(self) -> str:
        """The `sysops.dev/limits-applied` condition's message."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AppliedLimits:
        """Parse the annotation; ValueError naming what is wrong."""
        document = _object(text, APPLIED_CONDITION)
        rates: dict[str, dict[str, int]] = {}
        for key in ("read_bps", "write_bps"):
            value = document.get(key) or {}
            if not isinstance(value, dict) or not all(isinstance(rate, int) for rate in value.values()):
                raise ValueError(f"{APPLIED_CONDITION}: {key} must map devices to byte rates")
            rates[key] = {str(device): int(rate) for device, rate in value.items()}
        return cls(
            container_id=str(document.get("container_id") or ""),
            pids=_count(document, "pids"),
            read_bps=rates["read_bps"],
            write_bps=rates["write_bps"],
            network_connections=_count(document, "network_connections"),
            error=str(document.get("error") or ""),
        )

    def io_mb_per_sec(self) -> float | list[float] | None:
        """The throttle in MiB/s as `plugin status --limits` shows it: one number, a list when devices differ,
        None when there is none."""
        values = sorted({rate / _MIB for rate in [*self.read_bps.values(), *self.write_bps.values()]})
        numbers = [int(value) if value.is_integer() else round(value, 3) for value in values]
        return None if not numbers else numbers[0] if len(numbers) == 1 else numbers


def mismatches(wanted: NodeLimits, applied: AppliedLimits | None, container_id: str) -> list[str]:
    """How the read-back differs from what the pod asks, for its container `container_id` ("" = any); [] when
    it matches. A container restarted since the agent applied the limits does not match (a new cgroup)."""
    if applied is None:
        return ["not applied by the node agent yet"]
    if applied.error:
        return [f"the node agent could not apply them: {applied.error}"]
    if container_id and applied.container_id != container_id:
        return [f"applied to container {applied.container_id[-12:]}, the pod now runs {container_id[-12:]}"]
    found: list[str] = []

    def check(key: str, asked: object, got: object, where: str) -> None:
        if asked != got:
            found.append(f"{key}: asked {asked}, applied {got} ({where})")

    check("limits.pids", wanted.pids, applied.pids, "pids.max")
    for key, rates in (("read_bps", applied.read_bps), ("write_bps", applied.write_bps)):
        asked = {wanted.io_bytes_per_sec} if wanted.io_bytes_per_sec else set()
        check("limits.disk_io_mb_per_sec", asked, set(rates.values()), f"blkio.throttle.{key}_device")
    if wanted.io_bytes_per_sec and not (applied.read_bps and applied.write_bps):
        found.append("limits.disk_io_mb_per_sec: no block device throttled")
    check("limits.network_connections", wanted.network_connections, applied.network_connections, "iptables connlimit")
    return found


def applied_condition(pod: Any) -> Any:
    """The pod's `sysops.dev/limits-applied` condition (a V1PodCondition), None when it has none."""
    conditions = (pod.status.conditions if getattr(pod, "status", None) else None) or []
    return next((condition for condition in conditions if condition.type == APPLIED_CONDITION), None)


def read_applied(pod: Any) -> AppliedLimits | None:
    """The pod's read-back (its condition's message), None when absent or unreadable (then it is not applied)."""
    condition = applied_condition(pod)
    if condition is None or not condition.message:
        return None
    try:
        return AppliedLimits.from_json(str(condition.message))
    except ValueError:
        return None


def condition_body(pod: Any, applied: AppliedLimits, problems: list[str]) -> dict[str, Any]:
    """The `pods/status` strategic merge patch that sets the pod's condition to this read-back: True when
    `problems` (its mismatches) is empty. The transition time moves only when the status does, so writing the
    same read-back again changes nothing (and causes no watch event)."""
    status = "False" if problems else "True"
    previous = applied_condition(pod)
    since = previous.last_transition_time if previous is not None and previous.status == status else None
    when = (since or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": APPLIED_CONDITION,
        "status": status,
        "reason": "LimitsApplied" if not problems else "AgentError" if applied.error else "LimitsDiffer",
        "message": applied.to_json(),
        "lastTransitionTime": when,
    }
    return {"status": {"conditions": [condition]}}
