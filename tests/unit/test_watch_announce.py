"""`plugin up --watch` says "watching" only once its watcher runs: a save made right after that line rolls."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from types import SimpleNamespace

from sysops.core.watch import watch_and_roll


class _Rolled(BaseException):
    """Ends the watch from inside the stub's roll (watch_and_roll otherwise blocks until interrupted)."""


class _Operations:
    def __init__(self) -> None:
        self.rolled = threading.Event()

    def up(self, path: Path) -> tuple[SimpleNamespace, bool]:
        self.rolled.set()
        raise _Rolled


def test_a_save_made_as_watching_is_said_rolls(tmp_path: Path) -> None:
    (tmp_path / "plugin.py").write_text("VERSION = 1\n")
    operations = _Operations()

    def progress(line: str) -> None:
        if line.startswith("watching "):  # the user saves the moment the line appears
            (tmp_path / "plugin.py").write_text("VERSION = 2\n")

    def run() -> None:
        with contextlib.suppress(_Rolled):
            watch_and_roll(operations, tmp_path, progress)  # type: ignore[arg-type]

    threading.Thread(target=run, daemon=True).start()
    assert operations.rolled.wait(10), "the save made when 'watching' was printed never rolled"
