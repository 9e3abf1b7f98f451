"""Per-instance outcomes of routed calls, for the rollout analysis (core/analysis.py, docs/rollout-analysis.md).

A roll under analysis watches the new instance's endpoint; the router (core/router.py) reports each call it
sent there and that started: how long it took and whether it succeeded (a result with exit code 0). Calls
refused before they ran (re-sent elsewhere) and calls their caller abandoned are not the version's doing and
are not reported. Only watched endpoints are recorded, so the routed path pays one dictionary lookup. The
roll and the router run in one process (the resident host, or `sysops serve`), so memory is enough.
Light to import: on the routed path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One call an instance answered: its duration and whether it succeeded."""

    seconds: float
    ok: bool


class CallMeter:
    """The samples of the endpoints being watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, list[Sample]] = {}

    def watch(self, endpoint: str) -> None:
        """Start recording the calls sent to `endpoint` (from none)."""
        with self._lock:
            self._watched[endpoint] = []

    def unwatch(self, endpoint: str) -> list[Sample]:
        """Stop recording `endpoint`; return what was recorded."""
        with self._lock:
            return self._watched.pop(endpoint, [])

    def samples(self, endpoint: str) -> list[Sample]:
        """What `endpoint` recorded so far."""
        with self._lock:
            return list(self._watched.get(endpoint, ()))

    def record(self, endpoint: str, seconds: float, ok: bool) -> None:
        """A call sent to `endpoint` ended (ignored unless it is watched)."""
        if endpoint not in self._watched:
            return
        with self._lock:
            samples = self._watched.get(endpoint)
            if samples is not None:
                samples.append(Sample(seconds, ok))


#: This process's meter (the router records into it, a roll under analysis reads it).
METER = CallMeter()
