"""How long a routed command may run, and why it did not finish in time.

Every routed call carries a gRPC deadline, so both ends know it: the caller gives up and the plugin cancels
the handler (sysops_sdk/_cancel.py). The deadline is, by precedence:

1. `commands.<name>.timeout_seconds` in the plugin's manifest (the rollout writes it into the stored
   CommandSpec, core/rollout.py);
2. `@plugin_command(..., timeout=N)` in the plugin's code (the CommandSpec's `timeout_seconds`);
3. `$SYSOPS_COMMAND_TIMEOUT` of the process that routes the call (the CLI, or `sysops serve`);
4. DEFAULT_TIMEOUT_SECONDS.

When it expires, `deadline_error` asks the engine about the instance (only then: this module is on the
hot path of `sysops <command>`) and names the cause in one line: it died (OOMKilled, exit code), or it
is alive and did not answer in time (its health, and how often its pids limit refused a thread).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sysops.errors import DeadlineExceededError, ManifestError, UsageError

if TYPE_CHECKING:
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

    from sysops.core.manifest import Manifest

#: Deadline of a routed command that declares none, in seconds (`SYSOPS_COMMAND_TIMEOUT` overrides it).
DEFAULT_TIMEOUT_SECONDS = 60.0
TIMEOUT_ENV = "SYSOPS_COMMAND_TIMEOUT"
#: Largest deadline anywhere: one day (the SDK and the manifest refuse more).
MAX_TIMEOUT_SECONDS = 86_400.0
#: How long the health check of an instance that overran its deadline may take.
HEALTH_PROBE_SECONDS = 1.0


def default_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """The deadline of a command that declares none: `$SYSOPS_COMMAND_TIMEOUT`, else 60 s."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_SECONDS):
        raise UsageError(
            f"{TIMEOUT_ENV}={text[:40]!r} is not a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}",
            hint=f"unset it for the default of {DEFAULT_TIMEOUT_SECONDS:g}s, or set e.g. {TIMEOUT_ENV}=120",
        )
    return value


def command_timeout(declared: float, environ: Mapping[str, str] = os.environ) -> float:
    """The deadline of a command whose stored CommandSpec says `declared` seconds (0: it declares none)."""
    if math.isfinite(declared) and 0 < declared <= MAX_TIMEOUT_SECONDS:
        return declared
    return default_timeout(environ)


def stored_routes(manifest: Manifest, descriptor: pb.PluginDescriptor) -> dict[str, bytes]:
    """The CommandSpecs to store for an instance's commands, with the manifest's `commands` settings applied.

    A manifest that names a command the plugin does not have is refused (a typo would silently keep the
    default deadline). So is a command declaring a word the shell would misread (core/command_rules.py).
    """
    from sysops.core.command_rules import check_commands

    check_commands(manifest.name, descriptor)
    specs = {command.name: command for command in descriptor.commands}
    unknown = sorted(set(manifest.commands) - set(specs))
    if unknown:
        raise ManifestError(
            f"plugin {manifest.name!r}: plugin.yaml key 'commands.{unknown[0]}' names no command of the plugin "
            f"(it has: {', '.join(sorted(specs)) or 'none'})",
            hint="fix the command name in plugin.yaml",
        )
    for name, settings in manifest.commands.items():
        if settings.timeout_seconds is not None:
            specs[name].timeout_seconds = settings.timeout_seconds
    return {name: spec.SerializeToString() for name, spec in specs.items()}


def describe_overrun(timeout: float, fault: str | None, health: str, pids: tuple[int, int] | None) -> str:
    """The cause of an overrun as the engine and the instance tell it; pure, for tests."""
    if fault:
        return f"the instance {fault}"
    cause = f"did not answer within {timeout:g}s (health: {health}"
    if pids is not None and pids[0] > 0:
        cause += f"; pids limit {pids[1]} hit {pids[0]} time{'s' * (pids[0] != 1)} since it started"
    return cause + ")"


def deadline_error(plugin: str, command: str, endpoint: str, token: str, timeout: float, since: float) -> Exception:
    """The one-line error of a call that overran its deadline, naming what the instance is going through."""
    from sysops.core.client import PluginClient

    fault: str | None = None
    pids: tuple[int, int] | None = None
    if endpoint.startswith("unix://"):
        from sysops.runtime.faults import describe_instance_failure, pids_limit_hits

        fault = describe_instance_failure(endpoint, since, wait=0.3)
        pids = None if fault else pids_limit_hits(endpoint)
    health = ""
    if not fault:
        with PluginClient(endpoint, plugin, token) as client:
            health = client.health(timeout=HEALTH_PROBE_SECONDS)
    cause = describe_overrun(timeout, fault, health, pids)
    return DeadlineExceededError(
        f"plugin {plugin!r}: command {command!r} overran its {timeout:g}s deadline: {cause}",
        hint=f"the call was cancelled in the plugin; see `sysops plugin status {plugin}` and docs/cli.md#deadlines",
    )


def remaining(deadline: float) -> float:
    """Seconds left until the monotonic `deadline` (at least a millisecond, so gRPC still sends the call)."""
    return max(0.001, deadline - time.monotonic())
