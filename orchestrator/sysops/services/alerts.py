"""The `alerts` host service: alerts a plugin raises and resolves, listed by `sysops alerts`, published as events.

An alert is (plugin, name): raising one that is open updates it (severity, message, a count of raises)
rather than opening a second, so a plugin may raise on every check. Each raise and resolve is published
on the host topic `sysops.alerts` (when an event bus is connected). Resolved alerts are kept, the latest
RESOLVED_ALERTS_PER_PLUGIN of each plugin, for the history `sysops alerts --all` shows; a plugin may have at
most OPEN_ALERTS_PER_PLUGIN open at once (a new name beyond it is refused), so alerts cannot fill the store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sysops.core.names import shown
from sysops.services.call import Caller, ServiceCallError
from sysops.services.database import ServiceDatabase
from sysops.services.limits import (
    ALERT_MESSAGE_CHARS,
    ALERT_NAME_CHARS,
    OPEN_ALERTS_PER_PLUGIN,
    RESOLVED_ALERTS_PER_PLUGIN,
    check_arguments,
    text_argument,
)

#: The host topic each raise and resolve is published on.
ALERTS_TOPIC = "sysops.alerts"
SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]

#: Tables holding rows per plugin (deleted by `plugin down --purge`, HostServices.forget_plugin).
PLUGIN_TABLES = ("service_alerts",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    name TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    open INTEGER NOT NULL,
    raised REAL NOT NULL,
    updated REAL NOT NULL,
    resolved REAL,
    count INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS service_alerts_open ON service_alerts (plugin, name) WHERE open = 1;
CREATE INDEX IF NOT EXISTS service_alerts_by_plugin ON service_alerts (plugin, id);
"""
_COLUMNS = "id, plugin, name, severity, message, open, raised, updated, resolved, count"


@dataclass(frozen=True)
class Alert:
    """One alert: open until resolved; `count` is how many times it was raised while open."""

    id: int
    plugin: str
    name: str
    severity: str
    message: str
    open: bool
    raised: float
    updated: float
    resolved: float | None
    count: int

    def as_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready values."""
        return asdict(self)


class AlertService:
    """Alerts of every plugin, in the store's file."""

    def __init__(self, database: ServiceDatabase, publish: Callable[[str, Any], int | None]) -> None:
        self.database = database
        self._publish = publish
        database.ensure_schema(_SCHEMA)

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> Any:
        """Run one `alerts` method for the calling plugin."""
        if method == "list":
            check_arguments(arguments, (), "alerts.list")
            return {"alerts": [alert.as_dict() for alert in self.list(caller.plugin)]}
        if method == "resolve":
            check_arguments(arguments, ("name",), "alerts.resolve")
            return {"resolved": self.resolve(caller.plugin, _name(arguments))}
        check_arguments(arguments, ("name", "severity", "message"), "alerts.raise")
        severity = arguments.get("severity")
        if severity not in SEVERITIES:
            raise ServiceCallError(
                "invalid_argument", f"alert severity must be one of {', '.join(SEVERITIES)} (got {shown(severity)})"
            )
        message = text_argument(arguments, "message", ALERT_MESSAGE_CHARS)
        return {"id": self.raise_alert(caller.plugin, _name(arguments), severity, message).id}

    def raise_alert(self, plugin: str, name: str, severity: Severity, message: str) -> Alert:
        """Open alert `name` of `plugin`, or update it if open; publish it; return it."""
        now = time.time()
        with self.database.transaction() as db:
            updated = db.execute(
                "UPDATE service_alerts SET severity=?, message=?, updated=?, count=count+1 "
                "WHERE plugin=? AND name=? AND open=1 RETURNING id",
                (severity, message, now, plugin, name),
            ).fetchone()
            if updated is None:
                _check_room(db, plugin)
                db.execute(
                    "INSERT INTO service_alerts (plugin, name, severity, message, open, raised, updated, count) "
                    "VALUES (?, ?, ?, ?, 1, ?, ?, 1)",
                    (plugin, name, severity, message, now, now),
                )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM service_alerts WHERE plugin=? AND name=? AND open=1", (plugin, name)
            ).fetchone()
        alert = _alert(row)
        self._publish(ALERTS_TOPIC, {"action": "raised", **alert.as_dict()})
        return alert

    def resolve(self, plugin: str, name: str) -> bool:
        """Resolve the open alert `name` of `plugin` (publishing it); say whether one was open."""
        now = time.time()
        with self.database.transaction() as db:
            row = db.execute(
                f"UPDATE service_alerts SET open=0, resolved=?, updated=? WHERE plugin=? AND name=? AND open=1 "
                f"RETURNING {_COLUMNS}",
                (now, now, plugin, name),
            ).fetchone()
            db.execute(
                "DELETE FROM service_alerts WHERE plugin=? AND open=0 AND id <= (SELECT id FROM service_alerts "
                "WHERE plugin=? AND open=0 ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (plugin, plugin, RESOLVED_ALERTS_PER_PLUGIN),
            )
        if row is None:
            return False
        self._publish(ALERTS_TOPIC, {"action": "resolved", **_alert(row).as_dict()})
        return True

    def list(self, plugin: str | None = None, *, include_resolved: bool = False) -> list[Alert]:
        """Open alerts (and resolved ones with `include_resolved`) of one plugin or all, oldest first."""
        where = [] if include_resolved else ["open=1"]
        parameters: tuple[Any, ...] = ()
        if plugin is not None:
            where.append("plugin=?")
            parameters = (plugin,)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self.database.db.execute(
            f"SELECT {_COLUMNS} FROM service_alerts {clause}ORDER BY id", parameters
        ).fetchall()
        return [_alert(row) for row in rows]


def _check_room(db: sqlite3.Connection, plugin: str) -> None:
    """Refuse a new open alert of `plugin` beyond OPEN_ALERTS_PER_PLUGIN (raising an open one again is fine)."""
    (open_count,) = db.execute("SELECT COUNT(*) FROM service_alerts WHERE plugin=? AND open=1", (plugin,)).fetchone()
    if open_count >= OPEN_ALERTS_PER_PLUGIN:
        raise ServiceCallError(
            "resource_exhausted",
            f"plugin '{plugin}' has {open_count} open alerts, the most a plugin may (resolve some first)",
        )


def _name(arguments: dict[str, Any]) -> str:
    name = text_argument(arguments, "name", ALERT_NAME_CHARS)
    if not name or not name.isprintable():
        raise ServiceCallError("invalid_argument", "alert 'name' must be non-empty printable text on one line")
    return name


def _alert(row: tuple[Any, ...]) -> Alert:
    return Alert(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8], row[9])
