"""One error root for everything sysops reports to a user, with stable exit codes.

Every error carries a one-line message that names the file, key or plugin concerned and what to do;
the CLI prints it without a traceback and exits with the error's code. Codes are part of the CLI's
contract (docs/cli.md) and never change meaning.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `sysops` CLI."""

    OK = 0
    COMMAND_FAILED = 1  # the plugin's command raised or returned a failure
    USAGE = 2  # bad command line: unknown command, missing argument, bad option value
    PLUGIN_UNAVAILABLE = 3  # no ready instance serves the command, or it died mid-call
    INVALID_PLUGIN = 4  # plugin.yaml, entrypoint or command declarations are wrong
    ENGINE_UNAVAILABLE = 5  # the engine, cluster or server cannot be reached, or a server's TLS is unverified
    START_FAILED = 6  # the plugin did not become ready (crashed, initialize() failed, timed out)
    CONFLICT = 7  # a command name conflict, or a plugin dependency or conflict that cannot be met
    NOT_FOUND = 8  # no such plugin or revision
    POLICY_DENIED = 9  # limits or permissions refused by the operator's policy
    DEADLINE_EXCEEDED = 10  # a routed command did not finish within its deadline (cancelled in the plugin)
    INTERRUPTED = 130


class SysopsError(Exception):
    """Base of all errors shown to users.

    `str(error)` is the one-line message with its hint (what to do); `details` is an optional block
    (such as a plugin's last log lines) printed below it.
    """

    exit_code: ExitCode = ExitCode.COMMAND_FAILED
    retryable: bool = False

    def __init__(self, message: str, *, hint: str = "", details: str = "") -> None:
        self.message = message
        self.hint = hint
        self.details = details
        super().__init__(f"{message}; {hint}" if hint else message)


class UsageError(SysopsError):
    """The command line is wrong."""

    exit_code = ExitCode.USAGE


class ManifestError(SysopsError):
    """A plugin.yaml is missing or invalid."""

    exit_code = ExitCode.INVALID_PLUGIN


class PluginDefinitionError(SysopsError):
    """A plugin's code cannot be loaded (entrypoint, command declarations)."""

    exit_code = ExitCode.INVALID_PLUGIN


class BuildError(SysopsError):
    """A plugin image could not be built."""

    exit_code = ExitCode.INVALID_PLUGIN


class EngineUnavailableError(SysopsError):
    """The container engine cannot be reached."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE
    retryable = True


class ServerUnverifiedError(SysopsError):
    """A sysops server's TLS certificate was not verified (wrong CA or name, or no TLS): nothing was sent to it."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE


class RuntimeOperationError(SysopsError):
    """The engine refused or failed an operation on a container, image or volume."""

    exit_code = ExitCode.START_FAILED


class StartFailedError(SysopsError):
    """A plugin instance did not become ready."""

    exit_code = ExitCode.START_FAILED


class PluginUnavailableError(SysopsError):
    """No ready instance can serve a call."""

    exit_code = ExitCode.PLUGIN_UNAVAILABLE
    retryable = True


class CommandConflictError(SysopsError):
    """Two plugins claim the same command, or a plugin conflicts with another."""

    exit_code = ExitCode.CONFLICT


class DependencyError(SysopsError):
    """A plugin's requirements cannot be met, a conflict forbids it, or others still require it (the chain named)."""

    exit_code = ExitCode.CONFLICT


class NotFoundError(SysopsError):
    """No such plugin, command or revision."""

    exit_code = ExitCode.NOT_FOUND


class ProtocolMismatchError(SysopsError):
    """A plugin speaks an incompatible protocol version."""

    exit_code = ExitCode.INVALID_PLUGIN


class PolicyDeniedError(SysopsError):
    """The operator's policy refuses what a plugin asks for (limits above a cap, an egress allow-list)."""

    exit_code = ExitCode.POLICY_DENIED


class DeadlineExceededError(SysopsError):
    """A routed command did not finish within its deadline; the call was cancelled in the plugin."""

    exit_code = ExitCode.DEADLINE_EXCEEDED


class CallInterruptedError(SysopsError):
    """The user interrupted a routed command (Ctrl-C); the call was cancelled in the plugin."""

    exit_code = ExitCode.INTERRUPTED


class CommandFailedError(SysopsError):
    """A plugin command reported a failure."""

    exit_code = ExitCode.COMMAND_FAILED


def command_failure(message: str, plugin_exit_code: int) -> SysopsError:
    """The error of a plugin command that failed with `plugin_exit_code`: exit 9 when the plugin's server said
    a permission was missing (a grant the host services or `@requires_permission` need, as when the host
    refuses), else exit 1, whatever other code the plugin reported."""
    if plugin_exit_code == ExitCode.POLICY_DENIED:
        return PolicyDeniedError(message)
    return CommandFailedError(message)
