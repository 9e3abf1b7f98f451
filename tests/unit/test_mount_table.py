"""runtime/mount_table.py: the table is parsed once per change the kernel reports, and a change is seen at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sysops.runtime import mount_table
from sysops.runtime.mount_table import MountTable
from sysops.runtime.socket_dirs import SOCKET_TMPFS_SOURCE, is_socket_tmpfs


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = mount_table._read_all

    def counted(fd: int) -> str:
        reads.append(fd)
        return real(fd)

    monkeypatch.setattr(mount_table, "_read_all", counted)
    return reads


def test_an_unchanged_table_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting_reads(monkeypatch)
    table = MountTable()
    try:
        first = table.mounts()
        assert any(target == "/proc" for _, target, _ in first)
        for _ in range(20):
            assert table.mounts() == first
        assert len(reads) == 1
    finally:
        table.close()


def test_a_table_that_cannot_be_opened_is_empty_and_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting_reads(monkeypatch)
    table = MountTable("/nonexistent/mounts")
    assert table.mounts() == frozenset()
    assert table.mounts() == frozenset()
    assert reads == []  # the open failed each time: nothing was held as if it were the table


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (the Docker driver mounts them as root)")
def test_a_mount_and_an_unmount_are_seen_at_the_next_question(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting_reads(monkeypatch)
    target = tmp_path / "sockets dir"
    target.mkdir(mode=0o700)
    table = MountTable()
    monkeypatch.setattr(mount_table, "TABLE", table)
    try:
        assert not is_socket_tmpfs(target)
        assert not is_socket_tmpfs(target)
        held = len(reads)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", SOCKET_TMPFS_SOURCE, str(target)], check=True)
        try:
            assert is_socket_tmpfs(target)  # fails if the parse were kept without the kernel's word
            assert is_socket_tmpfs(target)
            assert len(reads) == held + 1
        finally:
            subprocess.run(["umount", str(target)], check=True)
        assert not is_socket_tmpfs(target)
    finally:
        table.close()
