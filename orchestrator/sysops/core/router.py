"""One routed call, wherever it starts: `sysops <command>` on this host, or `Invoke` of `sysops serve`.

A roll retires an instance while calls are on their way to it. A call the instance refused before running
it (draining, its socket already gone, or dropped unstarted by its stopping gRPC server) is safe to send
again, so it is re-sent to the route's current instances: at once to one it has not tried, else (the route
still names only instances that are quiescing) again every RETRY_SECONDS to those, for up to
HANDOVER_WAIT_SECONDS, because a failed hand-over re-opens the old instance instead of switching. At most
MAX_RESENDS other instances are tried; a call that started is never re-sent, because commands need not be
idempotent. Both the local CLI and the control server go
through `call`, so "no failed calls during a roll" holds for both. The call's deadline (core/deadlines.py)
spans the re-sends and travels with the gRPC call; a caller that abandons the call (Ctrl-C, an `Abandon`
fired by `sysops serve` when its client goes away) cancels it in the plugin. Arguments are checked here before
anything is sent. In the resident host, `RoutingHooks` (set by services/hosting.py) first refuse a command
whose `@requires_permission` the policy does not grant to its plugin, before the plugin is called, give the
plugin the caller's identity and granted permissions, and record each call in the host's metrics. The first
instance is picked by the route's weights (a rollout analysis gives the new version its share, store.py
`set_shares`), and each call that started is reported to core/call_meter.py, which that analysis reads. Light
to import: this is the hot path of the CLI (no docker, kubernetes, pydantic or typer).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from sysops.core.call_meter import METER
from sysops.core.client import DROPPED_UNSTARTED, Abandon, InvocationResult, PluginClient
from sysops.core.client_pool import ClientPool
from sysops.core.deadlines import command_timeout, deadline_error, remaining
from sysops.core.suspects import REGISTRY as SUSPECTS
from sysops.errors import CallInterruptedError, DeadlineExceededError, PluginUnavailableError, UsageError
from sysops.safe_text import cap
from sysops.store import Route

#: Instances a call that did not start is re-sent to, after the first one (re-tries of one count once).
MAX_RESENDS = 3
#: Largest arguments of one call, as JSON in UTF-8 (the command line of Linux is about 2 MiB in all).
MAX_ARGUMENTS_BYTES = 1 << 20
#: How a refusal before the command ran reads: the instance drains, its socket is gone, or its stopping gRPC
#: server dropped the call it had not handed to the plugin yet (core/client.py).
_DRAINING = "plugin is shutting down"
_NOT_STARTED_MARKERS = (_DRAINING, "failed to connect to all addresses", DROPPED_UNSTARTED)
#: How long a refused call keeps trying: a roll quiesces the old instance (its calls in flight get
#: SYSOPS_DRAIN_TIMEOUT, 10 s by default), then switches the route to the new one or, if the hand-over
#: failed, re-opens the old one.
HANDOVER_WAIT_SECONDS = 15.0
#: How often a quiescing instance is asked again; the store is read every _POLL_SECONDS for a new instance.
RETRY_SECONDS = 0.5
_POLL_SECONDS = 0.05

#: Finds the route a command has now (after a roll), or None when no plugin provides it any more.
RouteLookup = Callable[[str], Route | None]


class RoutingHooks(Protocol):
    """What the resident host adds to every routed call (services/hosting.py)."""

    def admit(self, route: Route, permissions: Sequence[str], principal: str) -> pb.CallerIdentity:
        """The identity to send with the call; PolicyDeniedError when the plugin lacks one of `permissions`."""
        ...

    def finished(self, route: Route, seconds: float, ok: bool) -> None:
        """A call ended (ok: it returned a result with exit code 0)."""
        ...


_hooks: RoutingHooks | None = None

#: Names why the instance at a TCP endpoint (a pod) broke a call of a plugin begun at a time (epoch seconds):
#: (plugin, endpoint, since) -> the fault, or "". `sysops serve` on Kubernetes sets it (server/pod_fault_reports.py);
#: an instance on a Unix socket is asked about through the engine (runtime/faults.py).
RemoteFaultReader = Callable[[str, str, float], str]
_remote_faults: RemoteFaultReader | None = None


def set_routing_hooks(hooks: RoutingHooks | None) -> RoutingHooks | None:
    """Install the host's routing hooks for this process (None removes them); return the previous ones."""
    global _hooks
    previous, _hooks = _hooks, hooks
    return previous


def set_remote_fault_reader(reader: RemoteFaultReader | None) -> RemoteFaultReader | None:
    """Have `reader` name the faults of instances reached over TCP (None removes it); return the previous one."""
    global _remote_faults
    previous, _remote_faults = _remote_faults, reader
    return previous


class _NotStarted(Exception):
    """The instance refused the call before running it: safe to send elsewhere."""

    def __init__(self, error: PluginUnavailableError) -> None:
        super().__init__(str(error))
        self.error = error


def check_arguments(command: str, arguments: dict[str, Any]) -> str:
    """The arguments as JSON, or a UsageError naming the argument that is not UTF-8, or saying they are too big."""
    for name, value in arguments.items():
        for text in (name, *(value if isinstance(value, list | tuple) else (value,))):
            if isinstance(text, str) and not _is_utf8(text):
                raise UsageError(
                    f"{command}: argument {cap(ascii(name), 80)} is not valid UTF-8",
                    hint="pass text in UTF-8 (check the terminal's or file's encoding)",
                )
    encoded = json.dumps(arguments)
    if len(encoded) > MAX_ARGUMENTS_BYTES:  # ASCII (json.dumps escapes the rest): characters are bytes
        raise UsageError(
            f"{command}: arguments are {len(encoded)} bytes as JSON, more than the {MAX_ARGUMENTS_BYTES} allowed",
            hint="pass less on the command line",
        )
    return encoded


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (surrogateescape)
        return False
    return True


def call(
    route: Route,
    arguments: dict[str, Any],
    output_format: str,
    current_route: RouteLookup,
    abandon: Abandon | None = None,
    pool: ClientPool | None = None,
    environ: Mapping[str, str] | None = None,
    principal: str = "",
) -> Iterator[str | InvocationResult]:
    """Stream a command's lines and result from one of the route's instances, re-sending a call that did not start.

    With a `pool` (the resident host's), the connection to the instance is reused across calls. `environ`
    holds the caller's SYSOPS_COMMAND_TIMEOUT when the call comes from another process (default: ours).
    `principal` names the caller to the plugin (default, in the host: the local user, `cli:NAME`).
    """
    hooks = _hooks
    spec = pb.CommandSpec.FromString(route.spec)
    timeout = command_timeout(spec.timeout_seconds, os.environ if environ is None else environ)
    if hooks is None:
        yield from _route_call(route, arguments, output_format, current_route, abandon, pool, timeout, None)
        return
    caller = hooks.admit(route, spec.permissions, principal)  # refused here: the plugin is never called
    started, ok = time.monotonic(), False
    try:
        for item in _route_call(route, arguments, output_format, current_route, abandon, pool, timeout, caller):
            if isinstance(item, InvocationResult):
                ok = item.exit_code == 0
            yield item
    finally:
        hooks.finished(route, time.monotonic() - started, ok)


def _route_call(
    route: Route,
    arguments: dict[str, Any],
    output_format: str,
    current_route: RouteLookup,
    abandon: Abandon | None,
    pool: ClientPool | None,
    timeout: float,
    caller: pb.CallerIdentity | None,
) -> Iterator[str | InvocationResult]:
    """`call` without the host's hooks (`caller` goes to the plugin with the call, within `timeout` seconds)."""
    endpoint = route.endpoint
    if not endpoint:
        raise PluginUnavailableError(
            f"plugin {route.plugin!r} has no ready instance for command {route.command!r}",
            hint=f"see `sysops plugin status {route.plugin}`",
        )
    call_deadline = time.monotonic() + timeout
    refused: set[str] = set()
    gone: set[str] = set()
    deadline = min(time.monotonic() + HANDOVER_WAIT_SECONDS, call_deadline)
    while True:
        if abandon is not None and abandon.abandoned:
            raise CallInterruptedError(f"plugin {route.plugin!r}: command {route.command!r} abandoned by its caller")
        try:
            deadline_pair = (timeout, call_deadline)
            yield from _call_once(route, endpoint, arguments, output_format, deadline_pair, abandon, pool, caller)
            return
        except _NotStarted as not_started:
            if SUSPECTS.wait_restarted(endpoint, call_deadline):  # the supervisor restarted it: try it again
                continue
            if _DRAINING not in str(not_started):  # its socket is gone: its route moved already
                gone.add(endpoint)
            refused.add(endpoint)
            if len(refused) >= 1 + MAX_RESENDS:
                raise PluginUnavailableError(
                    f"plugin {route.plugin!r} did not take command {route.command!r}: "
                    f"{len(refused)} instances in a row were shutting down",
                    hint=f"try again; see `sysops plugin status {route.plugin}`",
                ) from None
            successor = _next_instance(route.command, endpoint, refused, gone, current_route, deadline)
            if successor is None:
                from sysops.runtime.faults import unreachable_error  # only once a call found no instance

                raise unreachable_error(route.plugin, endpoint, not_started.error) from None
            route, endpoint = successor


def _next_instance(
    command: str, refused_now: str, refused: set[str], gone: set[str], current_route: RouteLookup, deadline: float
) -> tuple[Route, str] | None:
    """Where to send a refused call next: at once an instance of its route not tried yet; else, after
    RETRY_SECONDS, one that refused it while quiescing (a failed hand-over re-opens it), `refused_now` only
    if no other; None if the route is gone, names only instances whose socket is gone, or `deadline` passed."""
    retry_at = time.monotonic() + RETRY_SECONDS
    while True:
        route = current_route(command)
        if route is None:
            return None
        untried = [endpoint for endpoint in route.endpoints if endpoint not in refused]
        if untried:
            return route, random.choice(untried)
        quiescing = [endpoint for endpoint in route.endpoints if endpoint not in gone]
        now = time.monotonic()
        if not quiescing or now >= deadline:
            return None
        if now >= retry_at:
            others = [endpoint for endpoint in quiescing if endpoint != refused_now]
            return route, random.choice(others or quiescing)
        time.sleep(_POLL_SECONDS)


def _call_once(
    route: Route,
    endpoint: str,
    arguments: dict[str, Any],
    output_format: str,
    deadline: tuple[float, float],
    abandon: Abandon | None,
    pool: ClientPool | None,
    caller: pb.CallerIdentity | None = None,
) -> Iterator[str | InvocationResult]:
    """One attempt; `deadline` is (the call's timeout, the monotonic time it ends). Its outcome goes to
    the call meter (core/call_meter.py) unless it never started or its caller abandoned it."""
    received = False
    since = time.time()
    ok: bool | None = None
    timeout, ends = deadline
    token = route.token_for(endpoint)
    client = PluginClient(endpoint, route.plugin, token) if pool is None else pool.client(endpoint, route.plugin, token)
    metered = METER.start(endpoint)
    try:
        items = client.invoke(
            route.command, arguments, output_format, timeout=remaining(ends), abandon=abandon, caller=caller
        )
        for item in items:
            received = True
            if isinstance(item, InvocationResult):
                ok = item.exit_code == 0
            yield item
    except DeadlineExceededError:
        ok = False
        SUSPECTS.suspect(endpoint)  # the supervisor probes it at once (core/suspects.py)
        raise deadline_error(route.plugin, route.command, endpoint, token, timeout, since) from None
    except PluginUnavailableError as exc:
        if pool is not None:
            pool.drop(endpoint)  # its instance may be gone: the next call connects afresh
        if not received and any(marker in str(exc) for marker in _NOT_STARTED_MARKERS):
            raise _NotStarted(exc) from exc
        ok = False
        raise _failure(route, endpoint, since, exc) from exc
    finally:
        if pool is None:
            client.close()
        METER.finish(endpoint, metered, ok)


def _failure(route: Route, endpoint: str, since: float, error: PluginUnavailableError) -> PluginUnavailableError:
    """Name why the instance broke the call (e.g. OOMKilled), asking the engine without its SDK, or (a pod)
    the remote fault reader."""
    fault: str | None = None
    if endpoint.startswith("unix://"):
        from sysops.runtime.faults import describe_instance_failure

        fault = describe_instance_failure(endpoint, since, wait=1.5)
    elif _remote_faults is not None:
        fault = _remote_faults(route.plugin, endpoint, since)
    if fault:
        return PluginUnavailableError(
            f"plugin {route.plugin!r} died during command {route.command!r}: {fault}",
            hint=f"see `sysops plugin status {route.plugin}`",
        )
    return error
