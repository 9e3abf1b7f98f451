"""Uses `state` and `config` through get_service, and has a command guarded by @requires_permission."""

from __future__ import annotations

from typing import Any

from sysops_sdk import Plugin, argument, plugin_command, requires_permission

#: Which build of the plugin serves (the test rewrites it before a reload).
MARK = "A"


class KeeperPlugin(Plugin):
    name = "keeper"
    version = "1.0.0"
    description = "Keeps state through the host services"

    def initialize(self) -> None:
        self.state: Any = None

    def cleanup(self) -> None:
        pass

    @plugin_command("remember")
    @argument("key", help="Key")
    @argument("value", help="Value")
    def remember(self, key: str, value: str) -> str:
        return f"version {self.get_service('state').set(key, value)}"

    @plugin_command("recall")
    @argument("key", help="Key")
    def recall(self, key: str) -> str:
        return f"{MARK}:{self.get_service('state').get(key, '(none)')}"

    @plugin_command("peek-config")
    def peek_config(self) -> str:
        return str(self.get_service("config").get("anything"))

    @plugin_command("guarded")
    @requires_permission("deploy.run")
    def guarded(self) -> str:
        self.get_service("state").set("guarded-ran", "yes")
        return "deployed"
