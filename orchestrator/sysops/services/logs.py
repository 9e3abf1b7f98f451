"""The `logs` host service: structured log records a plugin writes, with the identity the host knows.

A record carries what the plugin cannot forge: its plugin, instance and revision come from the caller
the transport identified, the time from the host. Records live in the store's file, the latest
LOGS_PER_PLUGIN of each plugin (older ones are deleted as new ones come), and `sysops plugin logs` reads
them by id, so a follower asks for what came after the last one it showed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sysops.core.names import shown
from sysops.services.call import Caller, ServiceCallError
from sysops.services.database import ServiceDatabase
from sysops.services.limits import LOG_FIELDS_BYTES, LOG_MESSAGE_BYTES, LOGS_PER_PLUGIN, check_arguments, json_text

LEVELS = ("debug", "info", "warning", "error")
#: How often a follower of the records looks for new ones, and how many it reads at once.
FOLLOW_POLL_SECONDS = 0.25
BATCH = 500

#: Tables holding rows per plugin (deleted by `plugin down --purge`, HostServices.forget_plugin).
PLUGIN_TABLES = ("service_logs",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    plugin TEXT NOT NULL,
    instance TEXT NOT NULL,
    revision INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    fields_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_logs_by_plugin ON service_logs (plugin, id);
"""


@dataclass(frozen=True)
class LogRecord:
    """One structured log record of a plugin instance."""

    id: int
    time: float
    plugin: str
    instance: str
    revision: int
    level: str
    message: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        return asdict(self)


class LogService:
    """Structured log records of every plugin, bounded per plugin."""

    def __init__(self, database: ServiceDatabase) -> None:
        self.database = database
        database.ensure_schema(_SCHEMA)

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> None:
        """Run `logs.write` for the calling instance."""
        check_arguments(arguments, ("level", "message", "fields"), f"logs.{method}")
        level = arguments.get("level", "info")
        if level not in LEVELS:
            raise ServiceCallError(
                "invalid_argument", f"log level must be one of {', '.join(LEVELS)} (got {shown(level)})"
            )
        message = arguments.get("message")
        if not isinstance(message, str):
            raise ServiceCallError("invalid_argument", f"log 'message' must be a string (got {shown(message)})")
        fields = arguments.get("fields", {})
        if not isinstance(fields, dict):
            raise ServiceCallError("invalid_argument", "log 'fields' must be an object")
        self.write(caller, level, message, fields)

    def write(self, caller: Caller, level: str, message: str, fields: dict[str, Any]) -> None:
        """Append one record for `caller` (within the limits), dropping the plugin's oldest beyond the bound."""
        size = len(message.encode())
        if size > LOG_MESSAGE_BYTES:
            raise ServiceCallError("invalid_argument", f"log message is {size} bytes, above {LOG_MESSAGE_BYTES}")
        fields_text = json_text(fields)
        if len(fields_text.encode()) > LOG_FIELDS_BYTES:
            raise ServiceCallError("invalid_argument", f"log fields are above {LOG_FIELDS_BYTES} bytes as JSON")
        with self.database.transaction() as db:
            db.execute(
                "INSERT INTO service_logs (time, plugin, instance, revision, level, message, fields_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), caller.plugin, caller.instance_id, caller.revision, level, message, fields_text),
            )
            db.execute(
                "DELETE FROM service_logs WHERE plugin=? AND id <= "
                "(SELECT id FROM service_logs WHERE plugin=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (caller.plugin, caller.plugin, LOGS_PER_PLUGIN),
            )

    def records(self, plugin: str, after: int = 0, limit: int = 500) -> list[LogRecord]:
        """Up to `limit` records of `plugin` with an id above `after`, oldest first."""
        rows = self.database.db.execute(
            "SELECT id, time, plugin, instance, revision, level, message, fields_json FROM service_logs "
            "WHERE plugin=? AND id>? ORDER BY id LIMIT ?",
            (plugin, after, limit),
        ).fetchall()
        return [
            LogRecord(
                id=row[0], time=row[1], plugin=row[2], instance=row[3], revision=row[4], level=row[5],
                message=row[6], fields=json.loads(row[7]),
            )
            for row in rows
        ]  # fmt: skip

    def latest(self, plugin: str, limit: int = 100) -> list[LogRecord]:
        """The last `limit` records of `plugin`, oldest first (where `plugin logs` starts before following)."""
        row = self.database.db.execute(
            "SELECT id FROM service_logs WHERE plugin=? ORDER BY id DESC LIMIT 1 OFFSET ?", (plugin, limit)
        ).fetchone()
        return self.records(plugin, after=row[0] if row else 0, limit=limit)

    def stream(
        self, plugin: str, *, tail: int | None = None, follow: bool = False, stop: threading.Event | None = None
    ) -> Iterator[LogRecord]:
        """The plugin's records, oldest first (the last `tail` of them, or every one kept); with `follow`, then
        each new one as it is written, until `stop` is set. Memory stays bounded: BATCH at a time."""
        stop = stop or threading.Event()
        after = 0
        if tail is not None:
            first = self.latest(plugin, limit=tail) if tail > 0 else []
            yield from first
            after = first[-1].id if first else self._last_id(plugin)
            if not follow:
                return
        while not stop.is_set():
            batch = self.records(plugin, after=after, limit=BATCH)
            yield from batch
            if batch:
                after = batch[-1].id
            if len(batch) == BATCH:
                continue
            if not follow or stop.wait(FOLLOW_POLL_SECONDS):
                return

    def _last_id(self, plugin: str) -> int:
        row = self.database.db.execute("SELECT MAX(id) FROM service_logs WHERE plugin=?", (plugin,)).fetchone()
        return int(row[0] or 0)
