"""The five plugin types of ADR-006 as base classes: what each type adds to the general `Plugin`.

- `CommandPlugin`: commands only, exactly as `Plugin` (the type named, for readers of the code).
- `ServicePlugin`: a long-running loop, `run()`, that the plugin server starts in a thread once the plugin is
  initialized and serving; `self.stopping` is set when the instance shuts down, so the loop ends with
  `while not self.stopping.wait(interval): ...`. What happens when the loop ends is the manifest's
  `service.restart` (see `_service.py`).
- `IntegrationPlugin`: `self.secret(name)` reads a secret the operator gives by reference (policy
  `plugins.NAME.secrets`), through the host's `secrets` service; only names the manifest's `secrets:` lists.
- `ConfigurationPlugin`: `self.section()` is the plugin's own section of the system configuration.
- `EventPlugin`: subscriptions only: at least one `@on_event` handler and no commands (`check_event_plugin`,
  run when the plugin server collects them; a decorated method is refused already when the class is made).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from sysops_sdk._commands import CommandDefinitionError, has_command_marker
from sysops_sdk._events import EventHandler
from sysops_sdk._plugin import Plugin

__all__ = [
    "TYPES_ENV",
    "CommandPlugin",
    "ConfigurationPlugin",
    "EventPlugin",
    "IntegrationPlugin",
    "ServicePlugin",
    "check_declared_types",
    "check_event_plugin",
]

#: The manifest's `types`, comma-separated, as the orchestrator gives them to every instance.
TYPES_ENV = "SYSOPS_PLUGIN_TYPES"


class CommandPlugin(Plugin):
    """A plugin that contributes commands (`@plugin_command`): the general `Plugin`, named by its type."""


class ServicePlugin(Plugin):
    """A plugin with a long-running loop: implement `run()`; return from it once `self.stopping` is set."""

    def __init__(self, services: Mapping[str, Any] | None = None) -> None:
        super().__init__(services)
        #: Set when the instance shuts down (drain, reload, `plugin down`): the loop should return soon.
        self.stopping = threading.Event()

    @abstractmethod
    def run(self) -> None:
        """The service's loop, run in its own thread after `initialize()`.

        Raising (restart policy on-failure or always) or returning (always) restarts the instance; with
        `never` the instance keeps serving its commands and `plugin status` shows the service stopped.
        """


class IntegrationPlugin(Plugin):
    """A plugin that talks to an external system, with the secrets the operator gives it by reference."""

    def secret(self, name: str) -> str:
        """The secret `name` (listed in the manifest's `secrets:`), read by the host when asked; never cache
        it in state, logs or events. Raises PermissionDeniedError when the manifest or the policy lacks it."""
        return str(self.get_service("secrets").get(name))


class ConfigurationPlugin(Plugin):
    """A plugin that contributes a section (its manifest's `configuration:` block) to the system configuration."""

    def section(self) -> dict[str, Any]:
        """This plugin's section of the system configuration: its keys with their values and defaults."""
        return dict(self.get_service("config").section())


class EventPlugin(Plugin):
    """A plugin that only reacts to events: at least one `@on_event` handler, no commands."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands = sorted(name for name, value in vars(cls).items() if has_command_marker(value))
        if commands:
            raise CommandDefinitionError(
                f"event plugin {cls.__qualname__} has commands ({', '.join(commands)}): an EventPlugin only "
                "handles events; subclass Plugin (or CommandPlugin) for commands"
            )


def check_event_plugin(plugin: Plugin, commands: Sequence[str], handlers: Sequence[EventHandler]) -> None:
    """Refuse an EventPlugin that has commands (module-level ones too) or no `@on_event` handler."""
    if not isinstance(plugin, EventPlugin):
        return
    if commands:
        raise CommandDefinitionError(
            f"event plugin {type(plugin).__qualname__} has commands ({', '.join(sorted(commands))}): an EventPlugin "
            "only handles events"
        )
    if not handlers:
        raise CommandDefinitionError(
            f"event plugin {type(plugin).__qualname__} has no @on_event handler: it would never run"
        )


def check_declared_types(plugin: Plugin, declared: str | None) -> None:
    """Refuse a plugin class whose type the manifest's `types` (`declared`, from TYPES_ENV) does not list, and a
    manifest that says `service` for a class without a `run()` loop: the orchestrator acts on the manifest, the
    plugin server on the class, and the two must agree. No `declared` (a plugin run outside sysops): no check."""
    if declared is None:
        return
    types = {kind.strip() for kind in declared.split(",") if kind.strip()}
    listed = ", ".join(sorted(types)) or "nothing"
    for base, kind in _TYPE_OF_CLASS:
        if isinstance(plugin, base) and kind not in types:
            raise CommandDefinitionError(
                f"plugin class {type(plugin).__qualname__} is a {base.__name__}, but plugin.yaml's types lists "
                f"{listed}: add '{kind}' to types"
            )
    if "service" in types and not isinstance(plugin, ServicePlugin):
        raise CommandDefinitionError(
            f"plugin.yaml's types lists 'service', but {type(plugin).__qualname__} is no ServicePlugin (it has no "
            "run() loop): subclass ServicePlugin, or remove 'service' from types"
        )


_TYPE_OF_CLASS: tuple[tuple[type[Plugin], str], ...] = (
    (ServicePlugin, "service"),
    (IntegrationPlugin, "integration"),
    (ConfigurationPlugin, "configuration"),
    (EventPlugin, "event"),
)
