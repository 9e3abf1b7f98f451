"""The `state` host service: a key-value store per plugin, kept by the host, with versions for compare-and-set.

A plugin's `/data` is per instance (and empty in every new pod on Kubernetes); what must survive a reload,
a rollback or a pod replacement goes here instead, in the store's SQLite file. Every write gets a new
version from one counter per plugin, so a version is never reused for a key, even after a delete: a
compare-and-set against an old version always fails. Quotas per plugin (keys, bytes) are checked in the
same transaction as the write, so concurrent writers cannot overshoot them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from sysops.core.names import shown
from sysops.services.call import Caller, ServiceCallError
from sysops.services.database import ServiceDatabase
from sysops.services.limits import (
    STATE_BYTES_PER_PLUGIN,
    STATE_KEY_CHARS,
    STATE_KEYS_PER_PLUGIN,
    STATE_VALUE_BYTES,
    check_arguments,
    json_text,
    text_argument,
)
from sysops.services.state_cache import Entry, StateCache

#: Tables holding rows per plugin (deleted by `plugin down --purge`, HostServices.forget_plugin).
PLUGIN_TABLES = ("service_state", "service_state_versions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_state (
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    size INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE IF NOT EXISTS service_state_versions (
    plugin TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
"""

#: Values up to this size (JSON text) may be answered from the cache on the listeners' event loop (cached_get).
CACHED_ANSWER_BYTES = 4096
_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "get": ("key",),
    "list": ("prefix",),
    "set": ("key", "value"),
    "delete": ("key",),
    "cas": ("key", "expected_version", "value"),
}


class StateService:
    """Per-plugin keys and JSON values with versions."""

    def __init__(self, database: ServiceDatabase) -> None:
        self.database = database
        self.cache = StateCache()
        database.ensure_schema(_SCHEMA)

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> Any:
        """Run one `state` method for the calling plugin."""
        check_arguments(arguments, _ARGUMENTS[method], f"state.{method}")
        plugin = caller.plugin
        if method == "list":
            return {"keys": self.keys(plugin, text_argument(arguments, "prefix", STATE_KEY_CHARS, default=""))}
        key = _key(arguments)
        if method == "get":
            return self.get(plugin, key)
        if method == "delete":
            return {"deleted": self.delete(plugin, key)}
        if "value" not in arguments:
            raise ServiceCallError("invalid_argument", f"state.{method}: argument 'value' is required")
        if method == "set":
            return {"version": self.set(plugin, key, arguments["value"])}
        expected = arguments.get("expected_version")
        if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
            raise ServiceCallError(
                "invalid_argument",
                "state.cas: 'expected_version' must be an integer >= 0 (0: the key must not exist), "
                f"got {shown(expected)}",
            )
        ok, version = self.cas(plugin, key, expected, arguments["value"])
        return {"ok": ok, "version": version}

    def get(self, plugin: str, key: str) -> dict[str, Any]:
        """{"found", "value", "version"} of `key` (version 0 and value None when absent)."""
        cached, entry, writes = self.cache.lookup(plugin, key)
        if not cached:
            row = self.database.db.execute(
                "SELECT value_json, version FROM service_state WHERE plugin=? AND key=?", (plugin, key)
            ).fetchone()
            entry = (row[0], int(row[1])) if row is not None else None
            self.cache.fill(plugin, key, entry, writes)
        return _got(entry)

    def cached_get(self, plugin: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """`state.get` answered from the cache alone (its arguments checked as `handle` does), or None when the
        value is not cached or larger than CACHED_ANSWER_BYTES: nothing here waits on the database and little
        is decoded, so the host may answer it on the event loop its plugins' listeners share."""
        check_arguments(arguments, _ARGUMENTS["get"], "state.get")
        cached, entry, _ = self.cache.lookup(plugin, _key(arguments))
        if not cached or (entry is not None and _reply_size(entry[0]) > CACHED_ANSWER_BYTES):
            return None
        return _got(entry)

    def keys(self, plugin: str, prefix: str = "") -> list[str]:
        """The plugin's keys starting with `prefix`, sorted."""
        rows = self.database.db.execute(
            "SELECT key FROM service_state WHERE plugin=? AND substr(key, 1, ?)=? ORDER BY key",
            (plugin, len(prefix), prefix),
        ).fetchall()
        return [row[0] for row in rows]

    def set(self, plugin: str, key: str, value: Any) -> int:
        """Store `value` under `key`; return its new version."""
        text = _value_text(value)
        try:
            with self.database.transaction() as db:
                return self._write(db, plugin, key, text)
        finally:
            self.cache.written(plugin, key)

    def cas(self, plugin: str, key: str, expected_version: int, value: Any) -> tuple[bool, int]:
        """Store `value` only if `key` is at `expected_version` (0: absent); (stored, version now)."""
        text = _value_text(value)
        try:
            with self.database.transaction() as db:
                row = db.execute("SELECT version FROM service_state WHERE plugin=? AND key=?", (plugin, key)).fetchone()
                current = row[0] if row else 0
                if current != expected_version:
                    return False, current
                return True, self._write(db, plugin, key, text)
        finally:
            self.cache.written(plugin, key)

    def delete(self, plugin: str, key: str) -> bool:
        """Remove `key`; say whether it existed."""
        try:
            with self.database.transaction() as db:
                return db.execute("DELETE FROM service_state WHERE plugin=? AND key=?", (plugin, key)).rowcount > 0
        finally:
            self.cache.written(plugin, key)

    def usage(self, plugin: str) -> tuple[int, int]:
        """(keys, bytes of values) the plugin holds."""
        row = self.database.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM service_state WHERE plugin=?", (plugin,)
        ).fetchone()
        return int(row[0]), int(row[1])

    @staticmethod
    def _write(db: sqlite3.Connection, plugin: str, key: str, text: str) -> int:
        size = len(text.encode())
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), "
            "COALESCE(SUM(CASE WHEN key=? THEN size END), -1) FROM service_state WHERE plugin=?",
            (key, plugin),
        ).fetchone()
        keys, total, old_size = int(row[0]), int(row[1]), int(row[2])
        if old_size < 0 and keys >= STATE_KEYS_PER_PLUGIN:
            raise ServiceCallError(
                "resource_exhausted",
                f"plugin '{plugin}' holds {keys} state keys, the most a plugin may (delete some first)",
            )
        after = total - max(old_size, 0) + size
        if after > STATE_BYTES_PER_PLUGIN:
            raise ServiceCallError(
                "resource_exhausted",
                f"plugin '{plugin}' state would hold {after} bytes, above the {STATE_BYTES_PER_PLUGIN} a plugin may",
            )
        version = int(
            db.execute(
                "INSERT INTO service_state_versions (plugin, last_version) VALUES (?, 1) "
                "ON CONFLICT(plugin) DO UPDATE SET last_version=last_version+1 RETURNING last_version",
                (plugin,),
            ).fetchone()[0]
        )
        db.execute(
            "INSERT INTO service_state (plugin, key, value_json, size, version, updated) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(plugin, key) DO UPDATE SET value_json=excluded.value_json, size=excluded.size, "
            "version=excluded.version, updated=excluded.updated",
            (plugin, key, text, size, version, time.time()),
        )
        return version


def _reply_size(value_json: str) -> int:
    """At most how many bytes a stored value takes in a reply (stored as UTF-8 JSON, sent ASCII-escaped: a
    character outside ASCII may become a 12-byte surrogate pair escape)."""
    return len(value_json) if value_json.isascii() else 12 * len(value_json)


def _got(entry: Entry) -> dict[str, Any]:
    """The answer of `get` for a stored entry (None: the key is absent)."""
    if entry is None:
        return {"found": False, "value": None, "version": 0}
    return {"found": True, "value": json.loads(entry[0]), "version": entry[1]}


def _key(arguments: dict[str, Any]) -> str:
    key = text_argument(arguments, "key", STATE_KEY_CHARS)
    if not key:
        raise ServiceCallError("invalid_argument", "argument 'key' must not be empty")
    return key


def _value_text(value: Any) -> str:
    text = json_text(value)
    size = len(text.encode())
    if size > STATE_VALUE_BYTES:
        raise ServiceCallError("invalid_argument", f"state value is {size} bytes as JSON, above {STATE_VALUE_BYTES}")
    return text
