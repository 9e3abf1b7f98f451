"""A configuration plugin: contributes the `backup` section to the system configuration and reads it back.

The section's keys and their types are the manifest's `configuration:` block; the values are the operator's
(`backup:` in $SYSOPS_HOME/config.yaml), checked by `sysops config validate` and shown by `sysops config show`.
"""

from __future__ import annotations

from typing import Any

from sysops_sdk import ConfigurationPlugin, plugin_command


class BackupSettingsPlugin(ConfigurationPlugin):
    name = "backup-settings"
    version = "1.0.0"
    description = "Owns the backup section of the system configuration"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("backup-settings", read_only=True)
    def settings(self) -> dict[str, Any]:
        """The backup section in effect (defaults filled in)."""
        return self.section()
