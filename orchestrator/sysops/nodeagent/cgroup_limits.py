"""Find a pod container's cgroup on the node, write its pids and block-I/O limits there, and read them back.

The kubelet puts a container's cgroup where its runtime and cgroup driver say: `/docker/<id>` (the test
cluster: Docker engine, cgroupfs driver, no per-QoS cgroups), `/kubepods/<qos>/pod<uid>/<id>`, or systemd's
`kubepods.slice/…/docker-<id>.scope`. So the directory is found by the container id under the pids
hierarchy (v1) or the unified one (v2), whatever the layout. The limits are written as the Docker engine
writes them (v1: `pids.max`, `blkio.throttle.{read,write}_bps_device`; v2: `pids.max`, `io.max`), on every
whole disk behind the container's mounts (its /data emptyDir, its logs and writable layer: the same disk
the Docker runtime throttles), and read back with the Docker runtime's own reader (CgroupLocator).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sysops.runtime.docker.cgroups import CgroupLocator, whole_disk

#: How deep below a hierarchy's root a container's cgroup may be (kubepods.slice/…-burstable.slice/…/scope).
_MAX_DEPTH = 6


class CgroupError(Exception):
    """A container's cgroup cannot be found, written or read (the message says which file)."""


@dataclass(frozen=True)
class ContainerCgroup:
    """Where one container's cgroup is: its path below each hierarchy's root, and a process in it."""

    relative: str
    pid: int
    version: int


@dataclass(frozen=True)
class CgroupLimits:
    """pids.max and the per-device byte rates read back from a container's cgroup files."""

    pids: int | None
    read_bps: dict[str, int]
    write_bps: dict[str, int]


def bare_container_id(container_id: str) -> str:
    """`docker://abc…` (a pod status's containerID) without its runtime scheme."""
    return container_id.rpartition("://")[2]


class CgroupLimiter:
    """Applies and reads back the cgroup limits of pod containers under a node's cgroup root."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc"), sys: Path = Path("/sys")):
        self.root = root
        self.proc = proc
        self.sys = sys
        self.locator = CgroupLocator(root, proc)

    def _hierarchy(self, controller: str) -> Path:
        return self.root if self.locator.version == 2 else self.root / controller

    def find(self, container_id: str) -> ContainerCgroup:
        """The container's cgroup, found by its id; CgroupError when it is not on this node (or not running)."""
        bare = bare_container_id(container_id)
        if len(bare) < 12:
            raise CgroupError(f"container id {container_id!r} is too short to find its cgroup")
        base = self._hierarchy("pids")
        for directory, subdirectories, _ in os.walk(base):
            depth = len(Path(directory).relative_to(base).parts)
            if depth >= _MAX_DEPTH:
                subdirectories.clear()
            match = next((name for name in subdirectories if bare in name), None)
            if match is None:
                continue
            found = Path(directory) / match
            procs = (found / "cgroup.procs").read_text().split() if (found / "cgroup.procs").exists() else []
            if not procs:
                raise CgroupError(f"the cgroup of container {bare[:12]} ({found}) has no process: not running")
            return ContainerCgroup(str(found.relative_to(base)), int(procs[0]), self.locator.version)
        raise CgroupError(f"no cgroup of container {bare[:12]} under {base} (not on this node, or not running)")

    def block_devices(self, cgroup: ContainerCgroup) -> list[str]:
        """`major:minor` of the whole disks behind the container's mounts (from its process's mountinfo)."""
        try:
            mountinfo = (self.proc / str(cgroup.pid) / "mountinfo").read_text()
        except OSError as exc:
            raise CgroupError(f"cannot read the mounts of process {cgroup.pid}: {exc.strerror}") from exc
        disks: set[str] = set()
        for line in mountinfo.splitlines():
            fields = line.split()
            if len(fields) > 2 and ":" in fields[2] and not fields[2].startswith("0:"):
                disks.add(whole_disk(fields[2], self.sys).major_minor)
        return sorted(disks)

    def apply(self, cgroup: ContainerCgroup, pids: int | None, io_bytes_per_sec: int | None) -> None:
        """Write pids.max and the block-I/O throttle (on every disk of the container); None lifts a limit."""
        self._write(self._hierarchy("pids") / cgroup.relative / "pids.max", "max" if pids is None else str(pids))
        devices = self.block_devices(cgroup)
        if io_bytes_per_sec is not None and not devices:
            raise CgroupError("no block device backs the pod's volumes: disk_io_mb_per_sec cannot be enforced")
        current = self.read(cgroup)
        blkio = self._hierarchy("blkio") / cgroup.relative
        for device in sorted(set(devices) | set(current.read_bps) | set(current.write_bps)):
            rate = io_bytes_per_sec if io_bytes_per_sec is not None and device in devices else 0
            if cgroup.version == 2:
                value = str(rate) if rate else "max"
                self._write(blkio / "io.max", f"{device} rbps={value} wbps={value}")
            else:  # v1: a rate of 0 removes the device's rule
                self._write(blkio / "blkio.throttle.read_bps_device", f"{device} {rate}")
                self._write(blkio / "blkio.throttle.write_bps_device", f"{device} {rate}")

    def read(self, cgroup: ContainerCgroup) -> CgroupLimits:
        """What the kernel enforces on the container now (its cgroup files)."""
        parent, _, name = cgroup.relative.rpartition("/")
        reading = self.locator.read(cgroup.pid, name, "/" + parent)
        if reading is None:
            raise CgroupError(f"the cgroup files of {cgroup.relative} are not readable")
        values = reading.limits
        pids = values.get("pids_max")
        read_bps, write_bps = values.get("read_bps"), values.get("write_bps")
        return CgroupLimits(
            pids if isinstance(pids, int) else None,
            dict(read_bps) if isinstance(read_bps, dict) else {},
            dict(write_bps) if isinstance(write_bps, dict) else {},
        )

    @staticmethod
    def _write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc
