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
            table.mounts()
        assert len(reads) <= 3  # once, or again after a mount elsewhere on this host meanwhile (not 21)
    finally:
        table.close()


def test_a_table_that_cannot_be_opened_is_empty_and_opened_again_at_the_next_question(tmp_path: Path) -> None:
    path = tmp_path / "mounts"
    table = MountTable(str(path))
    try:
        assert table.mounts() == frozenset()
        path.write_text("sysops-socket /run/x tmpfs rw 0 0\n")
        assert table.mounts() == {("sysops-socket", "/run/x", "tmpfs")}
    finally:
        table.close()


class _Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_table_that_never_marks_a_change_is_read_again_when_invalidated_and_when_old(tmp_path: Path) -> None:
    """A regular file never raises POLLPRI, as a sandbox's procfs may not: staleness is bounded all the same."""
    path, clock = tmp_path / "mounts", _Clock()
    path.write_text("a /one tmpfs rw 0 0\n")
    table = MountTable(str(path), clock=clock)
    try:
        assert table.mounts() == {("a", "/one", "tmpfs")}
        path.write_text("b /two\\040dirs tmpfs rw 0 0\n")
        assert table.mounts() == {("a", "/one", "tmpfs")}  # no mark from the kernel: the parse is kept
        table.invalidate()  # what mount_socket_tmpfs and unmount_socket_tmpfs do after their own change
        assert table.mounts() == {("b", "/two dirs", "tmpfs")}
        path.write_text("c /three tmpfs rw 0 0\n")
        clock.now += mount_table.MAX_AGE_SECONDS
        assert table.mounts() == {("c", "/three", "tmpfs")}
    finally:
        table.close()


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
            assert len(reads) > held
        finally:
            subprocess.run(["umount", str(target)], check=True)
        assert not is_socket_tmpfs(target)
    finally:
        table.close()
