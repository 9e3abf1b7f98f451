"""Per-instance outcomes of routed calls, for the rollout analysis (core/analysis.py, docs/rollout-analysis.md).

A roll under analysis watches the new instance's endpoint; the router (core/router.py) reports each call it
sent there and that started: how long it took and whether it succeeded (a result with exit code 0). Calls
refused before they ran (re-sent elsewhere) and calls their caller abandoned are not the version's doing and
are not reported. A call still running when the window ends is the version's too (one that wedges would
otherwise pass on its quick calls alone): `settle` waits for the calls in flight, within a grace, and counts
those still running then as failed. Only watched endpoints are recorded, so the routed path pays one dictionary
lookup. The roll and the router run in one process (the resident host, or `sysops serve`), so memory is enough.
Light to import: on the routed path.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One call an instance answered: its duration and whether it succeeded."""

    seconds: float
    ok: bool


class CallMeter:
    """The samples of the endpoints being watched."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._watched: dict[str, list[Sample]] = {}
        #: The calls in flight to each watched endpoint: {call: monotonic time it started}.
        self._running: dict[str, dict[int, float]] = {}
        self._calls = itertools.count(1)

    def watch(self, endpoint: str) -> None:
        """Start recording the calls sent to `endpoint` (from none)."""
        with self._lock:
            self._watched[endpoint] = []
            self._running[endpoint] = {}

    def unwatch(self, endpoint: str) -> list[Sample]:
        """Stop recording `endpoint`; return what was recorded."""
        with self._lock:
            self._running.pop(endpoint, None)
            return self._watched.pop(endpoint, [])

    def start(self, endpoint: str) -> int | None:
        """A call to `endpoint` starts: its id for `finish` (None, and nothing kept, unless it is watched)."""
        if endpoint not in self._watched:
            return None
        with self._lock:
            running = self._running.get(endpoint)
            if running is None:
                return None
            call = next(self._calls)
            running[call] = time.monotonic()
            return call

    def finish(self, endpoint: str, call: int | None, ok: bool | None) -> None:
        """The call `start` returned ended: recorded with its duration, unless `ok` is None (not the version's)."""
        if call is None:
            return
        with self._lock:
            started = self._running.get(endpoint, {}).pop(call, None)
            if started is not None and ok is not None:
                self._watched[endpoint].append(Sample(time.monotonic() - started, ok))
            self._lock.notify_all()

    def settle(self, endpoint: str, grace: float) -> list[Sample]:
        """The samples of `endpoint` once its calls in flight ended, waiting at most `grace` seconds for them;
        a call still running then counts as failed (it has run this long)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._running.get(endpoint), timeout=grace)
            now = time.monotonic()
            wedged = [Sample(now - started, False) for started in self._running.get(endpoint, {}).values()]
            return [*self._watched.get(endpoint, ()), *wedged]


#: This process's meter (the router records into it, a roll under analysis reads it).
METER = CallMeter()
