"""An instance's live usage as `plugin status` shows it, whichever runtime read the cgroup (Docker: the host's
files, runtime/docker/cgroups.py; Kubernetes: the pod's own SDK, runtime/kubernetes/pod_usage.py)."""

from __future__ import annotations

from collections.abc import Mapping

_MIB = 1024 * 1024


def usage_report(raw: Mapping[str, int | None], cores: float | None, cpu_window: str) -> dict[str, object]:
    """The `usage` of a ResourceReport from a cgroup reading (memory_bytes, memory_peak_bytes, memory_failcnt,
    oom_kills, pids_current, pids_max_hits) and the CPU used over `cpu_window` (cores; None when unknown)."""
    memory, peak = raw.get("memory_bytes"), raw.get("memory_peak_bytes")
    return {
        "cpu_percent": round(cores * 100, 1) if cores is not None else None,
        "cpu_window": cpu_window,
        "memory_mb": round(memory / _MIB, 1) if memory is not None else None,
        "memory_peak_mb": round(peak / _MIB, 1) if peak is not None else None,
        "memory_limit_hits": raw.get("memory_failcnt"),
        "oom_kills": raw.get("oom_kills"),
        "pids": raw.get("pids_current"),
        "pids_limit_hits": raw.get("pids_max_hits"),
    }
