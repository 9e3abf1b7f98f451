"""`plugin ls` takes an instance's health from the supervisor's recent probe (core/observations.py PROBES)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sysops.core import observations
from sysops.core.observations import ProbeAnswers, observe_all
from sysops.core.orchestrator import Orchestrator
from sysops.runtime.base import InstanceStatus
from sysops.store import InstanceRecord

from tests.unit.test_supervisor import _passes, _supervised


class _Engine:
    """Says every instance runs."""

    def inspect(self, handle: str) -> InstanceStatus:
        return InstanceStatus(handle=handle, name=handle, labels={}, running=True)


def _instance(tmp_path: Path, index: int) -> InstanceRecord:
    endpoint = f"unix:{tmp_path}/nobody-{index}.sock"  # nothing listens: a health check here is never SERVING
    return InstanceRecord(f"i{index}", "p", 1, "1.0.0", f"h{index}", "img", "sha", endpoint, str(tmp_path), 0.0, True)


def test_a_recent_probe_answer_stands_for_the_health_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = ProbeAnswers()
    monkeypatch.setattr(observations, "PROBES", answers)
    instances = [_instance(tmp_path, index) for index in range(3)]
    answers.record("i0", serving=True)
    answers.record("i1", serving=False)
    engine: Any = _Engine()
    seen = observe_all(engine, instances)
    assert {key: healthy for key, (_, healthy) in seen.items()} == {"i0": True, "i1": False, "i2": False}


def test_an_old_or_forgotten_answer_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = ProbeAnswers()
    answers.record("i0", serving=True)
    answers.record("i1", serving=True)
    assert answers.recent("i0") is True
    assert answers.recent("i0", max_age=0.0) is None
    answers.retain({"i1"})
    assert answers.recent("i0") is None and answers.recent("i1") is True


def test_the_supervisor_records_each_probe_answer(orchestrator: Orchestrator) -> None:
    supervisor, prober, clock, instance = _supervised(orchestrator)
    _passes(supervisor, orchestrator, clock, 1)
    assert observations.PROBES.recent(instance.id) is True
    prober.wedged.add(instance.id)
    _passes(supervisor, orchestrator, clock, 1)
    assert observations.PROBES.recent(instance.id) is False
