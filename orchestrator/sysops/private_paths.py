"""Directories and files that hold sysops secrets, created private to the user running sysops.

The state directory holds every instance token (state.db), the plugin sockets and the wheel cache; the
contexts file holds server tokens. Other local users must not read, replace or plant anything there, so
every such directory is created 0700 and every such file 0600 *at creation* (never chmod-ed afterwards),
and an existing path is accepted only when it is a real directory owned by us. Kept free of heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sysops.errors import UsageError

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700, or check an existing one; return it.

    An existing directory must not be a symlink and must be owned by the effective uid; one of ours that
    is open to group or others (made by an older sysops) is tightened to 0700. Anything else is refused
    with a UsageError naming the path.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)  # public parents (~/.local/state) keep the usual mode
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_DIR_MODE)  # the umask can only remove bits from 0700
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UsageError(
            f"{path}: expected a directory of sysops, found a symlink or a file; refusing to use it",
            hint="remove it, or set SYSOPS_HOME to a directory of your own",
        )
    if info.st_uid != os.geteuid():
        raise UsageError(
            f"{path}: owned by uid {info.st_uid}, not by you (uid {os.geteuid()}); refusing to keep secrets there",
            hint="remove it, or set SYSOPS_HOME to a directory of your own",
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def create_private_file(path: Path) -> int:
    """Open a new file 0600 for writing (never following a symlink, never reusing a file); return the fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only from the first byte."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    descriptor = create_private_file(temporary)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


#: The umask under which a library-created Unix socket is born 0600 (bind() gives sockets 0777 & ~umask).
SOCKET_UMASK = 0o177


@contextlib.contextmanager
def private_umask(mask: int = 0o077) -> Iterator[None]:
    """Create files 0600 / directories 0700 inside the block (for files a library creates, e.g. SQLite's WAL)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def tighten_file(path: Path) -> None:
    """Make an existing file of ours 0600 (files made by an older sysops were 0644)."""
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o600:
            os.chmod(path, PRIVATE_FILE_MODE)
