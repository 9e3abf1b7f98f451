"""sysops plugin SDK: write a plugin class, decorate its commands, and the plugin server does the rest.

The public surface is exactly `__all__`; everything in underscored modules may change without notice.
"""

from sysops_sdk._cancel import CommandCancelled, cancel_event, cancelled
from sysops_sdk._commands import CommandDefinitionError, argument, option, plugin_command, requires_permission
from sysops_sdk._plugin import Plugin, ServiceUnavailableError
from sysops_sdk._version import PROTOCOL_VERSION, SDK_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "SDK_VERSION",
    "CommandCancelled",
    "CommandDefinitionError",
    "Plugin",
    "ServiceUnavailableError",
    "argument",
    "cancel_event",
    "cancelled",
    "option",
    "plugin_command",
    "requires_permission",
]
