"""This process's mount table, read again only when the kernel says it changed.

Every reconcile pass asks, for each instance, whether its socket directory's tmpfs is mounted (a host reboot
drops it). Reading and splitting /proc/self/mounts per question made a pass with fifty instances read the
table fifty times, each holding a hundred or more mounts (a tmpfs and a /data filesystem per instance). The
kernel marks an open /proc/self/mounts with POLLPRI when a mount or unmount happens in its mount namespace
(proc(5)), so `MountTable` keeps the file open, polls it without waiting, and parses it again only after such
a change, after `invalidate` (sysops calls it after its own mount or unmount), and at least every MAX_AGE_SECONDS
(a procfs that never marks a change, as some sandboxes' do, is then stale for that long at most, never for ever).
A table that cannot be opened or polled is read every time, as before.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable

MOUNTS = "/proc/self/mounts"
#: A mount as the table lists it: (source, target, filesystem type), with the target's `\\040` made a space.
Mount = tuple[str, str, str]
#: A parse is trusted this long at most, whatever the kernel says.
MAX_AGE_SECONDS = 60.0


class MountTable:
    """The mounts of this process's namespace, parsed once per change of the table (module docstring)."""

    def __init__(self, path: str = MOUNTS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._poller: select.poll | None = None
        self._mounts: frozenset[Mount] | None = None
        self._read_at = 0.0

    def mounts(self) -> frozenset[Mount]:
        """The current mounts (parsed again when the kernel reported a change, after `invalidate`, or when the
        last parse is MAX_AGE_SECONDS old)."""
        with self._lock:
            now = self._clock()
            if self._mounts is None or now - self._read_at >= MAX_AGE_SECONDS or self._changed():
                self._mounts, self._read_at = self._read(), now
            return self._mounts

    def invalidate(self) -> None:
        """Parse the table again at the next question (after a mount or unmount of our own)."""
        with self._lock:
            self._mounts = None

    def close(self) -> None:
        """Close the kept descriptor (the next question opens it again)."""
        with self._lock:
            self._close_fd()
            self._mounts = None

    def _changed(self) -> bool:  # holding the lock
        if self._poller is None:
            return True
        try:
            events = self._poller.poll(0)
        except OSError:
            return True
        return any(mask & (select.POLLPRI | select.POLLERR | select.POLLNVAL) for _, mask in events)

    def _read(self) -> frozenset[Mount]:  # holding the lock
        """Parse the table from its kept descriptor (opened, and registered for POLLPRI, on first use)."""
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                poller = select.poll()
                poller.register(self._fd, select.POLLPRI)
                poller.poll(0)  # a change is reported once per poll: start from this read
                self._poller = poller
            else:
                os.lseek(self._fd, 0, os.SEEK_SET)
            text = _read_all(self._fd)
        except OSError:
            self._close_fd()
            return frozenset()
        mounts = set()
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3:
                mounts.add((fields[0], fields[1].replace("\\040", " "), fields[2]))
        return frozenset(mounts)

    def _close_fd(self) -> None:  # holding the lock: the table is reopened and read afresh next time
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._poller = None, None


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


#: The table of this process, shared by its callers.
TABLE = MountTable()
