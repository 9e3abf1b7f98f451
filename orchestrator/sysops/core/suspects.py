"""What the router and the supervisor tell each other about an instance, inside one host process.

The router sees things the supervisor's probes at `liveness.interval_s` would see late: a routed call that
overran its deadline marks its instance suspect, and the supervisor probes a suspect at once; if that
probe fails too, the instance counts as wedged (issue 9: "a command overruns its deadline and health then
fails": restart). The other way, the supervisor marks an instance restarting while it restarts it and
until a probe finds it serving again (or its start time is up), and a call that finds the instance's
socket closed meanwhile waits for the restart, up to its own deadline, instead of failing at once.

Instances are named by their endpoint, which both sides know. The registry lives in memory: the router
and the supervisor run in the same resident host (a CLI that routes a call itself simply finds nothing
marked). Light to import: the router is on the hot path of `sysops <command>`.
"""

from __future__ import annotations

import threading
import time


class Suspects:
    """Thread-safe marks on instances: suspect (a call overran its deadline) and restarting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._suspect: set[str] = set()
        self._restarting: dict[str, threading.Event] = {}

    def suspect(self, endpoint: str) -> None:
        """Mark the instance at `endpoint` suspect: a call to it overran its deadline."""
        with self._lock:
            self._suspect.add(endpoint)

    def is_suspect(self, endpoint: str) -> bool:
        """Whether the instance at `endpoint` is marked suspect."""
        with self._lock:
            return endpoint in self._suspect

    def take_suspect(self, endpoint: str) -> bool:
        """Whether the instance at `endpoint` was marked suspect; the mark is removed (one probe answers it)."""
        with self._lock:
            if endpoint not in self._suspect:
                return False
            self._suspect.discard(endpoint)
            return True

    def restarting(self, endpoint: str) -> None:
        """Mark the instance at `endpoint` as being restarted (calls that cannot reach it wait)."""
        with self._lock:
            self._restarting.setdefault(endpoint, threading.Event())

    def is_restarting(self, endpoint: str) -> bool:
        """Whether the instance at `endpoint` is marked as being restarted."""
        with self._lock:
            return endpoint in self._restarting

    def restarted(self, endpoint: str) -> None:
        """The instance at `endpoint` serves again, or is given up on: release the calls waiting for it."""
        with self._lock:
            waiting = self._restarting.pop(endpoint, None)
        if waiting is not None:
            waiting.set()

    def wait_restarted(self, endpoint: str, deadline: float) -> bool:
        """If the instance at `endpoint` is being restarted, wait until it serves again or the monotonic
        `deadline` passes; True when it was being restarted and is done (the caller may try it again)."""
        with self._lock:
            waiting = self._restarting.get(endpoint)
        if waiting is None:
            return False
        return waiting.wait(max(0.0, deadline - time.monotonic()))

    def forget(self, keep: set[str]) -> None:
        """Drop the marks of instances not in `keep` (gone), releasing calls that wait for them."""
        with self._lock:
            self._suspect &= keep
            gone = [endpoint for endpoint in self._restarting if endpoint not in keep]
        for endpoint in gone:
            self.restarted(endpoint)


#: The registry of this process (the resident host's router and supervisor share it).
REGISTRY = Suspects()
