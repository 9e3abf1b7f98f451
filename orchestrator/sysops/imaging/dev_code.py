"""Development mode (`sysops plugin up --dev`): the plugin's code as a read-only directory, not an image layer.

A code-only change then costs no image build: the image carries the dependencies and plugin.yaml only
(imaging/image.py `make_context(code=False)`), and each instance mounts a snapshot of the code read-only at
/plugin, where the production image copies it (PYTHONPATH is the same). A snapshot is content-addressed and
never changes: it is a directory named after the revision's fingerprint, `dev-<sha256 of the image's
fingerprint and the code>`, in the installation's private `dev/`, so a restart, a rollback or
re-adoption of a revision mounts exactly the code it was started with, and the host derives the directory
from the fingerprint alone (a client names no host path). Its files are root's, world-readable (the plugin's
uid reads them through the mount; the 0700 directories above keep other local users out), and it goes
with the plugin's revisions on `plugin down --purge`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

from sysops.errors import UsageError
from sysops.imaging.context import PluginEntry, open_plugin_file
from sysops.private_paths import ensure_private_dir

#: A development revision's fingerprint (and its snapshot directory's name).
_DEV_FINGERPRINT = re.compile(r"dev-[0-9a-f]{64}")
#: An unreferenced snapshot younger than this may belong to an `up` in flight; it is kept.
_PRUNE_AGE_SECONDS = 600.0
_COPY_CHUNK = 1 << 20
_MOUNT_ROOT_MODE = 0o711


def is_dev_fingerprint(fingerprint: str) -> bool:
    """Whether a revision was started in development mode (its code is a snapshot, not in its image)."""
    return _DEV_FINGERPRINT.fullmatch(fingerprint) is not None


def code_root(home: Path, plugin: str) -> Path:
    """The directory of a plugin's code snapshots (its side-by-side keys' too: a revision started under another
    key keeps its code)."""
    return home / "dev" / plugin


def code_dir(home: Path, plugin: str, fingerprint: str) -> Path | None:
    """The snapshot of a development revision, or None for a revision whose image has its code."""
    if not is_dev_fingerprint(fingerprint):
        return None
    return code_root(home, plugin) / fingerprint


def snapshot_code(home: Path, plugin: str, plugin_dir: Path, entries: list[PluginEntry], image_fingerprint: str) -> str:
    """Copy the shipped entries of `plugin_dir` into a new snapshot (links stay links, files are read without
    following any link, as a build context's are); return its fingerprint. An identical snapshot is reused."""
    root = code_root(home, plugin)
    ensure_private_dir(root.parent)
    _ensure_mount_root(root)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    digest = hashlib.sha256(image_fingerprint.encode() + b"\0")
    try:
        for entry in sorted(entries, key=lambda item: item.relative.as_posix()):
            relative = entry.relative.as_posix()
            target = staging / relative
            digest.update(f"{entry.kind}\0{relative}\0".encode())
            if entry.kind == "dir":
                target.mkdir(exist_ok=True)
                os.chmod(target, 0o755)  # whatever the umask (another thread's private_umask, or the user's 077)
            elif entry.kind == "link":
                digest.update(entry.link_target.encode() + b"\0")
                os.symlink(entry.link_target, target)
            else:
                _copy_file(plugin_dir, entry, target, digest)
        os.chmod(staging, 0o755)
        fingerprint = f"dev-{digest.hexdigest()}"
        final = root / fingerprint
        try:
            os.rename(staging, final)
        except OSError as exc:  # the same code is there (from an earlier save, or another `up` just now)
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or final.is_symlink() or not final.is_dir():
                raise
            shutil.rmtree(staging)
            os.utime(final)  # in use again: not pruned as an old leftover while this `up` runs
        return fingerprint
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _ensure_mount_root(root: Path) -> None:
    """The plugin's directory of snapshots, the root of its mount: 0711, so that the plugin's uid reaches the
    snapshot it is told (not a list of them); ours, and not a link (its parent, 0700, keeps others out)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, _MOUNT_ROOT_MODE)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise UsageError(f"{root}: expected a directory of sysops, found something else; refusing to use it")
    if stat.S_IMODE(info.st_mode) != _MOUNT_ROOT_MODE:
        os.chmod(root, _MOUNT_ROOT_MODE)


def _copy_file(plugin_dir: Path, entry: PluginEntry, target: Path, digest: hashlib._Hash) -> None:
    with open_plugin_file(plugin_dir, entry.relative, entry.identity) as source:
        executable = bool(os.fstat(source.fileno()).st_mode & 0o111)
        content = hashlib.sha256()  # a fixed-length digest per file: no two trees hash alike by shifting bytes
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "wb") as sink:
            while chunk := source.read(_COPY_CHUNK):
                content.update(chunk)
                sink.write(chunk)
        os.chmod(target, 0o755 if executable else 0o644)
    digest.update((b"x" if executable else b"-") + content.digest())


def prune_code(home: Path, plugin: str, keep: set[str], *, min_age: float = _PRUNE_AGE_SECONDS) -> None:
    """Remove the plugin's snapshots that no revision in `keep` uses (failed rolls'), once older than `min_age`
    seconds, so that no `up` in flight can still be about to start one."""
    root = code_root(home, plugin)
    try:
        children = list(root.iterdir())
    except OSError:
        return
    for child in children:
        try:
            old = time.time() - child.lstat().st_mtime >= min_age
        except OSError:
            continue
        unused = is_dev_fingerprint(child.name) and child.name not in keep
        staged = child.name.startswith(".staging-")  # an `up` killed while it copied
        if old and (unused or staged) and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)


def remove_code(home: Path, plugin: str, keep: set[str]) -> None:
    """`plugin down --purge`: remove the plugin's snapshots but those of `keep` (another key's revisions), and
    its directory of them once empty."""
    prune_code(home, plugin, keep, min_age=0)
    with contextlib.suppress(OSError):  # not empty: another key's revisions
        code_root(home, plugin).rmdir()
