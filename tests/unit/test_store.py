"""The store's schema migration keeps what the user asked for and drops only derived tables."""

import sqlite3
from pathlib import Path

from sysops.store import SCHEMA_VERSION, Store


def test_older_store_is_migrated_without_losing_plugins(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE plugins (name TEXT PRIMARY KEY, source TEXT NOT NULL, runtime TEXT NOT NULL, "
        "manifest_json TEXT NOT NULL, active_instance TEXT, last_error TEXT NOT NULL DEFAULT '', "
        "updated REAL NOT NULL);"
        "INSERT INTO plugins VALUES ('hello', '/src', 'docker', '{}', 'abc', '', 0);"
        "CREATE TABLE instances (id TEXT PRIMARY KEY, plugin TEXT);"
        "CREATE TABLE routes (command TEXT PRIMARY KEY, plugin TEXT NOT NULL, endpoint TEXT NOT NULL, spec BLOB);"
    )
    old.commit()
    old.close()
    store = Store(path)
    assert [p.name for p in store.plugins()] == ["hello"]
    assert store.instances() == [] and store.routes() == []
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
