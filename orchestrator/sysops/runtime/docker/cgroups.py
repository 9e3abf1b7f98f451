"""Read a container's limits and usage straight from its cgroup files, and find the block device to throttle.

The engine's `inspect` says what it was asked to apply; the cgroup files say what the kernel enforces.
Reading them back is how sysops proves a plugin's limits are in force (a difference is an error), and it
gives live usage without the 1.5 s `docker stats` round trip. Both cgroup v1 (one hierarchy per
controller, `/sys/fs/cgroup/<controller>/...`) and v2 (one unified hierarchy) are read; paths come from
`/proc/<pid>/cgroup` of the container's init process, falling back to the engine's default parent.
Nothing here imports `docker`: it is plain file reading, unit-testable against a fake tree.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sysops_sdk.usage import keyed as _keyed
from sysops_sdk.usage import read_int as _int
from sysops_sdk.usage import read_text as _read

#: Controllers whose v1 hierarchies sysops reads.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")


@dataclass(frozen=True)
class CgroupReading:
    """Limits the kernel enforces on one container and its usage at the time of reading."""

    version: int
    #: Limits: cpu_quota_us/cpu_period_us (quota None = unlimited), memory_limit_bytes, memory_swap_limit_bytes
    #: (v1: memory+swap; v2: swap alone), pids_max (None = unlimited), read_bps/write_bps by "major:minor".
    limits: dict[str, object] = field(default_factory=dict)
    #: Usage: memory_bytes, memory_peak_bytes, memory_failcnt, oom_kills, cpu_usage_ns, pids_current, pids_max_hits.
    usage: dict[str, int | None] = field(default_factory=dict)


def _device_rates(text: str | None) -> dict[str, int]:
    """Parse v1 `blkio.throttle.*_bps_device` lines: `254:0 5242880`."""
    rates: dict[str, int] = {}
    for line in (text or "").splitlines():
        device, _, rate = line.partition(" ")
        if rate.strip().isdigit():
            rates[device] = int(rate)
    return rates


def _io_max(text: str | None) -> tuple[dict[str, int], dict[str, int]]:
    """Parse v2 `io.max` lines: `254:0 rbps=5242880 wbps=5242880 riops=max wiops=max`."""
    reads: dict[str, int] = {}
    writes: dict[str, int] = {}
    for line in (text or "").splitlines():
        device, *settings = line.split()
        for setting in settings:
            key, _, value = setting.partition("=")
            if value.isdigit() and key == "rbps":
                reads[device] = int(value)
            elif value.isdigit() and key == "wbps":
                writes[device] = int(value)
    return reads, writes


class CgroupLocator:
    """Finds the cgroup directories of a container under a cgroup filesystem root (normally /sys/fs/cgroup)."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc

    @property
    def version(self) -> int:
        """2 on a unified-only host, else 1."""
        return 2 if (self.root / "cgroup.controllers").exists() else 1

    def directories(self, pid: int, container_id: str, parent: str = "/docker") -> dict[str, Path]:
        """Map controller ("memory", ...; "" for v2) to the container's cgroup directory that exists."""
        relative: dict[str, str] = {}
        text = _read(self.proc / str(pid) / "cgroup") if pid > 0 else None
        for line in (text or "").splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                relative[controller] = path
        fallback = f"{parent.rstrip('/') or ''}/{container_id}"
        found: dict[str, Path] = {}
        wanted = [""] if self.version == 2 else list(V1_CONTROLLERS)
        for controller in wanted:
            base = self.root / controller if controller else self.root
            for candidate in (relative.get(controller), fallback):
                if candidate is None:
                    continue
                directory = base / candidate.lstrip("/")
                if directory.is_dir():
                    found[controller] = directory
                    break
        return found

    def read(self, pid: int, container_id: str, parent: str = "/docker") -> CgroupReading | None:
        """Read limits and usage; None when the container has no cgroup (not running, or not on this host)."""
        dirs = self.directories(pid, container_id, parent)
        if not dirs:
            return None
        return _read_v2(dirs[""]) if "" in dirs else _read_v1(dirs)

    def cpu_usage_ns(self, pid: int, container_id: str, parent: str = "/docker") -> int | None:
        """Cumulative CPU time of the container in nanoseconds."""
        reading = self.read(pid, container_id, parent)
        return reading.usage.get("cpu_usage_ns") if reading else None

    def sample_cpu_cores(self, pid: int, container_id: str, seconds: float, parent: str = "/docker") -> float | None:
        """CPU used over `seconds`, in cores (1.0 = one core busy), from cgroup accounting."""
        before, started = self.cpu_usage_ns(pid, container_id, parent), time.monotonic()
        time.sleep(seconds)
        after, ended = self.cpu_usage_ns(pid, container_id, parent), time.monotonic()
        if before is None or after is None:
            return None
        return (after - before) / 1e9 / (ended - started)


def _read_v1(dirs: dict[str, Path]) -> CgroupReading:
    limits: dict[str, object] = {}
    usage: dict[str, int | None] = {}
    if memory := dirs.get("memory"):
        limits["memory_limit_bytes"] = _int(_read(memory / "memory.limit_in_bytes"))
        limits["memory_swap_limit_bytes"] = _int(_read(memory / "memory.memsw.limit_in_bytes"))
        usage["memory_bytes"] = _int(_read(memory / "memory.usage_in_bytes"))
        usage["memory_peak_bytes"] = _int(_read(memory / "memory.max_usage_in_bytes"))
        usage["memory_failcnt"] = _int(_read(memory / "memory.failcnt"))
        usage["oom_kills"] = _int(_keyed(_read(memory / "memory.oom_control")).get("oom_kill"))
    if cpu := dirs.get("cpu"):
        quota = _int(_read(cpu / "cpu.cfs_quota_us"))
        limits["cpu_quota_us"] = quota if quota is not None and quota > 0 else None
        limits["cpu_period_us"] = _int(_read(cpu / "cpu.cfs_period_us"))
    if cpuacct := dirs.get("cpuacct"):
        usage["cpu_usage_ns"] = _int(_read(cpuacct / "cpuacct.usage"))
    if pids := dirs.get("pids"):
        limits["pids_max"] = _int(_read(pids / "pids.max"))
        usage["pids_current"] = _int(_read(pids / "pids.current"))
        usage["pids_max_hits"] = _int(_keyed(_read(pids / "pids.events")).get("max"))
    if blkio := dirs.get("blkio"):
        limits["read_bps"] = _device_rates(_read(blkio / "blkio.throttle.read_bps_device"))
        limits["write_bps"] = _device_rates(_read(blkio / "blkio.throttle.write_bps_device"))
    return CgroupReading(version=1, limits=limits, usage=usage)


def _read_v2(directory: Path) -> CgroupReading:
    cpu_max = (_read(directory / "cpu.max") or "max 100000").split()
    reads, writes = _io_max(_read(directory / "io.max"))
    usage_usec = _int(_keyed(_read(directory / "cpu.stat")).get("usage_usec"))
    limits: dict[str, object] = {
        "memory_limit_bytes": _int(_read(directory / "memory.max")),
        "memory_swap_limit_bytes": _int(_read(directory / "memory.swap.max")),
        "cpu_quota_us": _int(cpu_max[0]),
        "cpu_period_us": _int(cpu_max[1]) if len(cpu_max) > 1 else None,
        "pids_max": _int(_read(directory / "pids.max")),
        "read_bps": reads,
        "write_bps": writes,
    }
    usage: dict[str, int | None] = {
        "memory_bytes": _int(_read(directory / "memory.current")),
        "memory_peak_bytes": _int(_read(directory / "memory.peak")),
        "memory_failcnt": _int(_keyed(_read(directory / "memory.events")).get("max")),
        "oom_kills": _int(_keyed(_read(directory / "memory.events")).get("oom_kill")),
        "cpu_usage_ns": usage_usec * 1000 if usage_usec is not None else None,
        "pids_current": _int(_read(directory / "pids.current")),
        "pids_max_hits": _int(_keyed(_read(directory / "pids.events")).get("max")),
    }
    return CgroupReading(version=2, limits=limits, usage=usage)


@dataclass(frozen=True)
class BlockDevice:
    """A whole-disk block device, as the engine's `--device-*-bps` and the cgroup files name it."""

    path: str
    major_minor: str


def block_device_for(directory: str, sys_root: Path = Path("/sys")) -> BlockDevice | None:
    """The whole disk behind the filesystem that holds `directory`; None if it is not on a local block device.

    `findmnt -no SOURCE --target DIR` prints e.g. `/dev/vda[/var/lib/docker]` (the bracket is the bind
    mount's source path). Throttling applies to whole disks only, so a partition is mapped to its disk.
    """
    try:
        result = subprocess.run(
            ["findmnt", "-no", "SOURCE", "--target", directory], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    source = result.stdout.strip().splitlines()[0].split("[", 1)[0] if result.stdout.strip() else ""
    if result.returncode != 0 or not source.startswith("/dev/"):
        return None
    try:
        rdev = os.stat(source).st_rdev
    except OSError:
        return None
    disk = whole_disk(f"{os.major(rdev)}:{os.minor(rdev)}", sys_root)
    return BlockDevice(path=disk.path or source, major_minor=disk.major_minor)


def whole_disk(major_minor: str, sys_root: Path = Path("/sys")) -> BlockDevice:
    """The whole disk of block device `major_minor` (itself unless it is a partition; throttles apply to whole
    disks only); `path` is `/dev/<disk>` when a partition was mapped, else "" (the caller's own path stands)."""
    sys_dir = sys_root / "dev" / "block" / major_minor
    if not (sys_dir / "partition").exists():
        return BlockDevice(path="", major_minor=major_minor)
    disk = sys_dir.resolve().parent
    return BlockDevice(path=f"/dev/{disk.name}", major_minor=(_read(disk / "dev") or major_minor).strip())
