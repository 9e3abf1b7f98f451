"""One SQLite connection per thread to the store's file, shared by the host services.

The gRPC server calls the services from many threads at once; a sqlite3 connection must not be used by
two threads together, so each thread gets its own `Store` (opened like every store: private file modes,
WAL, a busy timeout) and writes run in `BEGIN IMMEDIATE` transactions, which SQLite serializes across
connections and processes. Each service creates its own tables (CREATE TABLE IF NOT EXISTS) through
`ensure_schema`, once per connection; store.py's own tables are left to it.

These connections commit with `synchronous=NORMAL` (WAL): a commit no longer waits for an fsync (a
state write took 1.6 ms, now 0.1 ms), and what was committed survives any crash of sysops or of a
plugin; only a power loss or kernel crash may lose the last commits (never corrupt the file).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sysops.store import Store


class ServiceDatabase:
    """Per-thread connections to one store file, with the services' schemas created on each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: a thread's store goes (and its connection closes) when the thread ends and its local goes.
        self._stores: weakref.WeakSet[Store] = weakref.WeakSet()
        self._schemas: list[str] = []

    def ensure_schema(self, script: str) -> None:
        """Register a service's `CREATE ... IF NOT EXISTS` script; it runs on every connection (now and later)."""
        with self._lock:
            if script not in self._schemas:
                self._schemas.append(script)
        self.store.db.executescript(script)

    @property
    def store(self) -> Store:
        """This thread's store (opened on first use)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.path)
            store.db.execute("PRAGMA synchronous=NORMAL")
            with self._lock:
                schemas = list(self._schemas)
                self._stores.add(store)
            for script in schemas:
                store.db.executescript(script)
            self._local.store = store
        return store

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: each statement alone is atomic)."""
        return self.store.db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements run atomically, serialized with every other writer of the file."""
        with self.store.transaction() as db:
            yield db

    def forget_plugin(self, plugin: str, tables: Sequence[str]) -> None:
        """Delete every row of `plugin` from `tables` (each service's PLUGIN_TABLES: names of ours, never input)."""
        with self.transaction() as db:
            for table in tables:
                db.execute(f"DELETE FROM {table} WHERE plugin=?", (plugin,))

    def close(self) -> None:
        """Close every thread's connection (no thread may use the services after this)."""
        with self._lock:
            stores, self._stores = list(self._stores), weakref.WeakSet()
        for store in stores:
            # Another thread's connection cannot be closed from here; it closes when that thread's local goes.
            with contextlib.suppress(sqlite3.ProgrammingError):
                store.close()
        self._local = threading.local()
