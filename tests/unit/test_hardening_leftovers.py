"""Leftovers of the hardening issue, in the router's pure logic: a call refused while a roll quiesces its
instance goes back to that instance when the hand-over fails, instead of waiting for one that never comes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sysops.core import router
from sysops.core.client import InvocationResult
from sysops.errors import PluginUnavailableError
from sysops.store import Route

#: How long the fake old instance stays quiesced (a failed Restore on the new one, then re-opened).
QUIESCED_SECONDS = 1.0


def _route(*endpoints: str) -> Route:
    return Route("greet", "hello", b"", tuple((endpoint, "token") for endpoint in endpoints))


def test_a_call_refused_during_a_failed_hand_over_runs_on_the_re_opened_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reopened_at = time.monotonic() + QUIESCED_SECONDS
    calls: list[str] = []

    def old_instance(
        route: Route, endpoint: str, arguments: dict[str, Any], output: str, *_: object
    ) -> Iterator[str | InvocationResult]:
        calls.append(endpoint)
        if time.monotonic() < reopened_at:
            raise router._NotStarted(PluginUnavailableError("plugin 'hello' did not answer (plugin is shutting down)"))
        yield InvocationResult("text", "hi", None, 0, "")

    monkeypatch.setattr(router, "_call_once", old_instance)
    started = time.monotonic()
    [result] = list(router.call(_route("old"), {}, "text", lambda command: _route("old")))  # the route never moves
    took = time.monotonic() - started
    assert isinstance(result, InvocationResult) and result.text == "hi"
    assert set(calls) == {"old"}
    assert QUIESCED_SECONDS <= took < 5.0  # not HANDOVER_WAIT_SECONDS (15 s), then an error
    assert len(calls) <= 2 + QUIESCED_SECONDS / router.RETRY_SECONDS  # asked again every RETRY_SECONDS, not hammered


def test_a_call_whose_only_instance_is_gone_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(route: Route, endpoint: str, arguments: dict[str, Any], output: str, *_: object) -> Iterator[str]:
        refused = PluginUnavailableError("plugin 'hello' did not answer (failed to connect to all addresses)")
        raise router._NotStarted(refused)
        yield ""

    monkeypatch.setattr(router, "_call_once", gone)
    started = time.monotonic()
    with pytest.raises(PluginUnavailableError, match="failed to connect"):
        list(router.call(_route("dead"), {}, "text", lambda command: _route("dead")))
    assert time.monotonic() - started < 1.0
