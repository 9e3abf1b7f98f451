"""Test helpers for plugin authors: run a plugin's commands in-process, without a container.

harness = PluginHarness(MyPlugin, services={"metrics": FakeMetrics()})
assert harness.invoke("greet", name="World").text == "Hello, World!"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sysops_sdk._plugin import Plugin
from sysops_sdk._server import InvocationOutcome, PluginRuntime, PluginServer

#: A real plugin server run in-process (the orchestrator's fake runtime driver serves plugins with it).
__all__ = ["InvocationResult", "PluginHarness", "PluginRuntime", "PluginServer"]


@dataclass
class InvocationResult:
    """What a command printed and returned, as the CLI would see it."""

    lines: list[str] = field(default_factory=list)
    text: str = ""
    data: Any = None
    exit_code: int = 0
    error: str = ""


class PluginHarness:
    """An initialized plugin whose commands can be invoked by name with keyword arguments."""

    def __init__(self, plugin_class: type[Plugin], services: Mapping[str, Any] | None = None) -> None:
        plugin = plugin_class(services=services)
        plugin.initialize()
        self.runtime = PluginRuntime(plugin)

    @property
    def plugin(self) -> Plugin:
        """The plugin instance under test."""
        return self.runtime.plugin

    def command_names(self) -> list[str]:
        """Names of all commands the plugin contributes."""
        return sorted(self.runtime.commands)

    def invoke(self, command: str, **arguments: Any) -> InvocationResult:
        """Run `command` with typed arguments and collect its output."""
        result = InvocationResult()
        for item in self.runtime.run(command, arguments):
            if isinstance(item, InvocationOutcome):
                result.text, result.exit_code, result.error = item.text, item.exit_code, item.error
                result.data = json.loads(item.data_json) if item.data_json else None
            else:
                result.lines.append(item)
        return result

    def close(self) -> None:
        """Run the plugin's cleanup()."""
        self.runtime.plugin.cleanup()
