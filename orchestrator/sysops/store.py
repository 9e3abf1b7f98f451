"""Local state that outlives a CLI process: plugins, instances, revisions, routes and events in SQLite.

The engine is the truth about what runs (containers carry labels); the store is the truth about what
the user asked for and what each command routes to. Reconciliation (core/orchestrator.py) brings the
two together. The routed-command path reads only the `routes` table (with the active instances, and the
weights a rollout analysis sets in `route_shares`), so it stays a single indexed query.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sysops.errors import CommandConflictError
from sysops.private_paths import create_private_file, ensure_private_dir, private_umask, tighten_file

#: Bumped whenever a table changes shape; see Store._migrate.
SCHEMA_VERSION = 3
#: Events kept: the latest of each plugin, and the latest in all (older ones are deleted as new ones come).
EVENTS_PER_PLUGIN = 1000
EVENTS_TOTAL = 20_000

_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")
#: Counts this process's writes to what routes read (routes, instances, route_shares): see routing_changes.
_routing_changes = 0
_routing_changes_lock = threading.Lock()


def routing_changes() -> int:
    """A number that changes after each write this process made to what a route is read from (routes, instances,
    their shares), once it is committed: a reader that kept routes (host/route_cache.py) compares it for free, where
    asking SQLite whether anything committed is a statement. Other processes' writes do not change it."""
    return _routing_changes


def _changes_routing(method: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
    """Mark a Store method that writes what routes are read from: routing_changes() changes once it returns."""

    @functools.wraps(method)
    def counted(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        global _routing_changes
        try:
            return method(*args, **kwargs)
        finally:
            with _routing_changes_lock:  # writers in several threads: no increment is lost
                _routing_changes += 1  # also after a failure: part of it may have been written

    return counted


_SCHEMA = """
CREATE TABLE IF NOT EXISTS plugins (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    runtime TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    revision INTEGER NOT NULL,
    version TEXT NOT NULL,
    handle TEXT NOT NULL,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    socket_dir TEXT NOT NULL,
    created REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_by_plugin ON instances (plugin, active);
CREATE TABLE IF NOT EXISTS revisions (
    plugin TEXT NOT NULL,
    revision INTEGER NOT NULL,
    version TEXT NOT NULL,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (plugin, revision)
);
CREATE TABLE IF NOT EXISTS routes (
    command TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    spec BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS routes_by_plugin ON routes (plugin);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_plugin ON events (plugin, id);
CREATE TABLE IF NOT EXISTS claims (
    instance TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS route_shares (
    instance TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    weight REAL NOT NULL
);
"""


@dataclass(frozen=True)
class PluginRecord:
    """A plugin the user brought up."""

    name: str
    source: str
    runtime: str
    manifest: dict[str, Any]
    last_error: str


@dataclass(frozen=True)
class InstanceRecord:
    """One started instance of a plugin revision."""

    id: str
    plugin: str
    revision: int
    version: str
    handle: str
    image: str
    image_id: str
    endpoint: str
    socket_dir: str
    created: float
    active: bool = False
    token: str = ""


@dataclass(frozen=True)
class RevisionRecord:
    """A version of a plugin that once served successfully."""

    plugin: str
    revision: int
    version: str
    image: str
    image_id: str
    fingerprint: str
    manifest: dict[str, Any]
    created: float


@dataclass(frozen=True)
class Route:
    """Where a command goes: the plugin, the endpoints of its active instances, the serialized CommandSpec."""

    command: str
    plugin: str
    spec: bytes
    #: (endpoint, token) of every active instance.
    targets: tuple[tuple[str, str], ...]
    #: Relative share of calls of each target during a rollout analysis (empty: all equal).
    weights: tuple[float, ...] = ()

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Endpoints of the active instances."""
        return tuple(endpoint for endpoint, _ in self.targets)

    @property
    def endpoint(self) -> str:
        """One active endpoint, chosen at random (by `weights`, if any) so calls spread across replicas
        ('' if none is active)."""
        if not self.targets:
            return ""
        if self.weights and len(set(self.weights)) > 1:
            return random.choices(self.endpoints, weights=self.weights)[0]
        return random.choice(self.endpoints)

    def token_for(self, endpoint: str) -> str:
        """The token the instance at `endpoint` requires."""
        return next((token for candidate, token in self.targets if candidate == endpoint), "")


@dataclass(frozen=True)
class EventRecord:
    """A lifecycle event of a plugin (`kind` is one of sysops.core.events.EventKind)."""

    plugin: str
    time: float
    kind: str
    message: str
    #: Grows with every event stored and is never reused (SQLite AUTOINCREMENT), so a follower reads by id.
    id: int = 0


#: How long opening the store retries switching a brand-new database to WAL while another opener holds it.
_WAL_SWITCH_SECONDS = 30.0


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch to WAL. SQLite answers 'database is locked' at once, without its busy handler, when two
    connections switch a new database at the same moment (two host threads opening a fresh state.db), so
    the switch is retried for a while instead of failing the first call of a new installation."""
    deadline = time.monotonic() + _WAL_SWITCH_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _statements(script: str) -> list[str]:
    """The SQL statements of a script, one by one (executescript would commit the transaction they must run in)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


class Store:
    """SQLite-backed state of one sysops installation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, opened (and the schema created) on first use."""
        if self._connection is None:
            connection = self._connect_private()
            connection.execute("PRAGMA busy_timeout=30000")
            # One opener at a time reads the version, migrates, creates the schema and sets the version: run
            # apart, an opener saw another's fresh tables at version 0 and dropped them ("no such table").
            connection.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(connection)
                for statement in _statements(_SCHEMA):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                connection.execute("ROLLBACK")
                connection.close()
                raise
            connection.execute("COMMIT")
            self._connection = connection
        return self._connection

    def _connect_private(self) -> sqlite3.Connection:
        """Open the database with it and its -wal/-shm files 0600 in a 0700 directory (they hold instance tokens)."""
        ensure_private_dir(self.path.parent)
        with contextlib.suppress(FileExistsError):
            os.close(create_private_file(self.path))
        for suffix in ("", "-wal", "-shm"):  # made 0644 by an older sysops
            tighten_file(self.path.with_name(self.path.name + suffix))
        with private_umask():  # SQLite creates -wal and -shm itself, with the umask's mode
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            _use_wal(connection)
        return connection

    @staticmethod
    def _migrate(connection: sqlite3.Connection) -> None:
        """Bring a store written by an older sysops to this schema.

        Instances and routes are derived from what runs, so older shapes are dropped and rebuilt by
        reconciliation (running containers are re-adopted by label); plugins, revisions and events stay.
        """
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        exists = connection.execute("SELECT 1 FROM sqlite_master WHERE name='instances'").fetchone()
        if exists and version < SCHEMA_VERSION:
            connection.execute("DROP TABLE IF EXISTS instances")
            connection.execute("DROP TABLE IF EXISTS routes")

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically (BEGIN IMMEDIATE serializes concurrent sysops processes)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # plugins
    def save_plugin(self, name: str, source: str, runtime: str, manifest: dict[str, Any]) -> None:
        """Record (or update) a plugin the user brought up."""
        self.db.execute(
            "INSERT INTO plugins (name, source, runtime, manifest_json, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET source=excluded.source, runtime=excluded.runtime, "
            "manifest_json=excluded.manifest_json, updated=excluded.updated",
            (name, source, runtime, json.dumps(manifest), time.time()),
        )

    def plugin(self, name: str) -> PluginRecord | None:
        """Return a plugin by name."""
        row = self.db.execute(
            "SELECT name, source, runtime, manifest_json, last_error FROM plugins WHERE name=?",
            (name,),
        ).fetchone()
        return self._plugin(row) if row else None

    def change_token(self) -> tuple[int, int, int]:
        """Changes when any connection committed to the store since the last call (SQLite's data_version counts
        other connections' commits, total_changes this one's; both per connection, so the connection is part of the
        token): a reader that saw the same token reads nothing new."""
        version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        return id(self.db), version, self.db.total_changes

    def plugins(self) -> list[PluginRecord]:
        """Return all plugins, by name."""
        rows = self.db.execute(
            "SELECT name, source, runtime, manifest_json, last_error FROM plugins ORDER BY name"
        ).fetchall()
        return [self._plugin(row) for row in rows]

    def plugin_names(self) -> list[str]:
        """The names of all plugins, sorted (their manifests are not read: a reconcile pass needs the names)."""
        return [row[0] for row in self.db.execute("SELECT name FROM plugins ORDER BY name")]

    @staticmethod
    def _plugin(row: tuple[Any, ...]) -> PluginRecord:
        return PluginRecord(row[0], row[1], row[2], json.loads(row[3]), row[4])

    def set_last_error(self, name: str, error: str) -> None:
        """Remember why a plugin last failed (empty to clear)."""
        self.db.execute("UPDATE plugins SET last_error=?, updated=? WHERE name=?", (error, time.time(), name))

    @_changes_routing
    def delete_plugin(self, name: str, *, revisions: bool = False) -> None:
        """Forget a plugin, its instances and routes, and with `revisions` its revisions (events stay).

        Revisions are kept by default: they name the images a later `down --purge` removes, and they
        keep revision numbers growing if the plugin comes back.
        """
        with self.transaction() as db:
            for table, column in (("plugins", "name"), ("instances", "plugin"), ("routes", "plugin")):
                db.execute(f"DELETE FROM {table} WHERE {column}=?", (name,))
            if revisions:
                db.execute("DELETE FROM revisions WHERE plugin=?", (name,))
            db.execute("DELETE FROM claims WHERE instance NOT IN (SELECT id FROM instances)")

    # instances
    @_changes_routing
    def add_instance(self, instance: InstanceRecord) -> None:
        """Record a started instance."""
        self._put_instance(self.db, instance)

    @staticmethod
    def _put_instance(db: sqlite3.Connection, instance: InstanceRecord) -> None:
        db.execute(
            "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                instance.id,
                instance.plugin,
                instance.revision,
                instance.version,
                instance.handle,
                instance.image,
                instance.image_id,
                instance.endpoint,
                instance.socket_dir,
                instance.created,
                int(instance.active),
                instance.token,
            ),
        )

    def instance(self, instance_id: str) -> InstanceRecord | None:
        """Return an instance by id."""
        row = self.db.execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
        return InstanceRecord(*row) if row else None

    def instances(self, plugin: str | None = None) -> list[InstanceRecord]:
        """Return recorded instances, of one plugin or all."""
        if plugin is None:
            rows = self.db.execute("SELECT * FROM instances ORDER BY created").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM instances WHERE plugin=? ORDER BY created", (plugin,)).fetchall()
        return [InstanceRecord(*row) for row in rows]

    def active_instances(self, plugin: str) -> list[InstanceRecord]:
        """Return the instances of a plugin that routing sends calls to, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM instances WHERE plugin=? AND active=1 ORDER BY created", (plugin,)
        ).fetchall()
        return [InstanceRecord(*row) for row in rows]

    @_changes_routing
    def delete_instance(self, instance_id: str) -> None:
        """Forget an instance."""
        self.db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
        self.db.execute("DELETE FROM route_shares WHERE instance=?", (instance_id,))
        self.db.execute("DELETE FROM claims WHERE instance=?", (instance_id,))

    @_changes_routing
    def claim(self, instance: InstanceRecord, fingerprint: str) -> None:
        """Record that a spare instance was given the code of `fingerprint` (core/spares.py) as `instance`'s
        revision: its container's labels cannot say so, and its socket directory may not outlive a reboot."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?)", (instance.id, fingerprint))
            self._put_instance(db, instance)

    def claimed_code(self, instance_id: str) -> str:
        """The code fingerprint a claimed spare runs ("" for any other instance)."""
        row = self.db.execute("SELECT fingerprint FROM claims WHERE instance=?", (instance_id,)).fetchone()
        return str(row[0]) if row else ""

    # revisions
    def next_revision(self, plugin: str) -> int:
        """Return the number the next revision of `plugin` will get."""
        row = self.db.execute("SELECT MAX(revision) FROM revisions WHERE plugin=?", (plugin,)).fetchone()
        return int(row[0] or 0) + 1

    def add_revision(self, revision: RevisionRecord) -> None:
        """Record a revision that became active."""
        self.db.execute(
            "INSERT OR REPLACE INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                revision.plugin,
                revision.revision,
                revision.version,
                revision.image,
                revision.image_id,
                revision.fingerprint,
                json.dumps(revision.manifest),
                revision.created,
            ),
        )

    def revision_fingerprints(self) -> set[str]:
        """The fingerprints of every plugin's revisions (the development-mode code snapshots kept for them)."""
        return {str(row[0]) for row in self.db.execute("SELECT DISTINCT fingerprint FROM revisions").fetchall()}

    def revisions(self, plugin: str) -> list[RevisionRecord]:
        """Return the revisions of a plugin, oldest first."""
        rows = self.db.execute("SELECT * FROM revisions WHERE plugin=? ORDER BY revision", (plugin,)).fetchall()
        return [
            RevisionRecord(
                plugin=row[0],
                revision=row[1],
                version=row[2],
                image=row[3],
                image_id=row[4],
                fingerprint=row[5],
                manifest=json.loads(row[6]),
                created=row[7],
            )
            for row in rows
        ]

    # routes
    @_changes_routing
    def switch(
        self,
        plugin: str,
        *,
        add: list[InstanceRecord],
        remove: list[InstanceRecord],
        routes: dict[str, bytes] | None = None,
    ) -> None:
        """Atomically put instances into routing and take others out (and replace the command table).

        The command table is checked for claims of other plugins inside the same transaction, so two
        plugins brought up at once cannot both claim a command: the second gets CommandConflictError and
        nothing of its switch is applied.
        """
        with self.transaction() as db:
            db.executemany("UPDATE instances SET active=1 WHERE id=?", [(i.id,) for i in add])
            db.executemany("UPDATE instances SET active=0 WHERE id=?", [(i.id,) for i in remove])
            if routes is not None:
                conflict = self._route_conflict(db, plugin, routes)
                if conflict is not None:
                    raise conflict
                db.execute("DELETE FROM routes WHERE plugin=?", (plugin,))
                db.executemany(
                    "INSERT INTO routes (command, plugin, spec) VALUES (?, ?, ?)",
                    [(command, plugin, spec) for command, spec in routes.items()],
                )
            db.execute("UPDATE plugins SET last_error='', updated=? WHERE name=?", (time.time(), plugin))

    def route_conflict(self, plugin: str, commands: Iterable[str]) -> CommandConflictError | None:
        """The first clash of `commands` (of `plugin`) with another plugin's routes, or None."""
        return self._route_conflict(self.db, plugin, commands)

    @staticmethod
    def _route_conflict(db: sqlite3.Connection, plugin: str, commands: Iterable[str]) -> CommandConflictError | None:
        for command in sorted(commands):
            group = command.split(" ", 1)[0]
            row = db.execute("SELECT plugin FROM routes WHERE command=? AND plugin<>?", (command, plugin)).fetchone()
            if row is not None:
                return CommandConflictError(
                    f"command {command!r} of plugin {plugin!r} is already provided by plugin {row[0]!r}",
                    hint=f"rename it in one of them, or `sysops plugin down {row[0]}` first",
                )
            row = db.execute("SELECT plugin FROM routes WHERE command=? AND plugin<>?", (group, plugin)).fetchone()
            if " " in command and row is not None:
                return CommandConflictError(
                    f"command group {group!r} of plugin {plugin!r} clashes with command {group!r} of plugin {row[0]!r}"
                )
            row = db.execute(
                "SELECT plugin FROM routes WHERE substr(command, 1, ?)=? AND plugin<>?",
                (len(command) + 1, command + " ", plugin),
            ).fetchone()
            if row is not None:
                return CommandConflictError(
                    f"command {command!r} of plugin {plugin!r} clashes with command group {command!r} "
                    f"of plugin {row[0]!r}"
                )
        return None

    @_changes_routing
    def deactivate(self, plugin: str) -> None:
        """Take all of a plugin's instances out of routing and drop its commands."""
        with self.transaction() as db:
            db.execute("DELETE FROM routes WHERE plugin=?", (plugin,))
            db.execute("UPDATE instances SET active=0 WHERE plugin=?", (plugin,))

    @_changes_routing
    def set_shares(self, plugin: str, shares: dict[str, float]) -> None:
        """Route `plugin`'s calls by weight during a rollout analysis: {instance id: relative share}. An
        instance with a share is routed even if not active (a new version on trial, which reconciliation
        still removes if the host dies: it was never switched in). An empty dict ends the split."""
        with self.transaction() as db:
            db.execute("DELETE FROM route_shares WHERE plugin=?", (plugin,))
            db.executemany(
                "INSERT INTO route_shares (instance, plugin, weight) VALUES (?, ?, ?)",
                [(instance, plugin, weight) for instance, weight in shares.items()],
            )

    _ROUTE_QUERY = (
        "SELECT r.command, r.plugin, r.spec, i.endpoint, i.token, s.weight FROM routes r "
        "LEFT JOIN instances i ON i.plugin = r.plugin "
        "AND (i.active = 1 OR i.id IN (SELECT instance FROM route_shares WHERE plugin = r.plugin)) "
        "LEFT JOIN route_shares s ON s.instance = i.id "
    )

    @staticmethod
    def _group_routes(rows: list[tuple[Any, ...]]) -> list[Route]:
        grouped: dict[str, tuple[str, bytes, list[tuple[str, str]], list[float]]] = {}
        for command, plugin, spec, endpoint, token, weight in rows:
            entry = grouped.setdefault(command, (plugin, spec, [], []))
            if endpoint:
                entry[2].append((endpoint, token or ""))
                entry[3].append(1.0 if weight is None else float(weight))
        return [
            Route(command, plugin, spec, tuple(targets), tuple(weights))
            for command, (plugin, spec, targets, weights) in grouped.items()
        ]

    def route(self, command: str) -> Route | None:
        """Return the route of a command, or None."""
        routes = self._group_routes(self.db.execute(self._ROUTE_QUERY + "WHERE r.command=?", (command,)).fetchall())
        return routes[0] if routes else None

    def routes(self, prefix: str = "") -> list[Route]:
        """Return all routes, or those of a command group (`prefix` + space)."""
        if prefix:
            rows = self.db.execute(
                self._ROUTE_QUERY + "WHERE r.command=? OR r.command LIKE ? ORDER BY r.command",
                (prefix, prefix + " %"),
            ).fetchall()
        else:
            rows = self.db.execute(self._ROUTE_QUERY + "ORDER BY r.command").fetchall()
        return self._group_routes(rows)

    # events
    def add_event(self, plugin: str, kind: str, message: str) -> None:
        """Append a lifecycle event (through sysops.core.events.record), dropping what is past the retention."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (plugin, time, kind, message) VALUES (?, ?, ?, ?)",
                (plugin, time.time(), kind, message),
            )
            db.execute(
                "DELETE FROM events WHERE plugin=? AND id <= "
                "(SELECT id FROM events WHERE plugin=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (plugin, plugin, EVENTS_PER_PLUGIN),
            )
            db.execute(
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (EVENTS_TOTAL,),
            )

    _EVENT_COLUMNS = "SELECT plugin, time, kind, message, id FROM events "

    def events(self, plugin: str, limit: int = 20) -> list[EventRecord]:
        """Return the latest events of a plugin, oldest first."""
        rows = self.db.execute(
            self._EVENT_COLUMNS + "WHERE plugin=? ORDER BY id DESC LIMIT ?", (plugin, limit)
        ).fetchall()
        return [EventRecord(*row) for row in reversed(rows)]

    def events_after(self, after: int, plugin: str | None = None, limit: int = 500) -> list[EventRecord]:
        """Return up to `limit` events (of one plugin or all) with an id above `after`, oldest first."""
        if plugin is None:
            rows = self.db.execute(self._EVENT_COLUMNS + "WHERE id>? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        else:
            rows = self.db.execute(
                self._EVENT_COLUMNS + "WHERE plugin=? AND id>? ORDER BY id LIMIT ?", (plugin, after, limit)
            ).fetchall()
        return [EventRecord(*row) for row in rows]
