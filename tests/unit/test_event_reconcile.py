"""The host's event-driven reconcile schedule (server/event_reconcile.py), on a scripted feed and orchestrator.

Pure scheduling: which reconcile runs when (an event's plugin at once and once more after the grace, a held
plugin again soon, a failed one at the next poll, everything on (re)connection and at the safety pass). The
real engine's side is tests/integration/test_event_reconcile.py.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from sysops.errors import UsageError
from sysops.server import event_reconcile
from sysops.server.event_reconcile import EVERYTHING, Schedule, reconcile_continuously, reconcile_interval


class Feed:
    """A change feed the test writes to; `close` ends it."""

    def __init__(self) -> None:
        self.changes: queue.Queue[str | object | None] = queue.Queue()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[str | None]:
        while (change := self.changes.get()) is not self:
            yield cast("str | None", change)

    def close(self) -> None:
        self.closed.set()
        self.changes.put(self)


class Driver:
    def __init__(self) -> None:
        self.feed = Feed()

    def instance_events(self, labels: Any) -> Feed:
        return self.feed


class Orchestrator:
    """Records what is reconciled (shared by every instance the loop makes); `busy` plugins are held once."""

    def __init__(self, calls: list[str], busy: set[str], failing: set[str]) -> None:
        self.calls, self.busy, self.failing = calls, busy, failing

    def reconcile(self) -> None:
        self.calls.append(EVERYTHING)
        if EVERYTHING in self.failing:
            raise RuntimeError("engine gone")

    def reconcile_plugin(self, name: str) -> bool:
        self.calls.append(name)
        if name in self.busy:
            self.busy.discard(name)
            return False
        return True

    def close(self) -> None:
        pass


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_reconcile, "DEBOUNCE_SECONDS", 0.05)
    monkeypatch.setattr(event_reconcile, "FOLLOW_UP_SECONDS", 0.4)
    monkeypatch.setattr(event_reconcile, "BUSY_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(event_reconcile, "POLL_SECONDS", 0.5)


def _run(
    driver: object,
    seconds: float,
    *,
    interval: float = 100.0,
    busy: set[str] | None = None,
    failing: set[str] | None = None,
    script: Any = None,
) -> list[str]:
    calls: list[str] = []
    stop = threading.Event()

    def make() -> Orchestrator:
        return Orchestrator(calls, busy or set(), failing or set())

    loop = reconcile_continuously(make, driver, {}, stop, interval)  # type: ignore[arg-type]
    if script is not None:
        script()
    time.sleep(seconds)
    stop.set()
    loop.join(2)
    assert not loop.is_alive()
    return calls


@pytest.mark.usefixtures("quick")
@pytest.mark.parametrize(("seconds", "expected"), [(0.25, ["alpha"]), (0.65, ["alpha", "alpha"])])
def test_an_event_reconciles_its_plugin_at_once_and_again_after_the_grace(seconds: float, expected: list[str]) -> None:
    driver = Driver()

    def script() -> None:
        driver.feed.changes.put("alpha")
        driver.feed.changes.put("alpha")  # a burst: one pass

    assert _run(driver, seconds, script=script) == expected
    assert driver.feed.closed.is_set()


@pytest.mark.usefixtures("quick")
def test_events_and_connections_drive_the_passes() -> None:
    driver = Driver()

    def script() -> None:
        driver.feed.changes.put(None)  # (re)connected: everything, and once more after the grace
        time.sleep(0.1)
        driver.feed.changes.put("beta")

    calls = _run(driver, 0.7, script=script)
    assert calls == [EVERYTHING, "beta", EVERYTHING, "beta"]


@pytest.mark.usefixtures("quick")
def test_a_held_plugin_is_tried_again_soon_and_a_failed_pass_at_the_next_poll() -> None:
    driver = Driver()

    def script() -> None:
        driver.feed.changes.put("gamma")

    calls = _run(driver, 0.35, busy={"gamma"}, script=script)
    assert calls == ["gamma", "gamma"]  # held at first, done 0.2 s later
    calls = _run(object(), 1.75, interval=1.0, failing={EVERYTHING})
    assert calls == [EVERYTHING, EVERYTHING]  # no events: polled at 1 s, then (failing) POLL_SECONDS 0.5 s later


def test_the_schedule_keeps_the_earliest_request_and_its_follow_up_wish() -> None:
    now = [100.0]
    schedule = Schedule(clock=lambda: now[0])
    schedule.request("delta", 5.0)
    schedule.request("delta", 1.0, follow_up=True)
    schedule.request("epsilon", 3.0)
    now[0] = 101.0
    assert schedule.wait_due(threading.Event()) == {"delta": True}
    now[0] = 200.0
    assert schedule.wait_due(threading.Event()) == {"epsilon": False}
    stopped = threading.Event()
    stopped.set()
    assert schedule.wait_due(stopped) == {}


def test_the_interval_comes_from_the_caller_the_environment_or_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_reconcile.INTERVAL_ENV, raising=False)
    assert reconcile_interval(None, evented=True) == event_reconcile.SAFETY_PASS_SECONDS
    assert reconcile_interval(None, evented=False) == event_reconcile.POLL_SECONDS
    assert reconcile_interval(2.5, evented=True) == 2.5
    monkeypatch.setenv(event_reconcile.INTERVAL_ENV, "30")
    assert reconcile_interval(None, evented=True) == 30.0
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(event_reconcile.INTERVAL_ENV, bad)
        with pytest.raises(UsageError, match=event_reconcile.INTERVAL_ENV):
            reconcile_interval(None, evented=True)
