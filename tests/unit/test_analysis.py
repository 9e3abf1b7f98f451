"""Rollout analysis on the fake driver: the decision (core/analysis.py), the weighted route split (store.py),
and analysed rolls under load (core/rollout.py + core/router.py): a failing version is rolled back naming the
threshold, too few calls keep the old version, a good version takes over; an event-only plugin with commands is
refused at readiness."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sysops.core import router
from sysops.core.analysis import AnalysisError, Outcome, decide, p99_ms
from sysops.core.call_meter import Sample
from sysops.core.client import InvocationResult
from sysops.core.manifest import RolloutAnalysis, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.errors import StartFailedError, SysopsError
from sysops.runtime.fake import FakeDriver
from sysops.store import InstanceRecord, Store
from sysops_sdk import Plugin, argument, on_event, plugin_command

from tests.unit.conftest import EchoV1, EchoV2


class FailingEcho(EchoV1):
    """Answers, but every fifth call fails (20%)."""

    version = "2.0.0"
    counter = itertools.count(1)

    @plugin_command("echo")
    @argument("text", help="What to echo")
    def echo(self, text: str, upper: bool = False) -> str:
        if next(self.counter) % 5 == 0:
            raise RuntimeError("v2 broke")
        return f"v2:{text}"


class SlowEcho(EchoV1):
    version = "2.0.0"

    @plugin_command("echo")
    @argument("text", help="What to echo")
    def echo(self, text: str, upper: bool = False) -> str:
        time.sleep(0.08)
        return f"v2:{text}"


class EventWithCommands(Plugin):
    name = "echo"
    version = "2.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @on_event("deploy.done")
    def seen(self, event: Any) -> None:
        pass

    @plugin_command("echo")
    def echo(self) -> str:
        return "not for an event plugin"


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"v1": EchoV1, "good": EchoV2, "failing": FailingEcho, "slow": SlowEcho, "eventcmd": EventWithCommands}


def _analysis(**values: Any) -> RolloutAnalysis:
    return RolloutAnalysis.model_validate({"analysis_s": 1, "min_calls": 10, **values})


def _samples(ok: int, failed: int, seconds: float = 0.01) -> list[Sample]:
    return [Sample(seconds, True)] * ok + [Sample(seconds, False)] * failed


# the decision
def test_error_rate_above_the_threshold_fails_naming_it() -> None:
    verdict = decide(_samples(38, 10), _analysis(max_error_rate=0.05))
    assert verdict.outcome is Outcome.FAILED
    assert verdict.reason == "analysis failed: error rate 0.21 > max_error_rate 0.05 over 48 calls"


def test_error_rate_at_the_threshold_passes() -> None:
    verdict = decide(_samples(95, 5), _analysis(max_error_rate=0.05))
    assert verdict.outcome is Outcome.PASSED and verdict.errors == 5 and verdict.calls == 100


def test_a_rate_just_above_a_threshold_is_shown_with_more_digits() -> None:
    verdict = decide(_samples(1990, 110), _analysis(max_error_rate=0.05))
    assert "error rate 0.0524 > max_error_rate 0.05" in verdict.reason


def test_p99_above_the_threshold_fails_naming_it() -> None:
    samples = _samples(98, 0, 0.01) + _samples(2, 0, 0.9)
    assert p99_ms(samples) == pytest.approx(900)
    verdict = decide(samples, _analysis(max_p99_ms=500))
    assert verdict.outcome is Outcome.FAILED
    assert verdict.reason == "analysis failed: p99 900 ms > max_p99_ms 500 over 100 calls"
    assert decide(samples, _analysis()).outcome is Outcome.PASSED  # no latency threshold set


def test_fewer_calls_than_min_calls_is_inconclusive_even_if_all_failed() -> None:
    verdict = decide(_samples(0, 9), _analysis(min_calls=10))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.reason == "analysis inconclusive: 9 calls to the new version in 1s, fewer than min_calls 10"
    assert decide([], _analysis()).outcome is Outcome.INCONCLUSIVE


# the weighted split in the store
def _instance(instance_id: str, plugin: str = "echo") -> InstanceRecord:
    return InstanceRecord(instance_id, plugin, 1, "1.0.0", instance_id, "img", "img", f"unix:///{instance_id}", "", 0.0)


def test_shares_split_a_route_by_weight_and_route_an_instance_on_trial(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    old, new = _instance("old"), _instance("new")
    store.add_instance(old)
    store.add_instance(new)
    store.switch("echo", add=[old], remove=[], routes={"echo": b""})
    route = store.route("echo")
    assert route is not None and route.endpoints == ("unix:///old",)  # `new` is not active
    store.set_shares("echo", {"old": 0.7, "new": 0.3})
    route = store.route("echo")
    assert route is not None and set(route.endpoints) == {"unix:///old", "unix:///new"}
    picks = Counter(route.endpoint for _ in range(4000))
    assert picks["unix:///new"] / 4000 == pytest.approx(0.3, abs=0.04)
    store.set_shares("echo", {})
    route = store.route("echo")
    assert route is not None and route.endpoints == ("unix:///old",)
    store.set_shares("echo", {"old": 0.5, "new": 0.5})
    store.delete_instance("new")
    route = store.route("echo")
    assert route is not None and route.endpoints == ("unix:///old",)
    store.close()


# analysed rolls on the fake driver
def _target(image: str, version: str, rollout: dict[str, Any] | None = None) -> RollTarget:
    data: dict[str, Any] = {"name": "echo", "version": version, "entrypoint": "x:Y"}
    if rollout is not None:
        data["rollout"] = rollout
    return RollTarget(parse_manifest(data, "test"), image, image, f"fp-{image}", "/src/echo")


class _Load:
    """Threads calling `echo` through the router, as the host does, recording who answered and when."""

    def __init__(self, store_path: Path, threads: int = 4) -> None:
        self.store_path = store_path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: (sent at, ended at, answered text or error)
        self.calls: list[tuple[float, float, str, bool]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        store = Store(self.store_path)
        try:
            while not self.stop.is_set() and len(self.calls) < 5000:
                sent = time.time()
                route = store.route("echo")
                assert route is not None
                try:
                    *_, result = router.call(route, {"text": "x"}, "text", store.route)
                    assert isinstance(result, InvocationResult)
                    answer, ok = (result.text if result.exit_code == 0 else result.error), result.exit_code == 0
                except SysopsError as error:
                    answer, ok = str(error), False
                with self.lock:
                    self.calls.append((sent, time.time(), answer, ok))
                time.sleep(0.005)
        finally:
            store.close()


def _roll_under_load(orchestrator: Orchestrator, target: RollTarget) -> tuple[_Load, BaseException | None, float]:
    """Roll `target` while the load runs; return the load, the roll's error, and when it was decided."""
    with _Load(orchestrator.settings.store_path) as load:
        time.sleep(0.2)
        error: BaseException | None = None
        try:
            orchestrator.rollout.roll(target)
        except StartFailedError as exc:
            error = exc
        decided = time.time()
        time.sleep(0.3)
    return load, error, decided


def test_a_version_failing_a_fifth_of_its_calls_is_rolled_back_naming_the_threshold(
    orchestrator: Orchestrator,
) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    rollout = {"analysis_s": 1.0, "share": 0.5, "max_error_rate": 0.05, "min_calls": 10}
    load, error, decided = _roll_under_load(orchestrator, _target("failing", "2.0.0", rollout))
    assert isinstance(error, AnalysisError) and error.exit_code == 6
    rate = re.search(r"analysis failed: error rate (\d\.\d+) > max_error_rate 0\.05 over", str(error))
    assert rate and float(rate.group(1)) == pytest.approx(0.2, abs=0.015), error  # every 5th call of v2 fails
    failed = [call for call in load.calls if not call[3]]
    assert failed and all("v2 broke" in answer and sent < decided for sent, _, answer, _ in failed)
    answered_v2 = [call for call in load.calls if call[2].startswith("v2:")]
    assert answered_v2 and all(sent < decided for sent, *_ in answered_v2)
    after = [call for call in load.calls if call[0] > decided]
    assert after and all(answer.startswith("v1:") for _, _, answer, _ in after)
    last = orchestrator.store.events("echo")[-1]
    assert last.kind == "rolled-back" and "max_error_rate 0.05" in last.message and "1.0.0 (revision 1)" in last.message
    assert [i.version for i in orchestrator.store.instances("echo")] == ["1.0.0"]


def test_the_new_version_takes_its_share_of_calls_during_the_window(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    rollout = {"analysis_s": 1.5, "share": 0.25, "min_calls": 5}
    load, error, decided = _roll_under_load(orchestrator, _target("good", "2.0.0", rollout))
    assert error is None
    window = [call for call in load.calls if call[1] < decided - 0.3 and call[0] > decided - 1.3]
    assert len(window) > 40
    share = sum(1 for call in window if call[2].startswith("v2:")) / len(window)
    assert share == pytest.approx(0.25, abs=0.12)
    assert all(call[3] for call in load.calls)
    assert orchestrator.store.events("echo")[-1].kind == "rolled"
    assert [i.version for i in orchestrator.store.instances("echo")] == ["2.0.0"]


def test_a_slow_version_fails_on_p99(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    rollout = {"analysis_s": 1.0, "max_p99_ms": 40, "min_calls": 3}
    _, error, _ = _roll_under_load(orchestrator, _target("slow", "2.0.0", rollout))
    assert isinstance(error, AnalysisError) and "> max_p99_ms 40 over" in str(error)


def test_no_calls_in_the_window_is_inconclusive_and_keeps_the_old_version(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    with pytest.raises(AnalysisError, match=re.escape("analysis inconclusive: 0 calls to the new version in 0.3s")):
        orchestrator.rollout.roll(_target("good", "2.0.0", {"analysis_s": 0.3, "min_calls": 5}))
    assert orchestrator.store.events("echo")[-1].kind == "rolled-back"
    assert "inconclusive" in orchestrator.store.events("echo")[-1].message
    assert [i.version for i in orchestrator.store.instances("echo")] == ["1.0.0"]
    assert orchestrator.store.route("echo") is not None


def test_a_failing_smoke_command_stops_the_roll_before_any_call(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    rollout = {"analysis_s": 5, "smoke": "nope"}
    with pytest.raises(AnalysisError, match=re.escape("analysis smoke command 'nope' failed on 2.0.0")):
        orchestrator.rollout.roll(_target("good", "2.0.0", rollout))
    assert [i.version for i in orchestrator.store.instances("echo")] == ["1.0.0"]


def test_a_first_install_and_a_rollback_are_not_analysed(orchestrator: Orchestrator) -> None:
    rollout = {"analysis_s": 30, "min_calls": 1000}
    started = time.monotonic()
    orchestrator.rollout.roll(_target("v1", "1.0.0", rollout))
    orchestrator.rollout.roll(_target("good", "2.0.0"))
    orchestrator.rollout.roll(_target("v1", "1.0.0", rollout), rollback_of=1)
    assert time.monotonic() - started < 10


def test_an_event_plugin_defining_commands_is_refused_at_readiness(orchestrator: Orchestrator) -> None:
    data = {"name": "echo", "version": "2.0.0", "entrypoint": "x:Y", "types": ["event"]}
    target = RollTarget(parse_manifest(data, "test"), "eventcmd", "eventcmd", "fp", "/src/echo")
    refused = re.escape("is an event plugin (types: [event]) but its code defines commands: echo")
    with pytest.raises(StartFailedError, match=refused):
        orchestrator.rollout.roll(target)


def test_a_crashed_old_instance_gives_no_state_and_the_analysis_still_decides(orchestrator: Orchestrator) -> None:
    old = orchestrator.rollout.roll(_target("v1", "1.0.0"))
    orchestrator.driver.stop(old.handle, timeout=1)
    with pytest.raises(AnalysisError, match="analysis inconclusive"):
        orchestrator.rollout.roll(_target("good", "2.0.0", {"analysis_s": 0.2, "min_calls": 5}))


class QuietEvents(EventWithCommands):
    """An event plugin as it should be: no commands."""

    echo = None  # type: ignore[assignment]


def test_a_version_with_no_routed_command_is_not_analysed(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    data = {"name": "echo", "version": "2.0.0", "entrypoint": "x:Y", "types": ["event"], "rollout": {"analysis_s": 1}}
    assert isinstance(orchestrator.driver, FakeDriver)
    orchestrator.driver.add_image("quiet", QuietEvents)
    orchestrator.rollout.roll(RollTarget(parse_manifest(data, "test"), "quiet", "quiet", "fp", "/src/echo"))
    assert orchestrator.store.events("echo")[-1].kind == "rolled"
