"""Event subscriptions: `@on_event("topic")` handlers and the Event they receive.

Like the command decorators, `@on_event` only annotates a function (a plugin method or a module-level
function) and never wraps it. The plugin server collects the handlers: their topics become the plugin's
`subscriptions` in Describe (the host subscribes the plugin to them), and each event the host delivers runs
every handler whose pattern matches its topic. A pattern is a topic (`deploy.finished`), a prefix ending in
`.*` (`deploy.*` matches `deploy.finished` and `deploy.a.b`, not `deploy`), or `*` (every topic), as the
host's bus reads subscriptions.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sysops_sdk._commands import CommandDefinitionError

F = TypeVar("F", bound=Callable[..., Any])

_TOPICS_ATTR = "__sysops_topics__"
_TOPIC = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")

#: Module-level functions decorated with @on_event, in definition order.
_registry: list[Callable[..., Any]] = []


@dataclass(frozen=True)
class Event:
    """One event delivered to a handler."""

    id: int
    topic: str
    payload: Any
    publisher: str  # "plugin:NAME", "operator" or "sysops"
    time: float  # Unix time the host stored it


@dataclass(frozen=True)
class EventHandler:
    """A handler and the topic pattern it subscribed with."""

    pattern: str
    function: Callable[[Event], object]

    def matches(self, topic: str) -> bool:
        """Whether an event of `topic` goes to this handler."""
        return topic_matches(self.pattern, topic)


def topic_matches(pattern: str, topic: str) -> bool:
    """Exact topic, `prefix.*` for every topic under `prefix.`, or `*` for every topic."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


def on_event(topic: str) -> Callable[[F], F]:
    """Run the decorated function (it takes one Event) for each event on `topic` (or `prefix.*`, or `*`).

    Stack it to subscribe one function to several topics. The plugin needs the `events.subscribe` grant.
    """
    if topic != "*" and not _TOPIC.fullmatch(topic.removesuffix(".*")):
        raise CommandDefinitionError(
            f"invalid event topic {topic!r}: use lowercase letters, digits, '.', '_', '-' (at most 128), "
            "optionally ending in '.*' for every topic under a prefix, or '*' for every topic"
        )

    def decorate(function: F) -> F:
        existing: list[str] = list(getattr(function, _TOPICS_ATTR, []))
        setattr(function, _TOPICS_ATTR, [topic, *existing])
        if not existing and ("." not in function.__qualname__ or "<locals>" in function.__qualname__):
            _registry.append(function)
        return function

    return decorate


def collect_handlers(plugin: object) -> list[EventHandler]:
    """The handlers of a plugin: its decorated methods in definition order, then module-level functions."""
    handlers: list[EventHandler] = []
    seen: set[int] = set()
    names = dict.fromkeys(name for cls in reversed(type(plugin).__mro__) for name in vars(cls))
    for name in names:
        raw = inspect.getattr_static(type(plugin), name, None)
        function = getattr(raw, "__func__", raw)
        if callable(function) and hasattr(function, _TOPICS_ATTR):
            seen.add(id(function))
            bound = getattr(plugin, name)
            handlers.extend(EventHandler(topic, bound) for topic in getattr(function, _TOPICS_ATTR))
    for function in _registry:
        if id(function) not in seen:
            handlers.extend(EventHandler(topic, function) for topic in getattr(function, _TOPICS_ATTR))
    return handlers


def subscriptions(handlers: list[EventHandler]) -> list[str]:
    """The sorted, unique topic patterns of `handlers` (PluginDescriptor.subscriptions)."""
    return sorted({handler.pattern for handler in handlers})
