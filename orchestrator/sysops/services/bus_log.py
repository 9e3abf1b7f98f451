"""The event bus's tables in the store's SQLite file: the events, each subscriber's cursor, the dead letters.

Kept apart from the bus's threads so every statement the bus runs is in one place. The tables are the bus's
own (created here with CREATE TABLE IF NOT EXISTS on the bus's connections, store.py's tables untouched),
opened through services/database.py (a connection per thread, private file modes, WAL). Every write of the
bus goes through one in-process lock as well as SQLite's: the bus's threads then never wait in SQLite's
busy handler (which sleeps in steps of milliseconds) for one another, only for other processes.
Ids come from AUTOINCREMENT, so they grow in commit order and are never reused: a cursor is an id.
The bus's connections (its own, not the other services') commit with synchronous=NORMAL: in WAL mode a
commit then survives the host process being killed, and only an OS crash or power loss may lose the last
few; without it every publish and every cursor save waits for an fsync (about 1 ms here), which caps the
bus near 1,000 events/s.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sysops.services.database import ServiceDatabase

_SCHEMA = """
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS bus_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    publisher TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_subscribers (
    plugin TEXT PRIMARY KEY,
    patterns_json TEXT NOT NULL,
    cursor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    publisher TEXT NOT NULL,
    event_time REAL NOT NULL,
    reason TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_dead_letters_by_plugin ON bus_dead_letters (plugin, id);
"""
_EVENT_COLUMNS = "id, topic, payload_json, publisher, time"
#: Topics of a dead-letter run named in its sysops.dead-letter event, at most.
RUN_TOPICS = 20


@dataclass(frozen=True)
class BusEvent:
    """One published event (payload already decoded from its JSON)."""

    id: int
    topic: str
    payload: Any
    publisher: str
    time: float


@dataclass(frozen=True)
class DeadLetter:
    """An event a subscriber will not get: its handler kept failing, or its backlog overflowed."""

    plugin: str
    event: BusEvent
    reason: str
    time: float


@dataclass(frozen=True)
class DeadLetterRun:
    """Consecutive pending events of one subscriber dead-lettered at once (a backlog overflow)."""

    count: int
    first_id: int
    last_id: int
    topics: tuple[str, ...]


class Patterns:
    """What a subscriber receives: exact topics, prefixes (`deploy.*`), or everything (`*`)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._exact = frozenset(pattern for pattern in self.patterns if not pattern.endswith("*"))
        self._prefixes = tuple(pattern[:-1] for pattern in self.patterns if pattern.endswith("*"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Patterns) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def matches(self, topic: str) -> bool:
        """Whether an event on `topic` goes to this subscriber."""
        return topic in self._exact or topic.startswith(self._prefixes)

    def sql(self) -> tuple[str, tuple[str, ...]]:
        """The same test as an SQL condition on `topic` (GLOB: the topic characters are not GLOB's specials)."""
        return "(" + " OR ".join("topic GLOB ?" for _ in self.patterns) + ")", self.patterns


class BusLog:
    """The bus's rows: append and read events, keep cursors and patterns, move events to the dead letters."""

    def __init__(self, path: Path) -> None:
        self._database = ServiceDatabase(path)
        self._database.ensure_schema(_SCHEMA)
        self._write_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the connections. A worker that outlives the bus's stop (it was inside `deliver`) then saves
        no cursor and dead-letters nothing: it would reopen a file its host has let go."""
        with self._write_lock:
            self._closed = True
        self._database.close()

    # events
    def append(self, topic: str, payload_json: str, publisher: str, published: float) -> int:
        """Store one event; return its id."""
        with self._write_lock:  # one statement: atomic by itself
            cursor = self._database.db.execute(
                "INSERT INTO bus_events (topic, payload_json, publisher, time) VALUES (?, ?, ?, ?)",
                (topic, payload_json, publisher, published),
            )
            return int(cursor.lastrowid or 0)

    def last_id(self) -> int:
        """The id of the latest event ever stored (0 before the first; deleted events count)."""
        row = self._database.db.execute("SELECT seq FROM sqlite_sequence WHERE name='bus_events'").fetchone()
        return int(row[0]) if row else 0

    def events_after(self, after: int, up_to: int, patterns: Patterns, limit: int) -> list[BusEvent]:
        """The events `patterns` match with `after` < id <= `up_to`, oldest first, at most `limit`."""
        condition, parameters = patterns.sql()
        rows = self._database.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM bus_events WHERE id > ? AND id <= ? AND {condition} ORDER BY id LIMIT ?",
            (after, up_to, *parameters, limit),
        ).fetchall()
        return [_event(row) for row in rows]

    def count_after(self, after: int, patterns: Patterns) -> int:
        """How many events `patterns` match after `after`."""
        condition, parameters = patterns.sql()
        row = self._database.db.execute(
            f"SELECT COUNT(*) FROM bus_events WHERE id > ? AND {condition}", (after, *parameters)
        ).fetchone()
        return int(row[0])

    # subscribers
    def subscribers(self) -> dict[str, tuple[Patterns, int]]:
        """Every stored subscriber: its patterns and cursor."""
        rows = self._database.db.execute("SELECT plugin, patterns_json, cursor FROM bus_subscribers").fetchall()
        return {plugin: (Patterns(json.loads(text)), int(cursor)) for plugin, text, cursor in rows}

    def save_subscriber(self, plugin: str, patterns: Patterns) -> int:
        """Store `plugin`'s patterns; a new subscriber's cursor is the latest event. Return its cursor."""
        with self._write_lock, self._database.transaction() as db:
            db.execute(
                "INSERT INTO bus_subscribers (plugin, patterns_json, cursor) VALUES (?, ?, "
                "COALESCE((SELECT seq FROM sqlite_sequence WHERE name='bus_events'), 0)) "
                "ON CONFLICT(plugin) DO UPDATE SET patterns_json=excluded.patterns_json",
                (plugin, json.dumps(list(patterns.patterns))),
            )
            row = db.execute("SELECT cursor FROM bus_subscribers WHERE plugin=?", (plugin,)).fetchone()
            return int(row[0])

    def delete_subscriber(self, plugin: str) -> None:
        """Forget `plugin`'s subscription and cursor."""
        with self._write_lock:
            self._database.db.execute("DELETE FROM bus_subscribers WHERE plugin=?", (plugin,))

    def save_cursor(self, plugin: str, cursor: int) -> None:
        """Record that `plugin` has passed every event up to `cursor` (a cursor never moves back)."""
        with self._write_lock:
            if not self._closed:
                _advance(self._database.db, plugin, cursor)

    # dead letters
    def dead_letter_event(self, plugin: str, event: BusEvent, reason: str) -> None:
        """Move one event of `plugin` to the dead letters and its cursor past it, at once."""
        with self._write_lock:
            if not self._closed:
                self._dead_letter_event(plugin, event, reason)

    def _dead_letter_event(self, plugin: str, event: BusEvent, reason: str) -> None:
        with self._database.transaction() as db:
            db.execute(
                "INSERT INTO bus_dead_letters (plugin, event_id, topic, payload_json, publisher, event_time, "
                "reason, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    plugin,
                    event.id,
                    event.topic,
                    json.dumps(event.payload),
                    event.publisher,
                    event.time,
                    reason,
                    time.time(),
                ),
            )
            _advance(db, plugin, event.id)

    def dead_letter_oldest(
        self, plugin: str, after: int, patterns: Patterns, reason: str, *, count: int = 0, up_to: int = 0
    ) -> DeadLetterRun | None:
        """Dead-letter `plugin`'s oldest pending events, `count` of them or all up to id `up_to`, and move its
        cursor past them (to `up_to` at least), in one transaction; None when none was pending."""
        condition, parameters = patterns.sql()
        with self._write_lock, self._database.transaction() as db:
            if count:
                row = db.execute(
                    f"SELECT id FROM bus_events WHERE id > ? AND {condition} ORDER BY id LIMIT 1 OFFSET ?",
                    (after, *parameters, count - 1),
                ).fetchone()
                up_to = int(row[0]) if row else db.execute("SELECT COALESCE(MAX(id), 0) FROM bus_events").fetchone()[0]
            selected = f"FROM bus_events WHERE id > ? AND id <= ? AND {condition}"
            arguments = (after, up_to, *parameters)
            moved = db.execute(
                "INSERT INTO bus_dead_letters (plugin, event_id, topic, payload_json, publisher, event_time, reason, "
                f"time) SELECT ?, id, topic, payload_json, publisher, time, ?, ? {selected} ORDER BY id",
                (plugin, reason, time.time(), *arguments),
            ).rowcount
            _advance(db, plugin, up_to)
            if moved <= 0:
                return None
            first, last = db.execute(f"SELECT MIN(id), MAX(id) {selected}", arguments).fetchone()
            topics = db.execute(f"SELECT DISTINCT topic {selected} ORDER BY topic LIMIT ?", (*arguments, RUN_TOPICS))
            return DeadLetterRun(moved, int(first), int(last), tuple(topic for (topic,) in topics))

    def dead_letters(self, plugin: str | None, limit: int) -> list[DeadLetter]:
        """The latest `limit` dead letters (of `plugin` or all), oldest first."""
        where, parameters = ("WHERE plugin=? ", (plugin,)) if plugin is not None else ("", ())
        rows = self._database.db.execute(
            "SELECT plugin, event_id, topic, payload_json, publisher, event_time, reason, time FROM bus_dead_letters "
            f"{where}ORDER BY id DESC LIMIT ?",
            (*parameters, limit),
        ).fetchall()
        return [DeadLetter(row[0], _event(row[1:6]), row[6], row[7]) for row in reversed(rows)]

    # retention
    def retain(self, cut: int, dead_letters: int) -> int:
        """Delete the events every subscriber has passed (all of them when none subscribes) and every event up to
        id `cut`; keep at most `dead_letters` dead letters. Return the id up to which events are gone."""
        with self._write_lock, self._database.transaction() as db:
            passed = db.execute(
                "SELECT COALESCE(MIN(cursor), (SELECT seq FROM sqlite_sequence WHERE name='bus_events'), 0) "
                "FROM bus_subscribers"
            ).fetchone()[0]
            gone = max(int(passed), cut)
            db.execute("DELETE FROM bus_events WHERE id <= ?", (gone,))
            db.execute(
                "DELETE FROM bus_dead_letters WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM bus_dead_letters) - ?",
                (dead_letters,),
            )
        return gone

    def payload_sizes(self) -> list[tuple[int, int]]:
        """(id, characters of payload JSON) of every stored event, oldest first (read once, when a bus opens)."""
        rows = self._database.db.execute("SELECT id, LENGTH(payload_json) FROM bus_events ORDER BY id").fetchall()
        return [(int(row[0]), int(row[1])) for row in rows]

    def event_count(self) -> int:
        """How many events are stored."""
        return int(self._database.db.execute("SELECT COUNT(*) FROM bus_events").fetchone()[0])


def _advance(db: sqlite3.Connection, plugin: str, cursor: int) -> None:
    db.execute("UPDATE bus_subscribers SET cursor=MAX(cursor, ?) WHERE plugin=?", (cursor, plugin))


def _event(row: Sequence[Any]) -> BusEvent:
    return BusEvent(int(row[0]), row[1], json.loads(row[2]), row[3], float(row[4]))
