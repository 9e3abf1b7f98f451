"""A plugin pod the scheduler cannot place fails its start with the scheduler's reason (runtime/kubernetes),
not only 'was not scheduled within 60s': on a small node the reason is usually CPU or memory requests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sysops.runtime.kubernetes.driver import scheduling_problem


def pod(*conditions: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(status=SimpleNamespace(conditions=[SimpleNamespace(**c) for c in conditions]))


def test_the_schedulers_message_is_given() -> None:
    unschedulable = pod(
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu.",
        }
    )
    assert scheduling_problem(unschedulable) == ": 0/1 nodes are available: 1 Insufficient cpu."


def test_nothing_when_scheduled_or_not_yet_judged() -> None:
    assert scheduling_problem(pod({"type": "PodScheduled", "status": "True", "reason": None, "message": None})) == ""
    assert scheduling_problem(pod()) == ""
    assert scheduling_problem(SimpleNamespace(status=None)) == ""


def test_the_message_is_made_safe_for_a_terminal() -> None:
    hostile = pod({"type": "PodScheduled", "status": "False", "reason": "x", "message": "no\x1b]52;c;AAAA\x07 node"})
    assert "\x1b" not in scheduling_problem(hostile) and "\\x1b" in scheduling_problem(hostile)
