"""The resolver's bounds (core/dependencies.py): a catalog written to hurt (many plugins, each of many majors,
each requiring an older version of the next, around a ring) must not hang `sysops plugin up`; the plan gives up
within its time budget with one DependencyError. (Every round of one resolution was bounded, but each failed
resolution binds a requirement to an older major and starts again: about a thousand resolutions for 20 x 20.)"""

from __future__ import annotations

import threading
import time

import pytest
from packaging.version import Version
from sysops.core import dependencies
from sysops.core.dependencies import Candidate, parse_requirement, plan
from sysops.errors import DependencyError


def _ring(plugins: int, majors: int) -> list[Candidate]:
    """q0 requires q1 below its own major, q1 requires q2 below its own, ... and the last requires q0 again."""
    return [
        Candidate(
            f"q{index}",
            Version(f"{major}.0"),
            (parse_requirement(f"q{(index + 1) % plugins}<{major}"),),
            (),
            "directory x",
        )
        for index in range(plugins)
        for major in range(1, majors)
    ]


def test_a_catalog_written_to_hurt_is_refused_within_the_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dependencies, "_MAX_SECONDS", 1.0, raising=False)
    root = Candidate("root", Version("1.0"), (parse_requirement("q0"),), (), "directory root")
    outcome: list[BaseException] = []

    def planning() -> None:
        try:
            plan(root, _ring(30, 25), [])  # about 17 s without a budget
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=planning, daemon=True)
    thread.start()
    thread.join(timeout=6)
    assert not thread.is_alive(), "the plan ran past its time budget"
    assert len(outcome) == 1 and isinstance(outcome[0], DependencyError)
    assert "too many combinations to resolve" in str(outcome[0]) and time.monotonic() - started < 6
