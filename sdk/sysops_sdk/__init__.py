"""sysops plugin SDK: write a plugin class, decorate its commands, and the plugin server does the rest.

The public surface is exactly `__all__` (plus the typed host-service clients in `sysops_sdk.services` and
the test helpers in `sysops_sdk.testing`); everything in underscored modules may change without notice.
"""

import sysops_sdk._deferred_imports  # noqa: F401  (first: in a plugin process, defers asyncio before grpc comes)

# isort: split
from sysops_sdk._cancel import CommandCancelled, cancel_event, cancelled
from sysops_sdk._commands import CommandDefinitionError, argument, option, plugin_command, requires_permission
from sysops_sdk._errors import HostUnavailableError, PermissionDeniedError, ServiceCallError, ServiceUnavailableError
from sysops_sdk._events import Event, on_event
from sysops_sdk._plugin import Plugin
from sysops_sdk._types import CommandPlugin, ConfigurationPlugin, EventPlugin, IntegrationPlugin, ServicePlugin
from sysops_sdk._version import PROTOCOL_VERSION, SDK_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "SDK_VERSION",
    "CommandCancelled",
    "CommandDefinitionError",
    "CommandPlugin",
    "ConfigurationPlugin",
    "Event",
    "EventPlugin",
    "HostUnavailableError",
    "IntegrationPlugin",
    "PermissionDeniedError",
    "Plugin",
    "ServiceCallError",
    "ServicePlugin",
    "ServiceUnavailableError",
    "argument",
    "cancel_event",
    "cancelled",
    "on_event",
    "option",
    "plugin_command",
    "requires_permission",
]
