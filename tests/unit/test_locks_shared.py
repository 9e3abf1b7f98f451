"""The kept reader-writer lock of core/locks.py (`held_shared_lock`): shared holders overlap, an exclusive holder
waits for them and excludes them, the file stays after release, private, and never through a symlink."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sysops.core.locks import held_shared_lock
from sysops.errors import SysopsError

#: Seconds a thread may take to get where the test waits for it.
_PATIENCE = 10.0
#: Seconds an exclusive holder that should wait is watched for getting the lock early.
_WAITING = 0.3


def test_shared_holders_overlap_and_an_exclusive_holder_waits_for_them(tmp_path: Path) -> None:
    path = tmp_path / "_dependencies.lock"
    got_exclusive = threading.Event()

    def exclusive() -> None:
        with held_shared_lock(path, exclusive=True):
            got_exclusive.set()

    with held_shared_lock(path), held_shared_lock(path):  # a second shared holder does not wait for the first
        writer = threading.Thread(target=exclusive, daemon=True)
        writer.start()
        assert not got_exclusive.wait(_WAITING)
    assert got_exclusive.wait(_PATIENCE)
    writer.join(_PATIENCE)
    assert path.exists()  # kept: shared holders overlap, so none removes it


def test_the_kept_lock_file_is_private_and_never_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "_dependencies.lock"
    previous = os.umask(0o022)
    try:
        with held_shared_lock(path, exclusive=True):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    planted = tmp_path / "planted.lock"
    planted.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SysopsError, match=r"planted\.lock"), held_shared_lock(planted):
        pass
    assert not (tmp_path / "elsewhere").exists()
