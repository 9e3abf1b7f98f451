"""Several threads of one host (or two `sysops` processes) opening a brand-new state.db at the same moment:
SQLite answered 'database is locked' at once to all but one switch to WAL (without its busy handler), so the
first calls of a new installation could fail. Opening the store now retries the switch."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sysops import store as store_module
from sysops.store import Store

TRIALS = 20
OPENERS = 8


def test_many_openers_of_a_new_store_all_succeed(tmp_path: Path) -> None:
    errors: list[str] = []
    for trial in range(TRIALS):
        path = tmp_path / str(trial) / "state.db"
        start = threading.Barrier(OPENERS)

        def open_store(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            store = Store(path)
            try:
                store.plugins()
            except Exception as error:
                errors.append(repr(error))
            finally:
                store.close()

        openers = [threading.Thread(target=open_store) for _ in range(OPENERS)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=60)
    assert errors == []


class _LockedAtFirst:
    """A connection whose WAL switch is refused `refusals` times, as SQLite does to a concurrent opener."""

    def __init__(self, refusals: int, message: str = "database is locked") -> None:
        self.refusals, self.message, self.switches = refusals, message, 0

    def execute(self, sql: str) -> None:
        self.switches += 1
        if self.switches <= self.refusals:
            raise sqlite3.OperationalError(self.message)


def test_the_wal_switch_is_retried_while_locked_and_other_errors_are_not() -> None:
    connection = _LockedAtFirst(refusals=3)
    store_module._use_wal(connection)  # type: ignore[arg-type]
    assert connection.switches == 4
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        store_module._use_wal(_LockedAtFirst(refusals=1, message="disk I/O error"))  # type: ignore[arg-type]
