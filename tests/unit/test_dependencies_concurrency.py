"""The host's dependency checks hold against concurrent calls, on the fake driver: a `plugin down a` that starts
while `plugin up c` (c requires a) is rolling waits for that roll and is then refused naming c, instead of taking
a from under it; ups of unrelated plugins still roll at the same time (the dependencies lock is shared by ups)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sysops.core.orchestrator import Orchestrator
from sysops.errors import DependencyError, ExitCode
from sysops.runtime.base import LABEL_PLUGIN, InstanceSpec, InstanceStatus
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

from tests.unit.test_dependencies_orchestrator import Quiet, _manifest, _running

#: Seconds a thread may take to get where the test waits for it.
_PATIENCE = 10.0
#: Seconds a `down` that should wait is watched for finishing early.
_WAITING = 0.5


def _up(orchestrator: Orchestrator, name: str, **keys: Any) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image(f"{name}-img", Quiet)
    orchestrator.up_image(_manifest(name, **keys), f"{name}-img", f"fp-{name}", f"/src/{name}")


def _hold_starts(monkeypatch: pytest.MonkeyPatch, driver: FakeDriver, hold: Callable[[str], None]) -> None:
    """Call `hold(plugin)` in the rolling thread before the driver starts each instance (mid-roll)."""
    real_start = driver.start

    def start(spec: InstanceSpec) -> InstanceStatus:
        hold(spec.labels[LABEL_PLUGIN])
        return real_start(spec)

    monkeypatch.setattr(driver, "start", start)


class _Call(threading.Thread):
    """One operation on its own Orchestrator over the shared driver (as `sysops serve` runs each call)."""

    def __init__(self, settings: Settings, driver: FakeDriver, operation: Callable[[Orchestrator], object]) -> None:
        super().__init__(daemon=True)
        self.settings, self.driver, self.operation = settings, driver, operation
        self.error: BaseException | None = None

    def run(self) -> None:
        orchestrator = Orchestrator(self.settings, self.driver)
        try:
            self.operation(orchestrator)
        except BaseException as error:  # the test thread asserts on it
            self.error = error
        finally:
            orchestrator.close()


@pytest.fixture
def calls() -> Iterator[list[_Call]]:
    """Threads a test starts; each is joined (released first by the test) before the fixtures tear down."""
    started: list[_Call] = []
    yield started
    for call in started:
        call.join(_PATIENCE)


def _up_image_of_c(orchestrator: Orchestrator) -> None:
    _up(orchestrator, "c", requires=["a"])


def _rollback_of_c(orchestrator: Orchestrator) -> None:
    orchestrator.rollback("c")


@pytest.mark.parametrize("bring_up_c", [_up_image_of_c, _rollback_of_c], ids=["up", "rollback"])
def test_a_down_waits_for_a_dependent_being_rolled_and_is_then_refused_naming_it(
    orchestrator: Orchestrator,
    monkeypatch: pytest.MonkeyPatch,
    calls: list[_Call],
    bring_up_c: Callable[[Orchestrator], None],
) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    _up(orchestrator, "a")
    if bring_up_c is _rollback_of_c:  # a revision of c that is down, started again
        _up(orchestrator, "c", requires=["a"])
        orchestrator.down("c")
    rolling, release = threading.Event(), threading.Event()

    def hold(plugin: str) -> None:
        if plugin == "c":
            rolling.set()
            release.wait(_PATIENCE)

    _hold_starts(monkeypatch, driver, hold)
    up = _Call(orchestrator.settings, driver, bring_up_c)
    down = _Call(orchestrator.settings, driver, lambda other: other.down("a"))
    calls += [up, down]
    up.start()
    assert rolling.wait(_PATIENCE), "up c never reached its roll"
    down.start()
    down.join(_WAITING)
    still_waiting = down.is_alive()
    release.set()
    up.join(_PATIENCE)
    down.join(_PATIENCE)
    assert still_waiting, "down a did not wait for the roll of c, which had passed its dependency check"
    assert up.error is None
    assert isinstance(down.error, DependencyError)
    assert down.error.exit_code == ExitCode.CONFLICT
    assert "plugin a is required by running plugins: c 1.0.0" in down.error.message
    assert _running(orchestrator) == ["a", "c"]


def test_ups_of_unrelated_plugins_roll_at_the_same_time(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch, calls: list[_Call]
) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    both_rolling = threading.Barrier(2, timeout=_PATIENCE)  # broken unless each reaches its start while the other waits
    _hold_starts(monkeypatch, driver, lambda plugin: both_rolling.wait())
    orchestrator.store.plugins()  # the store exists before the threads (two first opens at once can be refused)
    began = time.monotonic()
    calls += [_Call(orchestrator.settings, driver, lambda o, name=name: _up(o, name)) for name in ("x", "y")]
    for call in calls:
        call.start()
    for call in calls:
        call.join(_PATIENCE)
    assert [call.error for call in calls] == [None, None]
    assert time.monotonic() - began < _PATIENCE
    assert _running(orchestrator) == ["x", "y"]
