"""Several threads of one host (or two `sysops` processes) opening a brand-new state.db at the same moment:
SQLite answered 'database is locked' at once to all but one switch to WAL (without its busy handler), so the
first calls of a new installation could fail. Opening the store now retries the switch."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

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


def test_a_second_opener_never_drops_the_tables_a_first_one_is_creating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI run of 2026-12-03 failed the test above once with "no such table: main.instances": an opener that
    had created the schema but not yet set its version was seen by another as an old store, whose tables it
    dropped. The first opener is held just before it sets the version; the second must not drop anything."""
    executed: list[str] = []
    held, release = threading.Event(), threading.Event()
    real_connect = sqlite3.connect

    class Recording(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.startswith("PRAGMA user_version=") and not held.is_set():
                held.set()
                release.wait(10)
            executed.append(sql)
            return super().execute(sql, *args)

        def executescript(self, script: str) -> sqlite3.Cursor:  # type: ignore[override]
            executed.append(script)
            return super().executescript(script)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Recording, **k))
    path = tmp_path / "state.db"
    errors: list[str] = []

    def open_store() -> None:
        store = Store(path)
        try:
            store.plugins()
        except Exception as error:
            errors.append(repr(error))
        finally:
            store.close()

    first = threading.Thread(target=open_store)
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=open_store)
    second.start()
    time.sleep(0.5)  # the second opener runs (or waits for the first's transaction) meanwhile
    release.set()
    first.join(30)
    second.join(30)
    assert errors == []
    assert not [sql for sql in executed if "DROP TABLE" in sql]
