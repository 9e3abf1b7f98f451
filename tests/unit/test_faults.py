"""Engine-free rules of runtime/faults.py: the restart budget (with a fake clock), last errors, restart messages,
the policy cap of `logs`, and the bounded line splitting of the Docker driver's log stream."""

from __future__ import annotations

from typing import Any

import pytest
from sysops.core.manifest import parse_manifest
from sysops.core.policy import Caps, Policy, apply_policy
from sysops.errors import PolicyDeniedError
from sysops.runtime.base import InstanceStatus
from sysops.runtime.docker.driver import _MAX_LOG_LINE, _lines
from sysops.runtime.faults import (
    MAX_RESTARTS,
    BudgetAction,
    budget_action,
    crashes_in_budget,
    describe_fault,
    last_error,
    restarting_message,
    status_from_attrs,
)

T0 = 1_700_000_000.0
WINDOW = 600.0


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def attrs(
    *, restarts: int, allowed: int = MAX_RESTARTS, running: bool = True, started: float = T0,
    finished: float | None = None, exit_code: int = 0, restarting: bool = False,
) -> dict[str, Any]:  # fmt: skip
    return {
        "RestartCount": restarts,
        "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": allowed}},
        "State": {
            "Running": running or restarting,
            "Restarting": restarting,
            "ExitCode": exit_code,
            "StartedAt": _iso(started),
            "FinishedAt": _iso(finished) if finished is not None else "0001-01-01T00:00:00Z",
        },
    }


def test_crashes_count_only_the_current_budget() -> None:
    assert crashes_in_budget(attrs(restarts=2)) == 2
    # Re-armed at 5 restarts: the engine's cap became 5 + 3, so 6 restarts are 1 crash of the new budget.
    assert crashes_in_budget(attrs(restarts=6, allowed=5 + MAX_RESTARTS)) == 1


def test_budget_is_rearmed_only_after_a_stable_window() -> None:
    crashed = attrs(restarts=2, started=T0)
    assert budget_action(crashed, now=T0 + WINDOW - 1, window=WINDOW) is BudgetAction.KEEP
    assert budget_action(crashed, now=T0 + WINDOW, window=WINDOW) is BudgetAction.REARM
    assert budget_action(attrs(restarts=0), now=T0 + 10 * WINDOW, window=WINDOW) is BudgetAction.KEEP
    restarting = attrs(restarts=2, restarting=True, running=False)
    assert budget_action(restarting, now=T0 + 10 * WINDOW, window=WINDOW) is BudgetAction.KEEP


def test_a_daily_crash_never_exhausts_the_budget() -> None:
    """One crash a day for a week: with re-arming, the instance is never left stopped."""
    day = 86_400.0
    state = {"restarts": 0, "allowed": MAX_RESTARTS}
    for crash in range(7):
        started = T0 + crash * day
        # The engine restarts it unless the budget is spent.
        current = attrs(restarts=state["restarts"], allowed=state["allowed"], started=started)
        assert crashes_in_budget(current) < MAX_RESTARTS, f"dead on day {crash + 1}"
        state["restarts"] += 1
        running = attrs(restarts=state["restarts"], allowed=state["allowed"], started=started + 1)
        # A sysops command an hour later re-arms it (the driver raises the cap to restarts + MAX_RESTARTS).
        if budget_action(running, now=started + 3600, window=WINDOW) is BudgetAction.REARM:
            state["allowed"] = state["restarts"] + MAX_RESTARTS
    assert crashes_in_budget(attrs(restarts=state["restarts"], allowed=state["allowed"])) == 0


def test_an_exhausted_budget_after_a_stable_run_restarts_and_a_crash_loop_does_not() -> None:
    stable = attrs(restarts=3, running=False, started=T0, finished=T0 + WINDOW + 5, exit_code=1)
    assert budget_action(stable, now=T0 + 2 * WINDOW, window=WINDOW) is BudgetAction.RESTART
    looping = attrs(restarts=3, running=False, started=T0, finished=T0 + 1, exit_code=1)
    assert budget_action(looping, now=T0 + 2 * WINDOW, window=WINDOW) is BudgetAction.KEEP
    stopped = attrs(restarts=3, running=False, started=T0, finished=T0 + WINDOW + 5, exit_code=0)
    assert budget_action(stopped, now=T0 + 2 * WINDOW, window=WINDOW) is BudgetAction.KEEP


def status(**kw: Any) -> InstanceStatus:
    return InstanceStatus(handle="c", name="c", labels={}, **kw)


SERVING = "sysops-plugin: hostile 1.0.0 serving on unix:///run/sysops/plugin.sock"


def test_last_error_is_never_the_serving_line() -> None:
    crashed = status(running=False, exit_code=1, restart_count=3)
    lines = [SERVING, "Traceback (most recent call last):", '  File "x.py", line 1', "RuntimeError: boom"]
    assert last_error(crashed, lines, 64 << 20) == "exited with code 1: RuntimeError: boom"
    assert last_error(crashed, [SERVING], 64 << 20) == "exited with code 1"
    early = ["sysops-plugin: initialize() of plugin 'x' failed: ValueError: no"]
    assert last_error(status(running=False, exit_code=4), early, 0).endswith("ValueError: no")


def test_last_error_names_oom_exit_zero_and_a_crash_before_the_current_run() -> None:
    oom = status(running=False, exit_code=137, oom_killed=True)
    assert last_error(oom, [SERVING], 64 << 20).startswith("OOMKilled (memory limit 64 MiB")
    assert "stopped outside sysops" in last_error(status(running=False, exit_code=0), [SERVING], 0)
    again = status(running=True, restart_count=1)
    assert last_error(again, [SERVING, "boom", SERVING], 0) == "crashed, restarted 1 time: boom"
    assert last_error(status(running=True), [SERVING], 0) == ""


def test_restarting_message_counts_crashes_of_the_budget() -> None:
    restarting = status(running=False, exit_code=1, restart_count=2)
    assert restarting_message("x", restarting) == "plugin 'x' is restarting (crash 2 of 3: exit code 1)"
    spent = status(running=False, exit_code=1, restart_count=3)
    assert restarting_message("x", spent) == "plugin 'x' failed after 3 restarts (last exit code 1)"


def test_the_last_restart_of_the_budget_pending_is_not_giving_up() -> None:
    # The engine counts a restart when it decides it: during the backoff before the third restart, inspect
    # says Restarting, RestartCount 3, ExitCode 1. The instance runs again moments later: not Failed yet.
    pending = status_from_attrs(attrs(restarts=3, running=False, exit_code=1, restarting=True))
    assert not describe_fault(pending, 0).startswith("Failed after"), describe_fault(pending, 0)
    assert describe_fault(pending, 0) == "exited with code 1, restarted 3 times (the engine starts it again)"
    assert restarting_message("x", pending) == "plugin 'x' is restarting (crash 3 of 3: exit code 1)"
    spent = status_from_attrs(attrs(restarts=3, running=False, exit_code=1))
    assert describe_fault(spent, 0) == "Failed after 3 restarts: last exit code 1"


def test_policy_caps_logs() -> None:
    policy = Policy(caps=Caps(logs_max_mb=5, logs_files=2), source="policy.yaml")
    base = {"name": "p", "version": "1.0.0", "entrypoint": "p.plugin:P"}
    lowered = apply_policy(parse_manifest(base, "plugin.yaml"), policy, "plugin.yaml")
    assert (lowered.logs.max_mb, lowered.logs.files) == (5, 2)
    with pytest.raises(PolicyDeniedError, match=r"plugin.yaml: logs.max_mb asks 50, policy caps it at 5"):
        apply_policy(parse_manifest({**base, "logs": {"max_mb": 50}}, "plugin.yaml"), policy, "plugin.yaml")


def test_log_lines_are_split_with_bounded_memory() -> None:
    chunks = [b"a\nb", b"c\n", b"x" * (3 * _MAX_LOG_LINE), b"\nlast"]
    lines = list(_lines(iter(chunks)))
    assert lines[:2] == ["a", "bc"]
    assert all(len(line) <= _MAX_LOG_LINE for line in lines)
    assert "".join(lines[2:-1]) == "x" * (3 * _MAX_LOG_LINE)
    assert lines[-1] == "last"
