"""The host's event bus: plugins and the host publish on named topics, subscribing plugins receive in order.

Events are persisted in the store's SQLite file (the bus's own tables, services/bus_log.py), so a subscriber
that is restarting or rolling, or a host that restarts, loses nothing: each subscribing plugin has a stored
cursor (the last event it was given or that was dead-lettered for it) and one worker thread
(services/bus_delivery.py) that hands it the matching events after that cursor, oldest first, through the
`Deliver` callback (the transport wires it to PluginService.Deliver on a ready instance). Delivery is at
least once: the cursor moves only after `deliver` returns. `Undeliverable` from `deliver` (no ready
instance, the instance refused) is retried with backoff for as long as it lasts; any other exception is a
handler failure, and after `max_attempts` of those on one event it is dead-lettered so a poison event does
not stop the subscriber. A subscriber more than `backlog_limit` events behind has its oldest pending ones
dead-lettered (down to 90% of the limit), and one `sysops.dead-letter` event per such episode says so. A
slow subscriber only ever holds its own worker. Retention deletes the events every subscriber has passed
and keeps at most `retained_events` events and `retained_bytes` characters of payload JSON: a subscriber
stuck in its handler holds back its cursor, so the events of every other topic stayed stored behind it (a
publisher could fill 100,000 x 64 KiB of disk). This module knows nothing of gRPC.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sysops.core.names import shown
from sysops.services.bus_delivery import Deliver, DeliveryPolicy, Subscriber, Undeliverable, Wiring
from sysops.services.bus_log import BusEvent, BusLog, DeadLetter, DeadLetterRun, Patterns
from sysops.services.call import ServiceCallError
from sysops.services.limits import TOPIC, check_payload, check_topic

__all__ = [
    "DEAD_LETTER_TOPIC",
    "HOST_PUBLISHER",
    "LIFECYCLE_TOPIC",
    "BusEvent",
    "BusInputError",
    "DeadLetter",
    "Deliver",
    "EventBus",
    "Undeliverable",
    "parse_patterns",
]

#: The publisher name of the host's own events; the only one allowed on `sysops.` topics.
HOST_PUBLISHER = "sysops"
LIFECYCLE_TOPIC = "sysops.lifecycle"
DEAD_LETTER_TOPIC = "sysops.dead-letter"
#: Events kept at most (a subscriber further behind has the older ones dead-lettered), and dead letters.
RETAINED_EVENTS = 100_000
RETAINED_DEAD_LETTERS = 10_000
#: Characters of payload JSON kept at most in stored events (a subscriber further behind: as above).
RETAINED_BYTES = 256 * 1024 * 1024
#: How often retention runs.
RETENTION_SECONDS = 1.0
#: Topics whose subscribers publish remembers (forgotten all at once beyond it, and when subscriptions change).
RECEIVERS_CACHED = 1024
#: Subscription patterns one plugin may have.
MAX_PATTERNS = 64

_log = logging.getLogger(__name__)


class BusInputError(ServiceCallError, ValueError):
    """A publish or subscription the bus refuses: one line, and the code the transport answers with."""


def parse_patterns(plugin: str, patterns: Sequence[str]) -> Patterns:
    """`patterns` checked: each an exact topic, a prefix `deploy.*`, or `*` (everything)."""
    if isinstance(patterns, str) or len(patterns) > MAX_PATTERNS:
        raise BusInputError("invalid_argument", f"plugin {shown(plugin)}: at most {MAX_PATTERNS} subscriptions")
    for pattern in patterns:
        topic = pattern[:-2] if isinstance(pattern, str) and pattern.endswith(".*") else pattern
        if pattern != "*" and not (isinstance(topic, str) and TOPIC.fullmatch(topic)):
            raise BusInputError(
                "invalid_argument",
                f"plugin {shown(plugin)}: subscription {shown(pattern)} must be a topic like 'deploy.done', "
                "a prefix like 'deploy.*', or '*'",
            )
    return Patterns(sorted(set(patterns)))


class EventBus:
    """Persisted publish/subscribe between plugins and the host (see the module docstring)."""

    def __init__(
        self,
        store_path: Path,
        deliver: Deliver,
        *,
        backlog_limit: int = 1000,
        max_attempts: int = 5,
        retry_seconds: float = 0.2,
        retained_events: int = RETAINED_EVENTS,
        retention_seconds: float = RETENTION_SECONDS,
        retained_bytes: int = RETAINED_BYTES,
    ) -> None:
        if backlog_limit < 2 or max_attempts < 1 or retry_seconds <= 0 or retained_events < 1:
            raise ValueError(
                "event bus: backlog_limit >= 2, max_attempts >= 1, retry_seconds > 0, retained_events >= 1"
            )
        self._log = BusLog(store_path)
        self._policy = DeliveryPolicy(max_attempts, retry_seconds, backlog_limit)
        #: Every event up to this id is stored and handed to its subscribers (it moves under `_lock`).
        self._latest = self._log.last_id()
        self._wiring = Wiring(self._log, deliver, self._policy, self._published_up_to)
        self._retained_events = retained_events
        self._retention_seconds = retention_seconds
        self._retained_bytes = retained_bytes
        #: (id, payload characters) of the stored events, oldest first, and their sum (both under `_lock`).
        self._sizes = deque(self._log.payload_sizes())
        self._stored_bytes = sum(size for _, size in self._sizes)
        #: Held while an event is stored and counted, and while the subscriber set changes, so a new
        #: subscriber's cursor and pending count agree with what was published.
        self._lock = threading.Lock()
        self._subscribers: dict[str, Subscriber] = {}
        self._receivers: dict[str, tuple[Subscriber, ...]] = {}
        self._started = False
        self._stopping = threading.Event()
        self._retention: threading.Thread | None = None
        for plugin, (patterns, cursor) in self._log.subscribers().items():
            self._subscribers[plugin] = self._subscriber(plugin, patterns, cursor)

    def _subscriber(self, plugin: str, patterns: Patterns, cursor: int) -> Subscriber:
        pending = self._log.count_after(cursor, patterns)
        return Subscriber(plugin, patterns, cursor, pending, self._wiring)

    def _published_up_to(self) -> int:
        return self._latest

    def publish(self, topic: str, payload: Any, publisher: str) -> int:
        """Validate, persist and hand the event to the matching subscribers' workers; return its id.

        BusInputError (a ValueError, one line) for a bad topic, a payload that is not JSON or over 64 KiB, or
        a `sysops.` topic from any publisher but "sysops".
        """
        if not isinstance(publisher, str) or not publisher:
            raise BusInputError("invalid_argument", f"publisher {shown(publisher)} must be a non-empty name")
        try:
            check_topic(topic, by_host=publisher == HOST_PUBLISHER)
            payload_json = check_payload(payload)
        except ServiceCallError as exc:
            raise BusInputError(exc.code, exc.message) from None
        event_time = time.time()
        decoded = json.loads(payload_json)  # the subscribers' own copy, shared by them
        with self._lock:
            event_id = self._log.append(topic, payload_json, publisher, event_time)
            self._sizes.append((event_id, len(payload_json)))
            self._stored_bytes += len(payload_json)
            event = BusEvent(event_id, topic, decoded, publisher, event_time)
            overflowing = [
                subscriber
                for subscriber in self._receivers_of(topic)
                if subscriber.published(event) > self._policy.backlog_limit
            ]
            self._latest = event_id
        reason = f"backlog over {self._policy.backlog_limit} pending events"
        for subscriber in overflowing:
            self._announce(subscriber.plugin, subscriber.cut_backlog(reason), reason)
        return event_id

    def _receivers_of(self, topic: str) -> tuple[Subscriber, ...]:
        """The subscribers whose patterns match `topic` (under `_lock`; remembered until subscriptions change)."""
        receivers = self._receivers.get(topic)
        if receivers is None:
            if len(self._receivers) >= RECEIVERS_CACHED:
                self._receivers.clear()
            subscribers = self._subscribers.values()
            receivers = self._receivers[topic] = tuple(each for each in subscribers if each.patterns.matches(topic))
        return receivers

    def _announce(self, plugin: str, run: DeadLetterRun | None, reason: str) -> None:
        """Publish the sysops.dead-letter event of an overflow episode that just started (None: nothing to say)."""
        if run is None:
            return
        payload = {
            "plugin": plugin,
            "count": run.count,
            "first_id": run.first_id,
            "last_id": run.last_id,
            "reason": reason,
            "topics": list(run.topics),
        }
        try:
            self.publish(DEAD_LETTER_TOPIC, payload, HOST_PUBLISHER)
        except sqlite3.Error as exc:  # the dead letters are stored; only the announcement is lost
            _log.warning("event bus: announcing %d dead letters of %s: %s", run.count, plugin, exc)

    def publish_lifecycle(self, plugin: str, kind: str, message: str) -> None:
        """Publish a core lifecycle event as `sysops.lifecycle` (for core.events.set_lifecycle_publisher)."""
        self.publish(LIFECYCLE_TOPIC, {"plugin": plugin, "kind": kind, "message": message}, HOST_PUBLISHER)

    def subscribe(self, plugin: str, patterns: Sequence[str]) -> None:
        """Set `plugin`'s subscriptions (exact topics, prefixes `deploy.*`, or `*`), replacing earlier ones.

        A new subscriber starts at the current end (no history); an existing one keeps its cursor. An empty
        `patterns` is `unsubscribe`. BusInputError (a ValueError) for a bad pattern.
        """
        if not patterns:
            self.unsubscribe(plugin)
            return
        parsed = parse_patterns(plugin, patterns)
        with self._lock:
            cursor = self._log.save_subscriber(plugin, parsed)
            self._receivers.clear()
            existing = self._subscribers.get(plugin)
            if existing is not None:
                existing.resubscribed(parsed, self._log.count_after)
                return
            subscriber = self._subscribers[plugin] = self._subscriber(plugin, parsed, cursor)
            if self._started:
                subscriber.start()

    def unsubscribe(self, plugin: str) -> None:
        """Forget `plugin`'s subscriptions and cursor (the plugin is down) and stop its worker."""
        with self._lock:
            subscriber = self._subscribers.pop(plugin, None)
            self._receivers.clear()
            self._log.delete_subscriber(plugin)
        if subscriber is not None:
            subscriber.stop()

    def subscribers(self) -> dict[str, tuple[str, ...]]:
        """Every subscriber and its patterns (kept across host restarts: the host prunes plugins gone)."""
        with self._lock:
            return {plugin: subscriber.patterns.patterns for plugin, subscriber in sorted(self._subscribers.items())}

    def pending(self, plugin: str) -> int:
        """How many matching events `plugin` has not been given yet (0 for a plugin not subscribed)."""
        subscriber = self._subscribers.get(plugin)
        if subscriber is None:
            return 0
        with subscriber.lock:  # (below 0 for a moment when a worker passes an event before it is counted)
            return max(0, subscriber.pending)

    def dead_letters(self, plugin: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The latest `limit` dead letters (of one plugin or all), oldest first."""
        return self._log.dead_letters(plugin, limit)

    def retain(self) -> None:
        """Delete the events every subscriber has passed; keep at most `retained_events` and `retained_bytes` (a
        subscriber still behind the cut has those dead-lettered first). Runs every `retention_seconds` after
        `start`."""
        with self._lock:
            by_bytes = self._cut_for_bytes()
        cut = max(self._latest - self._retained_events, by_bytes)
        if cut > 0:
            reason = (
                f"more than {self._retained_events} events behind"
                if cut > by_bytes
                else f"behind more than the {self._retained_bytes} characters of events the host keeps"
            )
            with self._lock:
                subscribers = list(self._subscribers.values())
            for subscriber in subscribers:
                self._announce(subscriber.plugin, subscriber.cut_before(cut, reason), reason)
        gone = self._log.retain(cut, RETAINED_DEAD_LETTERS)
        with self._lock:
            while self._sizes and self._sizes[0][0] <= gone:
                self._stored_bytes -= self._sizes.popleft()[1]

    def _cut_for_bytes(self) -> int:
        """The id up to which stored events must go for the rest to hold `retained_bytes` (0: none; under `_lock`)."""
        excess, cut = self._stored_bytes - self._retained_bytes, 0
        for event_id, size in self._sizes:
            if excess <= 0:
                break
            excess -= size
            cut = event_id
        return cut

    def _retain_periodically(self) -> None:
        while not self._stopping.wait(self._retention_seconds):
            try:
                self.retain()
            except sqlite3.Error as exc:
                _log.warning("event bus: retention: %s", exc)

    def start(self) -> None:
        """Start a worker for every subscriber (stored ones included), and the retention thread."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stopping.clear()
            for subscriber in self._subscribers.values():
                subscriber.start()
        self._retention = threading.Thread(target=self._retain_periodically, name="sysops-bus-retention", daemon=True)
        self._retention.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the workers (each saves its cursor) within `timeout`; a worker blocked in `deliver` is left to
        end by itself (it delivers nothing more)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._started = False
            subscribers = list(self._subscribers.values())
            self._subscribers.clear()
            self._receivers.clear()
        self._stopping.set()
        for subscriber in subscribers:
            subscriber.stop()
        for subscriber in subscribers:
            subscriber.join(max(0.0, deadline - time.monotonic()))
        if self._retention is not None:
            self._retention.join(max(0.0, deadline - time.monotonic()))
        self._log.close()
