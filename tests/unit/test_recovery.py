"""Reconciliation starts again an instance the engine stopped cleanly (issue 9 item 2: after an engine
restart or a reboot the plugins that were up come back), over the fake driver; the real engine's proof is
tests/integration/test_engine_restart.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sysops.core import recovery
from sysops.core.orchestrator import Orchestrator
from sysops.core.recovery import Verdict, judge
from sysops.errors import RuntimeOperationError
from sysops.runtime.base import InstanceStatus
from sysops.runtime.fake import FakeDriver, _engine_time

from tests.unit.test_rollout import _call, _target

NOW = 1_800_000_000.0


def _stopped(code: int | None, seconds_ago: float = 10.0, **changes: Any) -> InstanceStatus:
    status = InstanceStatus(
        handle="h", name="n", labels={}, running=False, exit_code=code, finished_at=_engine_time(NOW - seconds_ago)
    )
    return dataclasses.replace(status, **changes)


# the rule
@pytest.mark.parametrize("code", [0, 137, 143])
def test_a_clean_stop_is_restarted_after_the_grace(code: int) -> None:
    assert judge(_stopped(code, seconds_ago=1.0), NOW, 0) is Verdict.WAIT
    assert judge(_stopped(code, seconds_ago=recovery.GRACE_SECONDS + 0.1), NOW, 0) is Verdict.RESTART


def test_crashes_and_running_instances_are_the_engines() -> None:
    assert judge(_stopped(1), NOW, 0) is Verdict.LEAVE, "on-failure restarts a crash"
    assert judge(_stopped(137, oom_killed=True), NOW, 0) is Verdict.LEAVE
    assert judge(_stopped(143, restart_count=3), NOW, 0) is Verdict.LEAVE, "the engine gave up on a crash loop"
    assert judge(_stopped(0, restart_count=3), NOW, 0) is Verdict.RESTART, "exit 0 is never a crash"
    assert judge(_stopped(None, running=True), NOW, 0) is Verdict.LEAVE


def test_the_fourth_stop_within_the_window_is_given_up() -> None:
    assert judge(_stopped(0), NOW, 2) is Verdict.RESTART
    assert judge(_stopped(0), NOW, 3) is Verdict.GIVE_UP


# reconciliation, over the fake driver
def _stop_by_engine(orchestrator: Orchestrator, handle: str, exit_code: int = 0, seconds_ago: float = 5.0) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.crash(handle, exit_code=exit_code, seconds_ago=seconds_ago)


def test_reconcile_starts_an_instance_the_engine_stopped_and_says_so(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", _target("echo-v1").manifest.model_dump(mode="json"))
    _stop_by_engine(orchestrator, instance.handle, seconds_ago=1.0)
    orchestrator.reconcile()
    truth = orchestrator.status("echo")
    assert truth.state != "Active" and truth.replicas == "0/1", "within the grace it is stopped, and ls says so"
    assert "exit code 0" in truth.last_error
    _stop_by_engine(orchestrator, instance.handle, seconds_ago=5.0)
    orchestrator.reconcile()
    assert orchestrator.status("echo").state == "Active"
    assert _call(orchestrator, "echo", text="a").text == "v1:a"
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == [instance.handle], "started again in place: same instance, no duplicate"
    assert [i.id for i in orchestrator.store.active_instances("echo")] == [instance.id]
    last = orchestrator.store.events("echo")[-1]
    assert last.kind == "restarted"
    assert last.message == (
        f"instance {instance.id}: the engine stopped it (exit code 0); started again (restart 1 of 3 within 600s)"
    )


def test_a_plugin_down_is_not_undone(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", _target("echo-v1").manifest.model_dump(mode="json"))
    orchestrator.down("echo")
    orchestrator.reconcile()
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == [] and instance.handle not in driver.instances


def test_a_runtime_that_restarts_by_itself_is_left_alone(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    monkeypatch.setattr(FakeDriver, "restarts_stopped_instances", False)
    _stop_by_engine(orchestrator, instance.handle)
    orchestrator.reconcile()
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == []


def test_stopped_again_and_again_it_ends_failed_with_the_reason(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", _target("echo-v1").manifest.model_dump(mode="json"))
    for _ in range(3):
        _stop_by_engine(orchestrator, instance.handle, exit_code=143)
        orchestrator.reconcile()
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.restarted == [instance.handle] * 3
    _stop_by_engine(orchestrator, instance.handle, exit_code=143)
    orchestrator.reconcile()
    assert driver.restarted == [instance.handle] * 3
    status = orchestrator.status("echo")
    assert status.state == "Failed"
    assert status.last_error.startswith("Failed after 3 restarts: the engine stopped it 4 times within 600s")
    assert orchestrator.store.events("echo")[-1].kind == "failed"
    assert instance.handle not in driver.instances and orchestrator.store.routes() == []


def test_each_driver_says_whether_it_applies() -> None:
    from sysops.runtime.docker.driver import DockerDriver
    from sysops.runtime.kubernetes.driver import KubernetesDriver

    assert DockerDriver.restarts_stopped_instances is True, "on-failure leaves an exit 0 stopped"
    assert KubernetesDriver.restarts_stopped_instances is False, "the kubelet restarts it (restartPolicy Always)"


def test_a_start_the_runtime_refuses_counts_and_never_blocks_reconciliation(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", _target("echo-v1").manifest.model_dump(mode="json"))

    def refuse(handle: str, timeout: float) -> None:
        raise RuntimeOperationError("cannot restart container: joining the network of a stopped container")

    monkeypatch.setattr(orchestrator.driver, "restart", refuse)
    _stop_by_engine(orchestrator, instance.handle)
    for _ in range(3):
        orchestrator.reconcile()  # does not raise: `plugin down` and the others still work
    failed = [e.message for e in orchestrator.store.events("echo") if e.kind == "failed"]
    assert len(failed) == 3 and "starting it again failed (attempt 3 of 3 within 600s)" in failed[-1]
    orchestrator.reconcile()
    assert orchestrator.status("echo").state == "Failed"
    assert orchestrator.store.plugin("echo").last_error.startswith("Failed after 3 restarts")  # type: ignore[union-attr]
    orchestrator.down("echo")
