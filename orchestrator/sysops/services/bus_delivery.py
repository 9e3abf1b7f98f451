"""One subscribing plugin's side of the event bus: its cursor, its backlog, and the worker that delivers to it.

Each subscribing plugin has one worker thread, so a subscriber whose handler blocks or fails holds nothing
but its own worker. The worker reads the matching events after the cursor in batches, oldest first, and
hands each to `deliver`; the cursor moves only after `deliver` returned (at least once), and is saved every
CURSOR_SAVE_SECONDS while it moves and when the worker stops (a host killed in between delivers those again:
at least once, never skipped).
`Undeliverable` (no ready instance: the plugin is restarting or rolling) is retried with backoff for as long
as it lasts; any other exception is a failed handler, and the `max_attempts`-th failure on the same event
dead-letters it. A worker that keeps up takes the events from memory (the publisher hands each to the
matching subscribers, RECENT_EVENTS at most); one that fell behind, or a new host, reads them from the log.
The bus (publishing threads, retention) may dead-letter the oldest pending events of a
backlog that grew too long while the worker is busy: both sides change the cursor under the subscriber's
lock, and the worker skips what is behind the cursor when it gets to it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sysops.safe_text import cap
from sysops.services.bus_log import BusEvent, BusLog, DeadLetterRun, Patterns

#: Longest wait between two attempts of the same event.
MAX_RETRY_SECONDS = 2.0
#: Events a worker reads from the log at once.
BATCH = 256
#: Latest matching events a subscriber keeps in memory, so a worker that keeps up never reads the log.
RECENT_EVENTS = 256
#: A worker saves its cursor at least this often while it delivers.
CURSOR_SAVE_SECONDS = 0.2
#: A caught-up worker looks at the log this often even when nobody wakes it.
IDLE_SECONDS = 1.0
#: How long a woken worker lets events gather before it delivers them (the latency it adds at most).
LINGER_SECONDS = 0.005
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


@dataclass(frozen=True)
class Wiring:
    """What every subscriber of one bus shares."""

    log: BusLog
    deliver: Deliver
    policy: DeliveryPolicy
    #: The id up to which every event was stored and handed to its subscribers (`Subscriber.published`).
    latest: Callable[[], int]


class Subscriber:
    """A subscribing plugin: patterns, cursor, pending count (all under `lock`), and its worker thread."""

    def __init__(
        self,
        plugin: str,
        patterns: Patterns,
        cursor: int,
        pending: int,
        wiring: Wiring,
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
        #: The latest matching events, oldest first: every matching event after `_complete_after` is here or
        #: was taken by the worker.
        self._recent: deque[BusEvent] = deque()
        self._complete_after = wiring.latest()
        self._log = wiring.log
        self._deliver = wiring.deliver
        self._policy = wiring.policy
        self._latest = wiring.latest
        self._wake = threading.Event()
        #: The worker waits for `_wake` (a publish sets it only then).
        self._idle = False
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
        with self.lock:  # (a worker going idle checks and clears under the lock)
            self._stopping.set()
            self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the worker to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def published(self, event: BusEvent) -> int:
        """Take a new matching event (stored already): count it as pending, keep it for the worker, wake the
        worker; return the pending count. Called in id order, before `Wiring.latest` passes the event.

        Counted even when the worker already passed it (it may read the log, which has the event before this
        runs): the worker then counted it down already, and every event is counted up once and down once.
        """
        with self.lock:
            self.pending += 1
            pending = self.pending
            if len(self._recent) >= RECENT_EVENTS:
                self._complete_after = self._recent.popleft().id
            self._recent.append(event)
            waiting, self._idle = self._idle, False
        if waiting:  # a busy worker finds the event when it looks again: no wake-up per event
            self._wake.set()
        return pending

    def resubscribed(self, patterns: Patterns, count_pending: Callable[[int, Patterns], int]) -> None:
        """Take new patterns, and the pending count they give after the cursor; the worker re-reads from it.
        Called while no event is being published."""
        with self.lock:
            if patterns == self.patterns:
                return
            self.patterns = patterns
            self.pending = count_pending(self.cursor, patterns)
            self._recent.clear()
            self._complete_after = self._latest()
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
        saved_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                caught_up = self._deliver_batch()
                if time.monotonic() - saved_at >= CURSOR_SAVE_SECONDS:
                    self._save()
                    saved_at = time.monotonic()
            except sqlite3.Error as exc:  # the file is busy for long, or gone: try again, do not end the worker
                _log.warning("event bus: delivering to %s: %s", self.plugin, exc)
                caught_up = True
            if caught_up:  # wait for an event; save the cursor when none comes soon
                self._idle_wait(CURSOR_SAVE_SECONDS if self._unsaved() else IDLE_SECONDS)
        self._save()

    def _idle_wait(self, timeout: float) -> None:
        """Wait until `published` (or stop, or a new subscription) wakes the worker, or `timeout`."""
        with self.lock:
            if self._recent or self._stopping.is_set():
                return
            self._idle = True
            self._wake.clear()
        woken = self._wake.wait(timeout)
        with self.lock:
            self._idle = False
        if woken:  # let the events published meanwhile gather: one wake-up for many, not one per event
            self._stopping.wait(LINGER_SECONDS)

    def _deliver_batch(self) -> bool:
        """Deliver the next batch; return whether it was all that was pending."""
        latest = self._latest()
        with self.lock:
            cursor, patterns, generation = self.cursor, self.patterns, self._generation
            in_memory = cursor >= self._complete_after
            if in_memory:
                batch = [event for event in self._recent if event.id > cursor]
                self._recent.clear()
        if not in_memory:
            batch = self._log.events_after(cursor, latest, patterns, BATCH)
        for event in batch:
            with self.lock:
                if self._generation != generation or self._stopping.is_set():
                    return False
                if event.id <= self.cursor:  # dead-lettered by a backlog cut meanwhile
                    continue
            if not self._deliver_one(event):
                return False
        if not in_memory and len(batch) == BATCH:
            return False
        with self.lock:  # nothing else up to `latest` is ours: pass it, so retention can delete it
            if self._generation != generation:
                return False
            self.cursor = max(self.cursor, latest)
        return True

    def _deliver_one(self, event: BusEvent) -> bool:
        """Deliver `event` until it is handled or dead-lettered (True), or the worker stops (False)."""
        try:
            self._deliver(self.plugin, event)
        except Exception as exc:
            return self._retry(event, exc)
        self._passed(event)
        return True

    def _retry(self, event: BusEvent, error: Exception) -> bool:
        """Deliver `event` again after its first attempt raised `error`, with backoff; as `_deliver_one`."""
        failures = 0
        for delay in self._policy.delays():
            if not isinstance(error, Undeliverable):  # the handler failed: counted
                failures += 1
                if failures >= self._policy.max_attempts:
                    self._dead_letter(event, cap(f"handler failed {failures} times, last: {error}", REASON_CAP))
                    return True
            if self._stopping.wait(delay):
                return False
            with self.lock:
                if event.id <= self.cursor:  # dead-lettered by a backlog cut meanwhile
                    return True
            try:
                self._deliver(self.plugin, event)
            except Exception as exc:
                error = exc
            else:
                self._passed(event)
                return True
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

    def _unsaved(self) -> bool:
        with self.lock:
            return self.cursor > self._saved

    def _save(self) -> None:
        with self.lock:
            cursor = self.cursor
            if cursor <= self._saved:
                return
            self._saved = cursor
        self._log.save_cursor(self.plugin, cursor)
