"""The plugin's own live usage, read from its cgroup: what `plugin status` shows where the orchestrator cannot
read the cgroup itself (a pod on Kubernetes, whose node the server does not reach).

The plugin server attaches it to every Describe reply as trailing metadata (USAGE_METADATA_KEY, JSON), so no
new RPC is needed and a caller that does not look for it is unaffected. Keys are those the orchestrator's
Docker driver reads from the container's cgroup (runtime/docker/cgroups.py): memory_bytes, memory_peak_bytes,
memory_failcnt, oom_kills, cpu_usage_ns, pids_current, pids_max_hits; a value that cannot be read is null.
Both cgroup v1 (a hierarchy per controller, mounted at the container's own cgroup) and v2 are read.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The trailing metadata key of Describe that carries the usage (JSON object).
USAGE_METADATA_KEY = "sysops-usage"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_text(path: Path) -> str | None:
    """A cgroup file's content, stripped; None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_int(text: str | None) -> int | None:
    """The number a cgroup file starts with; None for `max`, nothing, or no number."""
    if text is None or text == "max":
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def keyed(text: str | None) -> dict[str, str]:
    """`key value` lines (memory.oom_control, cpu.stat, memory.events, pids.events) as a dict."""
    pairs: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        pairs[key] = value.strip()
    return pairs


def own_usage(root: Path = CGROUP_ROOT) -> dict[str, int | None]:
    """This container's usage from its cgroup files (every value None outside a container)."""
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        usage_usec = read_int(keyed(read_text(root / "cpu.stat")).get("usage_usec"))
        events = keyed(read_text(root / "memory.events"))
        return {
            "memory_bytes": read_int(read_text(root / "memory.current")),
            "memory_peak_bytes": read_int(read_text(root / "memory.peak")),
            "memory_failcnt": read_int(events.get("max")),
            "oom_kills": read_int(events.get("oom_kill")),
            "cpu_usage_ns": usage_usec * 1000 if usage_usec is not None else None,
            "pids_current": read_int(read_text(root / "pids.current")),
            "pids_max_hits": read_int(keyed(read_text(root / "pids.events")).get("max")),
        }
    memory, pids = root / "memory", root / "pids"
    return {
        "memory_bytes": read_int(read_text(memory / "memory.usage_in_bytes")),
        "memory_peak_bytes": read_int(read_text(memory / "memory.max_usage_in_bytes")),
        "memory_failcnt": read_int(read_text(memory / "memory.failcnt")),
        "oom_kills": read_int(keyed(read_text(memory / "memory.oom_control")).get("oom_kill")),
        "cpu_usage_ns": read_int(read_text(root / "cpuacct" / "cpuacct.usage")),
        "pids_current": read_int(read_text(pids / "pids.current")),
        "pids_max_hits": read_int(keyed(read_text(pids / "pids.events")).get("max")),
    }


def usage_metadata() -> tuple[tuple[str, str]]:
    """The trailing metadata of a Describe reply."""
    return ((USAGE_METADATA_KEY, json.dumps(own_usage())),)
