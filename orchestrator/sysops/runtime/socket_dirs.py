"""Instance socket directories as small private tmpfs mounts, and their removal.

A plugin creates its gRPC socket in a host directory that its container sees at /run/sysops. On the
host's disk, that directory let a plugin fill the disk and plant setuid or device files for a local user
to run. So, when sysops runs as root, the Docker driver mounts a tmpfs there before the container starts:
1 MiB and 64 inodes, owned by the plugin's own uid, mode 0700, nosuid,nodev,noexec (the container's bind
mount keeps those flags). Whoever removes a socket directory calls `remove_socket_dir`, which unmounts it
first; only a tmpfs mounted by sysops (source `sysops-socket`) is ever unmounted.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from sysops.errors import StartFailedError
from sysops.runtime import mount_table

SOCKET_TMPFS_SIZE = "1m"
SOCKET_TMPFS_INODES = 64
#: The tmpfs "device" name: `mount` lists socket directories under it, and only those are unmounted.
SOCKET_TMPFS_SOURCE = "sysops-socket"


def socket_tmpfs_options(uid: int) -> str:
    """Mount options of a socket directory whose plugin runs as `uid`."""
    return f"size={SOCKET_TMPFS_SIZE},nr_inodes={SOCKET_TMPFS_INODES},mode=0700,uid={uid},gid={uid},nosuid,nodev,noexec"


def mount_socket_tmpfs(path: Path, uid: int) -> None:
    """Mount a socket directory's tmpfs on `path` (an empty directory of root's); raise StartFailedError."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", socket_tmpfs_options(uid), SOCKET_TMPFS_SOURCE, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    mount_table.TABLE.invalidate()
    if result.returncode != 0:
        raise StartFailedError(
            f"cannot mount the socket directory {path} as a tmpfs: {' '.join(result.stderr.split())[:300]}",
            hint="sysops running as root mounts a small tmpfs per instance; check that mount(8) works here",
        )


def is_socket_tmpfs(path: Path | str) -> bool:
    """Whether a socket directory's tmpfs is mounted on `path`."""
    return (SOCKET_TMPFS_SOURCE, os.path.realpath(path), "tmpfs") in mount_table.TABLE.mounts()


def is_private_dir(path: Path | str) -> bool:
    """A real directory of ours, 0700, in a real directory of ours, 0700: where sysops makes socket directories
    (so a socket tmpfs is never mounted over anything else)."""
    if not str(path):
        return False
    try:
        infos = [os.lstat(path), os.lstat(os.path.dirname(os.path.abspath(path)))]
    except OSError:
        return False
    return all(
        stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
        for info in infos
    )


def recreate_socket_dir(path: Path | str) -> bool:
    """Make a missing socket directory again (0700, root's) in a private directory of ours; return whether it
    is there now. A reboot that empties /tmp removes the socket directories of the /tmp fallback, and the
    engine then refuses to start their containers (the bind mount's source is gone)."""
    if not str(path) or os.path.lexists(path) or not is_private_dir(os.path.dirname(os.path.abspath(path))):
        return is_private_dir(path)
    os.mkdir(path, 0o700)
    return is_private_dir(path)


def unmount_socket_tmpfs(path: Path | str) -> None:
    """Unmount the socket directory's tmpfs on `path`, if there is one (nothing else is ever unmounted)."""
    if str(path) and is_socket_tmpfs(path):
        # Lazy: a process of ours may still hold the socket open; the tmpfs goes once it lets go.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        mount_table.TABLE.invalidate()


def remove_socket_dir(path: Path | str) -> None:
    """Unmount a socket directory's tmpfs, then remove the directory (missing: nothing to do)."""
    unmount_socket_tmpfs(path)
    shutil.rmtree(path, ignore_errors=True)
