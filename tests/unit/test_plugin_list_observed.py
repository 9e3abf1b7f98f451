"""`plugin ls` with many plugins (issue 15 item 3): the engine and health checks of every active instance are
asked side by side (core/observations.py), and the listing says what `status` of each plugin says."""

from __future__ import annotations

import threading

import pytest
from sysops.core import observations
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.runtime.base import InstanceStatus
from sysops.runtime.fake import FakeDriver


def _roll_replicas(orchestrator: Orchestrator, replicas: int) -> None:
    data = {"name": "echo", "version": "1.0.0", "entrypoint": "x:Y", "replicas": replicas}
    manifest = parse_manifest(data, "test")
    orchestrator.rollout.roll(RollTarget(manifest, "echo-v1", "echo-v1", "fp-echo-v1", "/src/echo"))
    orchestrator.store.save_plugin("echo", "/src/echo", "fake", manifest.model_dump(mode="json"))


def test_list_observes_the_instances_side_by_side(orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    _roll_replicas(orchestrator, 3)
    assert len(orchestrator.store.active_instances("echo")) == 3
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    together = threading.Barrier(3, timeout=10)  # passes only if three inspects are in progress at once
    real_inspect = driver.inspect

    def inspect_together(handle: str) -> InstanceStatus | None:
        together.wait()
        return real_inspect(handle)

    monkeypatch.setattr(driver, "inspect", inspect_together)
    (listed,) = orchestrator.list()
    assert not together.broken
    monkeypatch.setattr(driver, "inspect", real_inspect)
    alone = orchestrator.status("echo")
    assert (listed.state, listed.health, listed.replicas, listed.missing) == (
        alone.state,
        alone.health,
        alone.replicas,
        alone.missing,
    )
    assert listed.health == "SERVING" and listed.replicas == "3/3"


def test_an_instance_that_stopped_is_listed_as_not_serving(orchestrator: Orchestrator) -> None:
    _roll_replicas(orchestrator, 2)
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    first, second = orchestrator.store.active_instances("echo")
    driver.stop(first.handle, 1.0)
    seen = observations.observe_all(driver, [first, second])
    assert seen[second.id][1] is True
    status, healthy = seen[first.id]
    assert not healthy and (status is None or not status.running)
    assert orchestrator.list()[0].replicas == "1/2"
