"""Reconciliation never forgets an instance because a listing made from the engine's events trailed its
create: a recorded instance missing from the listing is asked of the engine first (core/orchestrator.py)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from sysops.core.orchestrator import Orchestrator
from sysops.runtime.base import InstanceStatus
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

from tests.unit.conftest import EchoV1
from tests.unit.test_rollout import _target


class _TrailingListing(FakeDriver):
    """A driver whose listing comes from engine events and, for a moment, leaves out one container."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: set[str] = set()

    def follow_engine_events(self, installation: str, stop: threading.Event) -> None:
        """As the Docker driver's: marks the listing as one the engine's events keep."""

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        return [status for status in super().list_instances(labels) if status.handle not in self.hidden]


def test_an_instance_a_trailing_listing_left_out_is_kept(settings: Settings) -> None:
    driver = _TrailingListing()
    driver.add_image("echo-v1", EchoV1)
    orchestrator = Orchestrator(settings, driver)
    try:
        instance = orchestrator.rollout.roll(_target("echo-v1"))
        driver.hidden.add(instance.handle)
        orchestrator.reconcile()
        assert [i.id for i in orchestrator.store.active_instances("echo")] == [instance.id]
        driver.hidden.clear()
        driver.remove(instance.handle)  # really gone: forgotten, as before
        orchestrator.reconcile()
        assert orchestrator.store.active_instances("echo") == []
    finally:
        for handle in list(driver.instances):
            driver.remove(handle)
        orchestrator.close()
