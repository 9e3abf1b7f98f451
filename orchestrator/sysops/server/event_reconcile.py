"""The host's background reconciliation: driven by the engine's events, with a slow safety pass.

A pass over every plugin every five seconds (a listing, then a lock and a few engine calls per plugin) was
most of an idle host's CPU with fifty plugins. Where the driver reports its instances' changes
(`ReportsInstanceChanges`: Docker's event stream, runtime/docker/engine_events.py), each change of a plugin's
container (start, die, destroy, oom) reconciles that plugin alone, DEBOUNCE_SECONDS later (a roll or a
restart is several events), and once more FOLLOW_UP_SECONDS after that: an instance the engine stopped
cleanly is started again only after core/recovery.py's grace, which no event marks. A plugin whose lock is
held (a roll, the supervisor) is tried again BUSY_RETRY_SECONDS later. Every plugin is reconciled when the
stream (re)connects (events may have been missed: the host's start, an engine restart; followed up as an
event is), and by a safety pass every `interval` seconds (SYSOPS_RECONCILE_SECONDS, default
SAFETY_PASS_SECONDS): it sweeps orphaned socket directories, renews restart budgets after a stable run
(runtime/faults.py) and catches anything an event did not name. A driver without events is reconciled by
the full pass alone, every `interval` seconds (POLL_SECONDS by default). A failing pass is logged once while
it keeps failing, and the next runs.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from sysops.core.orchestrator import Orchestrator
from sysops.errors import UsageError

#: Env setting: seconds between full passes (the safety pass beside events, or the poll without them).
INTERVAL_ENV = "SYSOPS_RECONCILE_SECONDS"
#: The safety pass beside events, and the poll of a driver without events (seconds).
SAFETY_PASS_SECONDS = 60.0
POLL_SECONDS = 5.0
#: A plugin is reconciled this long after its first event (the rest of a burst joins that pass).
DEBOUNCE_SECONDS = 0.1
#: ...and again this long after that (core/recovery.py GRACE_SECONDS is 3 s: a clean stop is restarted then).
FOLLOW_UP_SECONDS = 3.5
#: A plugin whose lock was held is tried again this soon.
BUSY_RETRY_SECONDS = 1.0
#: The key of a full pass in the schedule ('*' is never a plugin name).
EVERYTHING = "*"
LOG = logging.getLogger("sysops.server")


class ChangeFeed(Protocol):
    """Plugin names as their instances change, None when anything may have changed; `close` ends it."""

    def __iter__(self) -> Iterator[str | None]:
        """Follow the changes."""
        ...

    def close(self) -> None:
        """End the iteration, from any thread."""
        ...


@runtime_checkable
class ReportsInstanceChanges(Protocol):
    """A driver that reports its instances' changes (the Docker driver)."""

    def instance_events(self, labels: Mapping[str, str]) -> ChangeFeed:
        """The changes of the instances carrying `labels`."""
        ...


def reconcile_interval(given: float | None, evented: bool) -> float:
    """Seconds between full passes: `given`, else SYSOPS_RECONCILE_SECONDS, else the default for the mode."""
    if given is not None:
        return given
    text = os.environ.get(INTERVAL_ENV, "")
    if not text:
        return SAFETY_PASS_SECONDS if evented else POLL_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UsageError(f"{INTERVAL_ENV} must be a number of seconds above 0, not {text!r}")
    return seconds


class Schedule:
    """When each plugin (or EVERYTHING) is next due; thread-safe; `wait_due` hands the due keys out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._due: dict[str, tuple[float, bool]] = {}
        self._heap: list[tuple[float, str]] = []
        self._changed = threading.Condition()

    def request(self, key: str, delay: float, *, follow_up: bool = False) -> None:
        """Have `key` due in `delay` seconds (or sooner, if it already is); `follow_up`: due again after it."""
        at = self.clock() + delay
        with self._changed:
            earlier, wanted = self._due.get(key, (at, False))
            self._due[key] = (min(at, earlier), wanted or follow_up)
            heapq.heappush(self._heap, (min(at, earlier), key))
            self._changed.notify()

    def wake(self) -> None:
        """Have a waiting `wait_due` look at `stop` again."""
        with self._changed:
            self._changed.notify()

    def wait_due(self, stop: threading.Event) -> dict[str, bool]:
        """Wait until something is due (or `stop`); return the due keys, each with its follow-up wish."""
        with self._changed:
            while not stop.is_set():
                now = self.clock()
                while self._heap and self._due.get(self._heap[0][1], (None,))[0] != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier request, or handed out
                if self._heap and self._heap[0][0] <= now:
                    due = {key: wanted for key, (at, wanted) in self._due.items() if at <= now}
                    for key in due:
                        del self._due[key]
                    return due
                self._changed.wait(self._heap[0][0] - now if self._heap else None)
            return {}


def reconcile_continuously(
    orchestrator: Callable[[], Orchestrator],
    driver: object,
    labels: Mapping[str, str],
    stop: threading.Event,
    interval: float | None = None,
) -> threading.Thread:
    """Start reconciling in the background until `stop` (see the module docstring); return the loop's thread."""
    schedule = Schedule()
    feed = driver.instance_events(labels) if isinstance(driver, ReportsInstanceChanges) else None
    every = reconcile_interval(interval, feed is not None)
    if feed is not None:
        threading.Thread(target=_follow, args=(feed, schedule, stop), name="sysops-engine-events", daemon=True).start()
    else:
        schedule.request(EVERYTHING, every)

    def end_on_stop() -> None:
        stop.wait()
        schedule.wake()
        if feed is not None:
            feed.close()

    threading.Thread(target=end_on_stop, name="sysops-reconcile-stop", daemon=True).start()
    loop = threading.Thread(
        target=_reconcile_due, args=(orchestrator, schedule, stop, every), name="sysops-reconcile", daemon=True
    )
    loop.start()
    return loop


def _follow(feed: ChangeFeed, schedule: Schedule, stop: threading.Event) -> None:
    """Put each change the feed reports on the schedule, until `stop` (which closes the feed)."""
    for changed in feed:
        if stop.is_set():
            return
        if changed is None or changed:
            schedule.request(changed or EVERYTHING, DEBOUNCE_SECONDS, follow_up=True)


def _reconcile_due(
    orchestrator: Callable[[], Orchestrator], schedule: Schedule, stop: threading.Event, interval: float
) -> None:
    """Reconcile what is due, until `stop`: a held plugin is tried again soon, a failed one at the next poll
    (each failure logged once while it keeps failing), a full pass schedules the next one `interval` on."""
    failing = ""
    while due := schedule.wait_due(stop):
        busy, failed, error = _reconcile(orchestrator, due)
        if error is not None:
            summary = f"{type(error).__name__}: {error}"
            if summary != failing:
                LOG.error("reconcile failed (retrying every %gs): %s", POLL_SECONDS, summary, exc_info=error)
            failing = summary
        elif failing:
            LOG.warning("reconcile works again")
            failing = ""
        for key, wanted in due.items():
            if key in busy:
                schedule.request(key, BUSY_RETRY_SECONDS, follow_up=wanted)
            elif key in failed:
                schedule.request(key, POLL_SECONDS, follow_up=wanted)
            elif wanted:
                schedule.request(key, FOLLOW_UP_SECONDS)
        if EVERYTHING in due:
            schedule.request(EVERYTHING, interval)


def _reconcile(
    orchestrator: Callable[[], Orchestrator], due: Mapping[str, bool]
) -> tuple[set[str], set[str], Exception | None]:
    """Reconcile everything (when due) or each due plugin; return the plugins whose lock was held, the keys
    that failed and the first failure."""
    busy: set[str] = set()
    failed: set[str] = set()
    first: Exception | None = None
    try:
        current = orchestrator()
    except Exception as exc:  # the store cannot be opened: everything due is tried again
        return busy, set(due), exc
    try:
        for key in [EVERYTHING] if EVERYTHING in due else sorted(due):
            try:
                if key == EVERYTHING:
                    current.reconcile()
                elif not current.reconcile_plugin(key):
                    busy.add(key)
            except Exception as exc:  # whatever one pass hits (an odd object, a lost engine), the next one runs
                failed.add(key)
                first = first or exc
    finally:
        current.close()
    return busy, failed, first
