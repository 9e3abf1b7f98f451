"""The one vocabulary of lifecycle events, and reading the event log as a (followed) stream.

Every place that records what happened to a plugin (rollout, reconciliation, `plugin down`, the fault
observation of `plugin status`) passes an `EventKind` from here, so `sysops events`, `plugin status`, the
control API and the docs (docs/cli.md#sysops-events) speak the same words. The kinds are the ADR-006
states (unloaded, loaded, active, stopping, failed) plus the transitions between or within them that a
user needs to tell apart (restarted, rolled, rolled-back, oom-killed, unresponsive, adopted, discarded,
recovered). The store keeps the kind as text; this module is the only source of its values. A host that
runs the event bus registers it with `set_lifecycle_publisher`, and every recorded event is then published
too (topic `sysops.lifecycle`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum

from sysops.core.lifecycle import PluginState
from sysops.safe_text import cap
from sysops.store import EventRecord, Store


class EventKind(StrEnum):
    """What a lifecycle event says happened (its value is what is stored and shown)."""

    UNLOADED = "unloaded"  # `plugin down` removed the plugin's instances
    LOADED = "loaded"  # an instance was started and is waiting for readiness
    ACTIVE = "active"  # a first install became ready and serves
    STOPPING = "stopping"  # `plugin down` took the plugin out of routing and drains it
    FAILED = "failed"  # a first install did not become ready, or the serving instance is gone or gave up
    RESTARTED = "restarted"  # the engine restarted a crashed instance (restart policy)
    ROLLED = "rolled"  # a new (or, by `plugin rollback`, an earlier) revision replaced the serving one
    ROLLED_BACK = "rolled-back"  # a roll failed before its switch; the previous version keeps serving
    OOM_KILLED = "oom-killed"  # the kernel killed an instance at its memory limit (OOMKilled)
    UNRESPONSIVE = "unresponsive"  # an instance runs but does not answer its health check
    ADOPTED = "adopted"  # a running instance the store had lost was verified and taken back into service
    DISCARDED = "discarded"  # a running instance failed that verification and was removed
    RECOVERED = "recovered"  # a serving revision whose history row a killed roll never wrote got it back
    REFUSED = "refused"  # the policy refused something a serving plugin asks (events.subscribe for subscriptions)


#: The lifecycle state each kind leaves the plugin in (None: the state does not change).
STATE_AFTER: dict[EventKind, PluginState | None] = {
    EventKind.UNLOADED: PluginState.UNLOADED,
    EventKind.LOADED: PluginState.LOADED,
    EventKind.ACTIVE: PluginState.ACTIVE,
    EventKind.STOPPING: PluginState.STOPPING,
    EventKind.FAILED: PluginState.FAILED,
    EventKind.RESTARTED: PluginState.ACTIVE,
    EventKind.ROLLED: PluginState.ACTIVE,
    EventKind.ROLLED_BACK: None,
    EventKind.OOM_KILLED: None,
    EventKind.UNRESPONSIVE: PluginState.LOADED,
    EventKind.ADOPTED: PluginState.ACTIVE,
    EventKind.DISCARDED: None,
    EventKind.RECOVERED: None,
    EventKind.REFUSED: None,
}
#: Width of the KIND column: the longest kind.
KIND_WIDTH = max(len(kind) for kind in EventKind)
#: How often a follower looks for new events, and how many it reads at once (its memory stays bounded).
FOLLOW_POLL_SECONDS = 0.25
BATCH = 500
#: Characters of a message stored: some quote a plugin (the last line of a failed start, a self-test's error).
MESSAGE_CAP = 2000

#: Publishes a recorded event on the event bus: (plugin, kind, message).
LifecyclePublisher = Callable[[str, str, str], None]
_lifecycle_publisher: LifecyclePublisher | None = None
_log = logging.getLogger(__name__)
_publisher_lock = threading.Lock()


def set_lifecycle_publisher(publisher: LifecyclePublisher | None) -> None:
    """Publish every event recorded from now on through `publisher` as well (None: stop publishing)."""
    global _lifecycle_publisher
    with _publisher_lock:
        _lifecycle_publisher = publisher


def clear_lifecycle_publisher(publisher: LifecyclePublisher) -> None:
    """Stop publishing through `publisher`, if it is still the one set (a host that stops must not unset the
    publisher of a host that started after it: tests run several in one process)."""
    global _lifecycle_publisher
    with _publisher_lock:
        if _lifecycle_publisher == publisher:
            _lifecycle_publisher = None


def record(store: Store, plugin: str, kind: EventKind, message: str) -> None:
    """Store one event of `plugin`, its message capped (the store keeps the last EVENTS_PER_PLUGIN of each,
    EVENTS_TOTAL in all), and publish it when a lifecycle publisher is registered (a failing publish is
    logged: it never fails the step that recorded the event)."""
    message = cap(message, MESSAGE_CAP)
    store.add_event(plugin, kind.value, message)
    publisher = _lifecycle_publisher
    if publisher is not None:
        try:
            publisher(plugin, kind.value, message)
        except Exception as exc:
            _log.warning("publishing lifecycle event %s of %s: %s", kind.value, plugin, exc)


def read_events(
    store: Store,
    plugin: str | None = None,
    *,
    after: int = 0,
    follow: bool = False,
    stop: threading.Event | None = None,
    poll_seconds: float = FOLLOW_POLL_SECONDS,
) -> Iterator[EventRecord]:
    """Stored events (of one plugin or all) with an id above `after`, oldest first; with `follow`, then
    every new one as it is stored, until `stop` is set (or forever). Reads BATCH at a time by id."""
    stop = stop or threading.Event()
    while not stop.is_set():
        batch = store.events_after(after, plugin, limit=BATCH)
        yield from batch
        if batch:
            after = batch[-1].id
        if len(batch) == BATCH:
            continue
        if not follow or stop.wait(poll_seconds):
            return
