"""A plugin's /data as a size-limited ext4 filesystem of its own, mounted nosuid,nodev,noexec.

A Docker volume is a directory on the engine's disk: a plugin could fill that disk, and plant setuid or
device files that local users reached through /var/lib/docker/volumes. So each plugin's data lives in a
sparse image file of `limits.data_mb` MiB in a private directory of its installation
(`<SYSOPS_HOME>/data/<plugin>/data.ext4`), loop-mounted on `<...>/mnt` with nosuid,nodev,noexec (the
loop device goes with the unmount), the filesystem's root owned by the plugin's uid. A write beyond the
size gets ENOSPC inside the filesystem. The image's space is reserved when it is made or grown: a sparse
image let a plugin fill the filesystem of SYSOPS_HOME (state.db then failed in every command) whenever
less than `data_mb` was free there; an image that does not fit is refused instead. A larger `data_mb` grows
the filesystem (online if it is mounted); a smaller one is refused, as shrinking could lose data.
Mounting needs root: sysops as another user refuses to start a Docker plugin with one clear line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sysops.errors import ManifestError, RuntimeOperationError
from sysops.private_paths import ensure_private_dir

DATA_IMAGE = "data.ext4"
DATA_MOUNTPOINT = "mnt"
DATA_MOUNT_OPTIONS = "loop,nosuid,nodev,noexec"
_MIB = 1024 * 1024


def ensure_data_filesystem(directory: Path, size_bytes: int, uid: int, plugin: str, copy_from: str = "") -> Path:
    """Create, grow and mount a plugin's data filesystem in `directory`; return where it is mounted.

    It stays mounted while an instance of the plugin exists (the driver unmounts it with the last one); a
    mounted filesystem grows online, which needs CAP_SYS_RESOURCE, an unmounted one offline. `copy_from`
    names a directory (the plugin's data volume of an older sysops) copied in once, at creation.
    """
    if os.geteuid() != 0:
        raise RuntimeOperationError(
            f"{plugin}: /data is a size-limited filesystem that sysops mounts, which needs root",
            hint="run sysops as root (or through `sysops serve` running as root); see docs/security.md",
        )
    ensure_private_dir(directory.parent)
    ensure_private_dir(directory)
    image, mountpoint = directory / DATA_IMAGE, directory / DATA_MOUNTPOINT
    mounted = is_data_mount(mountpoint)
    if not mounted:  # root's and 0700 while nothing is mounted: an unmounted /data is not the plugin's
        ensure_private_dir(mountpoint)
    created = not image.exists()
    if created:
        _create(image, size_bytes, uid, plugin)
    current = image.stat().st_size
    if size_bytes < current:
        raise ManifestError(
            f"{plugin}: limits.data_mb {size_bytes // _MIB} is below the {current // _MIB} MiB its /data already has; "
            "shrinking could lose data",
            hint=f"set limits.data_mb to at least {current // _MIB}, or `sysops plugin down {plugin} --purge` "
            "(deletes its data) first",
        )
    if size_bytes > current:
        _grow(image, mountpoint if mounted else None, size_bytes, plugin)
    if not mounted:
        remount_data_filesystem(str(mountpoint), plugin)
    copied = created and bool(copy_from) and os.path.isdir(copy_from)
    if copied:
        _copy_older_data(copy_from, mountpoint, plugin)
    give_to(str(mountpoint), uid, everything=copied)
    if created:  # mkfs makes the root 0755; the plugin may open it up later, but it starts private
        os.chmod(mountpoint, 0o700)
    return mountpoint


def remount_data_filesystem(mountpoint: str, plugin: str) -> bool:
    """Mount a data filesystem of ours if it is not (at a start, or after a host reboot); return whether it was."""
    path = Path(mountpoint)
    image = path.parent / DATA_IMAGE
    if path.name != DATA_MOUNTPOINT or not image.is_file() or is_data_mount(path):
        return False
    _run(["mount", "-o", DATA_MOUNT_OPTIONS, str(image), str(path)], plugin, "mount /data")
    return True


def data_size_bytes(mountpoint: str) -> int | None:
    """Size of the image behind a data filesystem mounted on `mountpoint` (None when it is none of ours)."""
    image = Path(mountpoint).parent / DATA_IMAGE
    if Path(mountpoint).name != DATA_MOUNTPOINT or not image.is_file():
        return None
    return image.stat().st_size


def unmount_data_filesystem(mountpoint: str) -> bool:
    """Unmount a data filesystem of ours (its loop device is released with the last mount); False if
    `mountpoint` is none of ours: never touch what a forged volume names."""
    path = Path(mountpoint)
    if path.name != DATA_MOUNTPOINT or not (path.parent / DATA_IMAGE).is_file():
        return False
    if is_data_mount(path):
        busy = subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0
        if busy:  # a container being removed may still hold it; the kernel finishes once it lets go
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    return True


def remove_data_filesystem(mountpoint: str) -> None:
    """Unmount a data filesystem and delete its directory with the image."""
    if unmount_data_filesystem(mountpoint):
        shutil.rmtree(Path(mountpoint).parent, ignore_errors=True)


def is_data_mount(path: Path) -> bool:
    """Whether something is mounted on `path` (its device differs from its parent's)."""
    return os.path.ismount(path)


def give_to(root: str, uid: int, *, everything: bool = False) -> None:
    """Make a plugin's data its own: the root, and (when the root is not, or with `everything`) all in it."""
    if os.lstat(root).st_uid == uid and not everything:
        return
    # fwalk works on directory descriptors: a plugin swapping a directory for a symlink cannot redirect it.
    for _directory, subdirectories, files, fd in os.fwalk(root, follow_symlinks=False):
        for name in (*subdirectories, *files):
            os.chown(name, uid, uid, dir_fd=fd, follow_symlinks=False)
    os.chown(root, uid, uid, follow_symlinks=False)
    os.chmod(root, 0o700)


def _copy_older_data(source: str, mountpoint: Path, plugin: str) -> None:
    """Copy an older data volume in (links as links, nothing followed); on failure remove the new filesystem,
    so that the next start copies again instead of keeping half of it."""
    try:
        _run(["cp", "-a", "--", f"{source}/.", f"{mountpoint}/"], plugin, "copy its older data volume into /data")
    except RuntimeOperationError as exc:
        remove_data_filesystem(str(mountpoint))
        raise RuntimeOperationError(
            exc.message, hint="if /data is too small for it, raise limits.data_mb in plugin.yaml"
        ) from None


def _create(image: Path, size_bytes: int, uid: int, plugin: str) -> None:
    partial = image.with_name(f".{DATA_IMAGE}.new")
    partial.unlink(missing_ok=True)  # left by a killed start; O_EXCL then makes sure the file is ours and 0600
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as new:
            _reserve(new.fileno(), size_bytes, plugin)
            options = f"root_owner={uid}:{uid},nodiscard"
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", options, str(partial)], plugin, "create /data")
            _reserve(new.fileno(), size_bytes, plugin)  # mkfs punches holes where it zeroes: fill them again
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(image)


def _grow(image: Path, mountpoint: Path | None, size_bytes: int, plugin: str) -> None:
    current = image.stat().st_size
    with open(image, "r+b") as grown:
        try:
            _reserve(grown.fileno(), size_bytes, plugin)
        except RuntimeOperationError:
            grown.truncate(current)
            raise
    if mountpoint is None:
        _run(["e2fsck", "-f", "-p", str(image)], plugin, "check /data before growing it", ok=(0, 1))
        _run(["resize2fs", str(image)], plugin, "grow /data")
        with open(image, "r+b") as grown:
            _reserve(grown.fileno(), size_bytes, plugin)  # resize2fs, like mkfs, may punch what it zeroes
        return
    device = _loop_device(image, plugin)
    _run(["losetup", "-c", device], plugin, "grow /data's loop device")
    try:
        _run(["resize2fs", device], plugin, "grow /data while a running instance uses it")
    except RuntimeOperationError as exc:
        with open(image, "r+b") as sparse:
            sparse.truncate(current)
        _run(["losetup", "-c", device], plugin, "restore /data's loop device")
        raise RuntimeOperationError(
            exc.message, hint=f"`sysops plugin down {plugin}` first: /data then grows while nothing uses it"
        ) from None


def _reserve(descriptor: int, size_bytes: int, plugin: str) -> None:
    """Give the image `size_bytes` of real disk space, or say in one line that there is no room for it."""
    try:
        os.posix_fallocate(descriptor, 0, size_bytes)
    except OSError as exc:
        free = os.fstatvfs(descriptor)
        raise RuntimeOperationError(
            f"{plugin}: no room for its /data of {size_bytes // _MIB} MiB in the filesystem of SYSOPS_HOME "
            f"({free.f_bavail * free.f_frsize // _MIB} MiB free): {exc.strerror or exc}",
            hint="free space there, or lower limits.data_mb in plugin.yaml",
        ) from None


def _loop_device(image: Path, plugin: str) -> str:
    listing = _run(["losetup", "-n", "-O", "NAME", "-j", str(image)], plugin, "find /data's loop device")
    devices = listing.split()
    if not devices:
        raise RuntimeOperationError(f"{plugin}: /data is mounted but no loop device backs {image}")
    return devices[0]


def _run(command: list[str], plugin: str, what: str, ok: tuple[int, ...] = (0,)) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeOperationError(f"{plugin}: cannot {what}: {command[0]}: {exc}") from exc
    if result.returncode not in ok:
        detail = " ".join((result.stderr or result.stdout).split())[:300]
        raise RuntimeOperationError(f"{plugin}: cannot {what}: {command[0]} failed: {detail}")
    return result.stdout
