"""Lock files that exist only while they are held, so that locking any name leaves nothing behind.

`flock` on one file per plugin keeps two sysops processes (or two threads of `sysops serve`) from rolling
the same plugin at once. A lock file kept after its release stayed for good, one per name ever asked for:
a `plugin down` of a plugin that does not exist, from the CLI or through the control API, left one more
file in SYSOPS_HOME. So the holder removes the file before it unlocks, and a waiter that then gets the
lock of the removed file tries again on the file now at the path. The file is opened 0600 and never
through a symlink (one planted at the path made the lock create its target, and the release removed the link).

One lock is kept instead: `held_shared_lock`, a reader-writer lock on one installation-wide file, whose shared
holders overlap, so none of them may remove the file (a later holder would lock a new file beside an old one).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sysops.errors import SysopsError
from sysops.private_paths import PRIVATE_FILE_MODE

#: Never follow a planted symlink; never wait on a planted FIFO.
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@contextmanager
def held_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the lock of `path` (created if missing); yield False if not `blocking` and another holds it."""
    while True:
        with _open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                if not _still_at(handle, path):
                    continue  # the holder we waited for removed this file: lock the one there now
                yield True
                return
            finally:
                if _still_at(handle, path):
                    path.unlink()
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def held_shared_lock(path: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Hold the lock of `path` (created if missing, kept after): shared with every other shared holder, or
    `exclusive` of all holders; waits until it can. A file no holder removes, so holders always lock one file."""
    with _open(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open(path: Path) -> IO[str]:
    try:
        return os.fdopen(os.open(path, _OPEN_FLAGS, PRIVATE_FILE_MODE), "a")
    except OSError as error:
        raise SysopsError(f"cannot use the lock file {path}: {error.strerror}", hint="remove it") from None


def _still_at(handle: IO[str], path: Path) -> bool:
    """Whether `path` still names the open file `handle`."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
