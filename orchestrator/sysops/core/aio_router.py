"""One routed call on the call socket's event loop: core/router.py's `call`, with its attempts on grpc.aio.

The same call in every respect the caller sees: the host's hooks admit it (a missing permission refuses it
before the plugin is called) and count it, the deadline spans re-sends and travels with the call, a call the
instance refused before running it is re-sent (router.Refusals), one that started never is, and a broken call
is named by why its instance broke it. Only the attempts run on the loop; what blocks (waiting for the
supervisor's restart or a roll's new instance, asking the engine why an instance died or overran) runs in the
loop's default executor, so the loop keeps serving the other calls. The caller abandons a call by cancelling
the task that runs it: the plugin's call is cancelled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar

from sysops.core import router
from sysops.core.aio_client import AioPluginClient
from sysops.core.call_meter import METER
from sysops.core.client import InvocationResult
from sysops.core.client_pool import ClientPool
from sysops.core.deadlines import deadline_error, remaining
from sysops.errors import DeadlineExceededError, PluginUnavailableError
from sysops.store import Route

_T = TypeVar("_T")


async def call(
    route: Route,
    arguments: dict[str, Any],
    output_format: str,
    current_route: router.RouteLookup,
    pool: ClientPool[AioPluginClient],
    environ: Mapping[str, str] | None = None,
) -> AsyncGenerator[str | InvocationResult, None]:
    """Stream a command's lines and result (router.call's contract; `current_route` is called in a thread)."""
    hooks, timeout, caller = router.admitted(route, environ, "")
    started, ok = time.monotonic(), False
    try:
        endpoint = router.first_endpoint(route)
        tried = router.refusals(timeout)
        while True:
            try:
                async with contextlib.aclosing(
                    _attempt(route, endpoint, arguments, output_format, (timeout, tried.call_deadline), pool, caller)
                ) as items:
                    async for item in items:
                        if isinstance(item, InvocationResult):
                            ok = item.exit_code == 0
                        yield item
                return
            except router.NotStarted as not_started:
                route, endpoint = await _blocking(tried.next_instance, route, endpoint, not_started, current_route)
    finally:
        if hooks is not None:
            hooks.finished(route, time.monotonic() - started, ok)


async def _attempt(
    route: Route,
    endpoint: str,
    arguments: dict[str, Any],
    output_format: str,
    deadline: tuple[float, float],
    pool: ClientPool[AioPluginClient],
    caller: Any,
) -> AsyncGenerator[str | InvocationResult, None]:
    """One attempt (router._call_once's contract: its outcome goes to the call meter unless it never started
    or was cancelled)."""
    timeout, ends = deadline
    attempt = router.Attempt(route, endpoint)
    client = attempt.client(pool)
    metered = METER.start(endpoint)
    try:
        async with contextlib.aclosing(
            client.invoke(route.command, arguments, output_format, remaining(ends), caller)
        ) as items:
            async for item in items:
                attempt.seen(item)
                yield item
    except DeadlineExceededError:
        attempt.overran()
        token, since = attempt.token, attempt.since
        raise await _blocking(deadline_error, route.plugin, route.command, endpoint, token, timeout, since) from None
    except PluginUnavailableError as exc:
        attempt.broke(exc, pool)
        raise await _blocking(router.failure, route, endpoint, attempt.since, exc) from exc
    finally:
        METER.finish(endpoint, metered, attempt.ok)


async def _blocking(function: Callable[..., _T], *arguments: Any) -> _T:
    """`function(*arguments)` in the loop's default executor (it waits, or asks the engine)."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *arguments)
