"""The engine's container events of one installation, as the plugin names they concern: what the host reconciles.

Polling the engine every few seconds cost an idle host with fifty plugins most of its CPU (a reconcile pass is a
listing and a few engine calls per plugin). The host instead follows `GET /events`, filtered by the engine to
this installation's instance containers (the `labels` given, plus the instance label, which a build's step
containers lack) and to what can change a plugin's state (`WATCHED_ACTIONS`: start, die, destroy, oom). Each
event yields the plugin label of its container. The stream is followed again whenever it ends or breaks (an
engine restart, a lost socket), after a short pause that grows to RECONNECT_MAX_SECONDS while the engine does
not answer; each (re)connection first yields `RESYNC` (None): events may have been missed, so the consumer
reconciles everything. `close` ends the iteration from any thread, at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sysops.runtime.base import LABEL_INSTANCE, LABEL_PLUGIN

#: Container actions that can change what reconciliation finds (a restart is a die and a start).
WATCHED_ACTIONS = ("start", "die", "destroy", "oom")
#: Yielded on each (re)connection: anything may have changed while the stream was not followed.
RESYNC = None
#: First pause before following a broken stream again, doubling up to RECONNECT_MAX_SECONDS.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
LOG = logging.getLogger("sysops.engine_events")


class InstanceEvents:
    """Iterate to follow the engine's events of the instances carrying `labels`: plugin names, or RESYNC."""

    def __init__(self, api: Callable[[], Any], labels: Mapping[str, str]) -> None:
        """`api` returns the docker APIClient (called again on each reconnection, so an engine that was down
        when the host started is reached once it answers)."""
        self._api = api
        self._filters = {
            "type": "container",
            "event": list(WATCHED_ACTIONS),
            "label": [f"{key}={value}" for key, value in labels.items()] + [LABEL_INSTANCE],
        }
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    def close(self) -> None:
        """End the iteration (a read blocked in another thread returns)."""
        self._closed.set()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_quietly(stream)

    def __iter__(self) -> Iterator[str | None]:
        pause = RECONNECT_FIRST_SECONDS
        failing = ""
        while not self._closed.is_set():
            try:
                stream = self._api().events(filters=self._filters, decode=True)
            except Exception as exc:  # an engine that is down or restarting: try again after the pause
                failing = _log_once(failing, exc)
                self._closed.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)
                continue
            with self._lock:
                self._stream = stream
            if self._closed.is_set():
                _close_quietly(stream)
                return
            if failing:
                LOG.warning("following the engine's events again")
                failing = ""
            pause = RECONNECT_FIRST_SECONDS
            yield RESYNC
            try:
                for event in stream:
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    yield str(attributes.get(LABEL_PLUGIN, ""))
            except Exception as exc:  # the stream broke (or was closed): follow it again, unless closed
                if not self._closed.is_set():
                    failing = _log_once(failing, exc)
            finally:
                _close_quietly(stream)
            self._closed.wait(pause)


def _log_once(failing: str, exc: Exception) -> str:
    """Log a failure to follow the events unless it is the one logged last; return its summary."""
    summary = f"{type(exc).__name__}: {exc}"
    if summary != failing:
        LOG.warning("cannot follow the engine's events (trying again): %s", summary[:300])
    return summary


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # already closed, or its socket is gone with the engine
        LOG.debug("closing the engine's event stream failed", exc_info=True)
