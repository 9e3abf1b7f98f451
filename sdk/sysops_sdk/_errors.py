"""The exceptions a plugin sees when it uses host services, in one place so every module raises the same ones.

They are public through `sysops_sdk`; each message is one line that names the service and method involved.
"""

from __future__ import annotations


class ServiceUnavailableError(LookupError):
    """A plugin asked for a host service (or method) that this orchestrator does not provide to it."""


class HostUnavailableError(ServiceUnavailableError):
    """The sysops host did not answer a service call within its deadline (down, or not started yet)."""


class PermissionDeniedError(Exception):
    """The host refused a service call because policy does not grant this plugin the permission it needs."""


class ServiceCallError(ValueError):
    """The host refused a service call's arguments (invalid, or over a limit such as a quota)."""
