"""The vocabulary of a host service call: who calls (`Caller`) and how a call fails (`ServiceCallError`).

Kept apart from dispatch.py so every service uses them without importing the dispatcher. The error is a
SysopsError too, so the control API and the CLI (`sysops plugin config NAME set ...`) show it as any
other error, with an exit code that matches its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sysops.errors import ExitCode, SysopsError

#: What a dispatcher's `cached_call` returns for a call it cannot answer from memory (then `call` runs it).
NOT_CACHED: Any = object()
#: The (service, method) pairs `cached_call` may answer; the transport decodes nothing else on its event loop.
ANSWERED_FROM_MEMORY = frozenset({("state", "get")})


@dataclass(frozen=True)
class Caller:
    """Who calls a host service: the plugin and instance the transport identified (socket and token)."""

    plugin: str
    instance_id: str
    revision: int


ErrorCode = Literal["permission_denied", "not_found", "invalid_argument", "resource_exhausted", "unavailable"]

_EXIT_CODES: dict[str, ExitCode] = {
    "permission_denied": ExitCode.POLICY_DENIED,
    "not_found": ExitCode.NOT_FOUND,
    "invalid_argument": ExitCode.USAGE,
    "resource_exhausted": ExitCode.POLICY_DENIED,
    "unavailable": ExitCode.PLUGIN_UNAVAILABLE,
}


class ServiceCallError(SysopsError):
    """A refused or failed host service call: `code` (PERMISSION_DENIED, NOT_FOUND, ...) and a one-line message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.code: ErrorCode = code
        self.exit_code = _EXIT_CODES[code]
        self.retryable = code == "unavailable"
