"""Hold a pod container's network namespace open, proven to be the container's, before anything runs in it.

The agent finds a process of the container by its cgroup (cgroup_limits.py) and then enters that process's
network namespace to program iptables. A PID can exit and be reused in between: entering `/proc/<pid>/ns/net` by
path could then land in another pod's namespace, or (hostPID) the node's own, where the connection limit would
cut the kubelet's connections and the read-back, taken in the same wrong namespace, would say success. So the
namespace is opened once and held as a file descriptor, through a descriptor of the process's /proc directory
(which stays bound to that process: once it exits, reads through it fail, even if its PID is reused), and only
then checked: the same process's /proc/<pid>/cgroup must still name the container, and the namespace must not be
the node's (/proc/1/ns/net's, or the kubelet's where PID 1's cannot be opened). iptables then runs in it through
`nsenter --net=/proc/self/fd/N` on the held descriptor (connections.py), never through the PID again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NamespaceError(Exception):
    """The container's network namespace cannot be held, or is not provably the container's."""


def _read_at(directory: int, name: str) -> str:
    descriptor = os.open(name, os.O_RDONLY, dir_fd=directory)
    try:
        with os.fdopen(descriptor, "r", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(descriptor)


def _identity(descriptor: int) -> tuple[int, int]:
    found = os.fstat(descriptor)
    return found.st_dev, found.st_ino


@functools.lru_cache(maxsize=4)
def node_namespace(proc: Path) -> tuple[int, int]:
    """The identity (device, inode) of the node's network namespace: PID 1's, or, where PID 1's cannot be opened
    (a sandboxed init, as on the test machine), the kubelet's, which always runs in it. The node's namespace
    lives as long as the node, so its identity is read once. OSError when neither can be opened."""
    candidates = [proc / "1"]
    candidates += [entry for entry in sorted(proc.iterdir()) if entry.name.isdigit() and _named(entry, "kubelet")]
    for candidate in candidates:
        try:
            descriptor = os.open(candidate / "ns" / "net", os.O_RDONLY)
        except OSError:
            continue
        try:
            return _identity(descriptor)
        finally:
            os.close(descriptor)
    raise PermissionError(13, "neither PID 1's nor the kubelet's network namespace can be opened")


def _named(process: Path, name: str) -> bool:
    try:
        return (process / "comm").read_text().strip() == name
    except OSError:
        return False


@contextmanager
def container_network_namespace(pid: int, container_id: str, proc: Path = Path("/proc")) -> Iterator[int]:
    """A descriptor of the network namespace of process `pid`, held while the block runs, once proven to be the
    namespace of container `container_id` (its bare id, or `docker://…`) and not the node's; NamespaceError
    otherwise."""
    bare = container_id.rpartition("://")[2]
    try:
        process = os.open(proc / str(pid), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise NamespaceError(f"process {pid} of container {bare[:12]} is gone ({exc.strerror})") from exc
    namespace = -1
    try:
        namespace = os.open("ns/net", os.O_RDONLY, dir_fd=process)
        membership = _read_at(process, "cgroup")  # after the open: the namespace is this process's
        is_host = node_namespace(proc) == _identity(namespace)
    except OSError as exc:
        if namespace >= 0:
            os.close(namespace)
        raise NamespaceError(
            f"cannot hold the network namespace of process {pid} (container {bare[:12]}): {exc.strerror}"
        ) from exc
    finally:
        os.close(process)
    try:
        if bare not in membership:
            raise NamespaceError(
                f"process {pid} is no longer in container {bare[:12]} (it exited and its PID was reused): "
                "not entering its network namespace"
            )
        if is_host:
            raise NamespaceError(
                f"process {pid} of container {bare[:12]} shares the node's network namespace: refusing to "
                "program the node's firewall"
            )
        yield namespace
    finally:
        os.close(namespace)
