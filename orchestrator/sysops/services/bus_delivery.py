"""One subscribing plugin's side of the event bus: its cursor, its backlog, and the worker that delivers to it.

Each subscribing plugin has one worker thread, so a subscriber whose handler blocks or fails holds nothing
but its own worker. The worker reads the matching events after the cursor in batches, oldest first, and
hands each to `deliver`; the cursor moves only after `deliver` returned (at least once), and is saved at
least every CURSOR_SAVE_SECONDS and when the worker stops (a host killed in between delivers those again).
`Undeliverable` (no ready instance: the plugin is restarting or rolling) is retried with backoff for as long
as it lasts; any other exception is a failed handler, and the `max_attempts`-th failure on the same event
dead-letters it. The bus (publishing threads, retention) may dead-letter the oldest pending events of a
backlog that grew too long while the worker is busy: both sides change the cursor under the subscriber's
lock, and the worker skips what is behind the cursor when it gets to it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sysops.safe_text import cap
from sysops.services.bus_log import BusEvent, BusLog, DeadLetterRun, Patterns

#: Longest wait between two attempts of the same event.
MAX_RETRY_SECONDS = 2.0
#: Events a worker reads at once.
BATCH = 256
#: A worker saves its cursor at least this often while it delivers.
CURSOR_SAVE_SECONDS = 0.2
#: A caught-up worker looks at the log this often even when nobody wakes it.
IDLE_SECONDS = 1.0
#: Characters of a handler's error kept as a dead letter's reason.
REASON_CAP = 500

_log = logging.getLogger(__name__)

#: Hands one event to a subscribing plugin; returns when it was handled. Raises `Undeliverable` when no
#: instance could take it (retried, not counted), anything else when the handler failed (counted).
Deliver = Callable[[str, BusEvent], None]


class Undeliverable(Exception):
    """The event did not reach a handler (no ready instance, the instance refused): retry without counting."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the bus tries, and how far behind a subscriber may fall."""

    max_attempts: int = 5
    retry_seconds: float = 0.2
    backlog_limit: int = 1000

    def delays(self) -> Iterator[float]:
        """The waits between attempts: retry_seconds, doubling, at most MAX_RETRY_SECONDS."""
        delay = self.retry_seconds
        while True:
            yield delay
            delay = min(delay * 2, max(MAX_RETRY_SECONDS, self.retry_seconds))

    @property
    def backlog_kept(self) -> int:
        """What an overflowing backlog is cut to: 90% of the limit, so a subscriber that stays stuck costs one
        dead-letter transaction per tenth of the limit published, not one per event."""
        return self.backlog_limit - max(1, self.backlog_limit // 10)

    @property
    def episode_end(self) -> int:
        """An overflow episode (one sysops.dead-letter event) ends when the backlog drained to half the limit."""
        return self.backlog_limit // 2


class Subscriber:
    """A subscribing plugin: patterns, cursor, pending count (all under `lock`), and its worker thread."""

    def __init__(
        self,
        plugin: str,
        patterns: Patterns,
        cursor: int,
        pending: int,
        log: BusLog,
        deliver: Deliver,
        policy: DeliveryPolicy,
    ) -> None:
        self.plugin = plugin
        self.lock = threading.Lock()
        self.patterns = patterns
        #: Every event up to here was delivered to the plugin or dead-lettered for it.
        self.cursor = cursor
        #: Matching events after the cursor.
        self.pending = pending
        #: Whether the backlog overflowed and has not drained since (one sysops.dead-letter event per episode).
        self.overflowing = False
        self._generation = 0
        self._saved = cursor
        self._log = log
        self._deliver = deliver
        self._policy = policy
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # called by the bus
    def start(self) -> None:
        """Start the worker (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sysops-bus-{self.plugin}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the worker to end (it saves its cursor); it ends at once unless it is inside `deliver`."""
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the worker to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def published(self, event_id: int) -> int:
        """Count a new matching event as pending and wake the worker; return the pending count."""
        with self.lock:
            if event_id > self.cursor:
                self.pending += 1
        self._wake.set()
        return self.pending

    def resubscribed(self, patterns: Patterns, count_pending: Callable[[int, Patterns], int]) -> None:
        """Take new patterns, and the pending count they give after the cursor; the worker re-reads from it."""
        with self.lock:
            if patterns == self.patterns:
                return
            self.patterns = patterns
            self.pending = count_pending(self.cursor, patterns)
            self._generation += 1
        self._wake.set()

    def cut_backlog(self, reason: str) -> DeadLetterRun | None:
        """Dead-letter the oldest pending events beyond DeliveryPolicy.backlog_kept when the backlog is over
        the limit; return the run when it starts an overflow episode."""
        with self.lock:
            if self.pending <= self._policy.backlog_limit:
                return None
            excess = self.pending - self._policy.backlog_kept
            run = self._log.dead_letter_oldest(self.plugin, self.cursor, self.patterns, reason, count=excess)
            return self._skipped(run, run.last_id if run else self.cursor)

    def cut_before(self, up_to: int, reason: str) -> DeadLetterRun | None:
        """Dead-letter every pending event up to id `up_to` (they are about to be deleted); return the run when
        it starts an overflow episode."""
        with self.lock:
            if self.cursor >= up_to:
                return None
            run = self._log.dead_letter_oldest(self.plugin, self.cursor, self.patterns, reason, up_to=up_to)
            return self._skipped(run, up_to)

    def _skipped(self, run: DeadLetterRun | None, cursor: int) -> DeadLetterRun | None:
        """Account for a dead-letter run (under the lock; the log already moved the stored cursor)."""
        self.cursor = self._saved = max(self.cursor, cursor)
        if run is None:
            return None
        self.pending -= run.count
        starts_episode = not self.overflowing
        self.overflowing = True
        return run if starts_episode else None

    # the worker
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                caught_up = self._deliver_batch()
            except sqlite3.Error as exc:  # the file is busy for long, or gone: try again, do not end the worker
                _log.warning("event bus: delivering to %s: %s", self.plugin, exc)
                caught_up = True
            if caught_up:
                self._wake.wait(IDLE_SECONDS)
        self._save()

    def _deliver_batch(self) -> bool:
        """Deliver the next batch; return whether nothing more was pending when it was read."""
        with self.lock:
            cursor, patterns, generation = self.cursor, self.patterns, self._generation
        latest = self._log.last_id()
        batch = self._log.events_after(cursor, latest, patterns, BATCH)
        last_saved = 0.0
        for event in batch:
            with self.lock:
                if self._generation != generation:
                    return False
            if not self._deliver_one(event):
                return False
            if time.monotonic() - last_saved > CURSOR_SAVE_SECONDS:
                self._save()
                last_saved = time.monotonic()
        if len(batch) < BATCH:
            with self.lock:  # nothing else up to `latest` is ours: pass it, so retention can delete it
                if self._generation == generation:
                    self.cursor = max(self.cursor, latest)
        self._save()
        return len(batch) < BATCH

    def _deliver_one(self, event: BusEvent) -> bool:
        """Deliver `event` until it is handled or dead-lettered (True), or the worker stops (False)."""
        failures = 0
        for delay in self._policy.delays():
            with self.lock:
                if event.id <= self.cursor:  # dead-lettered by a backlog cut meanwhile
                    return True
            if self._stopping.is_set():
                return False
            try:
                self._deliver(self.plugin, event)
            except Undeliverable:
                pass
            except Exception as exc:
                failures += 1
                if failures >= self._policy.max_attempts:
                    self._dead_letter(event, cap(f"handler failed {failures} times, last: {exc}", REASON_CAP))
                    return True
            else:
                self._passed(event)
                return True
            if self._stopping.wait(delay):
                return False
        return False  # pragma: no cover (delays() never ends)

    def _passed(self, event: BusEvent) -> None:
        with self.lock:
            if event.id > self.cursor:
                self.cursor = event.id
                self.pending -= 1
                if self.overflowing and self.pending <= self._policy.episode_end:
                    self.overflowing = False

    def _dead_letter(self, event: BusEvent, reason: str) -> None:
        with self.lock:
            if event.id > self.cursor:
                self._log.dead_letter_event(self.plugin, event, reason)
                self._saved = max(self._saved, event.id)
        self._passed(event)

    def _save(self) -> None:
        with self.lock:
            cursor = self.cursor
            if cursor <= self._saved:
                return
            self._saved = cursor
        self._log.save_cursor(self.plugin, cursor)
