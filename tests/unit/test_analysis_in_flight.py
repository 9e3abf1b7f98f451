"""Rollout analysis against a version that wedges: calls still running when the window ends are the new
version's calls too, so the decision waits for them (within the drain grace) and counts them, instead of judging
only the calls that were quick enough to finish inside the window."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from sysops.core.analysis import AnalysisError
from sysops.core.orchestrator import Orchestrator
from sysops_sdk import Plugin

from tests.unit.conftest import EchoV1, EchoV2
from tests.unit.test_analysis import FailingEcho, _roll_under_load, _target


class _EveryOtherWedges:
    """FailingEcho's counter: it fails a call its counter says 5 for; here every other call, after hanging."""

    def __init__(self) -> None:
        self.calls = itertools.count(1)

    def __next__(self) -> int:
        if next(self.calls) % 2:
            return 1
        time.sleep(1.2)  # past the end of the window
        return 5


class WedgingEcho(FailingEcho):
    """Answers every other call at once; the rest hang past the window, then fail."""

    counter = _EveryOtherWedges()  # type: ignore[assignment]


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"v1": EchoV1, "good": EchoV2, "wedging": WedgingEcho}


def test_calls_still_running_at_the_end_of_the_window_count_in_the_decision(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("v1", "1.0.0"))
    rollout = {"analysis_s": 1.0, "share": 0.5, "max_error_rate": 0.05, "min_calls": 3}
    _, error, _ = _roll_under_load(orchestrator, _target("wedging", "2.0.0", rollout))
    assert isinstance(error, AnalysisError), "a version failing half its calls passed its analysis"
    assert "> max_error_rate 0.05" in str(error)
    assert [i.version for i in orchestrator.store.instances("echo")] == ["1.0.0"]


def test_a_call_still_running_after_the_grace_counts_as_failed_and_one_not_started_does_not_count() -> None:
    from sysops.core.call_meter import CallMeter

    meter = CallMeter()
    assert meter.start("unix:///other") is None  # not watched: nothing kept
    meter.watch("unix:///new")
    quick, wedged, refused = (meter.start("unix:///new") for _ in range(3))
    meter.finish("unix:///new", quick, True)
    meter.finish("unix:///new", refused, None)  # never ran there (re-sent elsewhere) or abandoned
    samples = meter.settle("unix:///new", grace=0.2)
    assert [sample.ok for sample in samples] == [True, False]
    assert samples[1].seconds >= 0.2
    meter.finish("unix:///new", wedged, True)
    assert meter.unwatch("unix:///new")[-1].ok
