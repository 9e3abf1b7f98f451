"""A configuration plugin that shows the section it owns, as the host merges it (file values and defaults)."""

from __future__ import annotations

import json

from sysops_sdk import ConfigurationPlugin, plugin_command


class BackupConfigPlugin(ConfigurationPlugin):
    name = "backup-config"
    version = "1.0.0"
    description = "Owns the 'backup' section of the system configuration"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("backup-settings")
    def backup_settings(self) -> str:
        return json.dumps(self.section(), sort_keys=True)
