"""Per-plugin lock files exist only while held (core/locks.py), and still exclude each other."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
from sysops.core.locks import held_lock
from sysops.core.orchestrator import Orchestrator
from sysops.errors import SysopsError
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

THREADS = 8
ROUNDS = 50


def test_the_lock_file_is_gone_once_released(tmp_path: Path) -> None:
    path = tmp_path / "demo.lock"
    with held_lock(path) as acquired:
        assert acquired and path.exists()
        with held_lock(path, blocking=False) as again:
            assert not again
    assert not path.exists()


def test_holders_exclude_each_other_while_files_come_and_go(tmp_path: Path) -> None:
    path = tmp_path / "demo.lock"
    inside: list[int] = []
    overlaps: list[int] = []

    def work(number: int) -> None:
        for _ in range(ROUNDS):
            with held_lock(path):
                inside.append(number)
                if len(inside) > 1:
                    overlaps.append(number)
                time.sleep(0.0005)
                inside.remove(number)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert not path.exists()


def test_down_of_a_plugin_that_does_not_exist_leaves_no_lock_file(settings: Settings) -> None:
    orchestrator = Orchestrator(settings, FakeDriver())
    try:
        for name in ("demo", "other", "a" * 63):
            try:
                orchestrator.down(name)
            except Exception as error:
                assert "no plugin named" in str(error)
    finally:
        orchestrator.close()
    assert [path.name for path in (settings.home / "locks").iterdir()] == ["_dependencies.lock"]  # one, kept


def test_a_symlink_planted_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    path = tmp_path / "demo.lock"
    path.symlink_to(target)
    with pytest.raises(SysopsError, match=r"demo\.lock"), held_lock(path):
        pass
    assert not target.exists()  # it was created (0644) and the link removed, hiding what was done
    assert path.is_symlink()


def test_the_lock_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "demo.lock"
    previous = os.umask(0o022)
    try:
        with held_lock(path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
