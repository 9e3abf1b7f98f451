"""The host's event bus: plugins and the host publish on named topics, subscribing plugins receive in order.

Events are persisted in the store's SQLite file (the bus's own tables), so a subscriber that is restarting
or rolling, or a host that restarts, loses nothing: each subscribing plugin has a stored cursor (the last
event it was given or that was dead-lettered for it) and one worker thread that hands it the matching events
after that cursor, oldest first, through the `Deliver` callback (the transport wires it to
PluginService.Deliver on a ready instance). Delivery is at least once: the cursor moves only after `deliver`
returns. `Undeliverable` from `deliver` (no ready instance, the instance refused) is retried with backoff for
as long as it lasts; any other exception is a handler failure, and after `max_attempts` of those on one
event it is dead-lettered so a poison event does not stop the subscriber. A subscriber more than
`backlog_limit` events behind has its oldest pending ones dead-lettered, and one `sysops.dead-letter` event
per such episode says so. A slow subscriber only ever holds its own worker. This module knows nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


#: Hands one event to a subscribing plugin; returns when it was handled. Raises `Undeliverable` when no
#: instance could take it (retried, not counted), anything else when the handler failed (counted).
Deliver = Callable[[str, BusEvent], None]


class Undeliverable(Exception):
    """The event did not reach a handler (no ready instance, the instance refused): retry without counting."""


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
    ) -> None:
        raise NotImplementedError

    def publish(self, topic: str, payload: Any, publisher: str) -> int:
        """Validate, persist and hand the event to the matching subscribers' workers; return its id.

        ValueError (one line) for a bad topic, a payload that is not JSON or over 64 KiB, or a `sysops.`
        topic from any publisher but "sysops".
        """
        raise NotImplementedError

    def subscribe(self, plugin: str, patterns: Sequence[str]) -> None:
        """Set `plugin`'s subscriptions (exact topics or prefixes `deploy.*`), replacing earlier ones.

        A new subscriber starts at the current end (no history); an existing one keeps its cursor. An empty
        `patterns` is `unsubscribe`. ValueError for a bad pattern.
        """
        raise NotImplementedError

    def unsubscribe(self, plugin: str) -> None:
        """Forget `plugin`'s subscriptions and cursor (the plugin is down) and stop its worker."""
        raise NotImplementedError

    def subscribers(self) -> dict[str, tuple[str, ...]]:
        """Every stored subscriber and its patterns (kept across host restarts, to prune plugins gone)."""
        raise NotImplementedError

    def pending(self, plugin: str) -> int:
        """How many matching events `plugin` has not been given yet (0 for a plugin not subscribed)."""
        raise NotImplementedError

    def dead_letters(self, plugin: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The latest `limit` dead letters (of one plugin or all), oldest first."""
        raise NotImplementedError

    def publish_lifecycle(self, plugin: str, kind: str, message: str) -> None:
        """Publish a core lifecycle event as `sysops.lifecycle` (for core.events.set_lifecycle_publisher)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start a worker for every stored subscriber, and the retention thread."""
        raise NotImplementedError

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the workers (each saves its cursor); a worker blocked in `deliver` is left to end by itself."""
        raise NotImplementedError
