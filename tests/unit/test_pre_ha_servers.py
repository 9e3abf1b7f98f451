"""server/pre_ha_servers.py on a fake CoreV1Api: an HA leader waits for its release's pre-HA server pods to stop."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from sysops.server.pre_ha_servers import pre_ha_selector, wait_until_no_pre_ha_server_runs

RELEASE = {
    "app.kubernetes.io/name": "sysops",
    "app.kubernetes.io/instance": "rel",
    "app.kubernetes.io/component": "server",
}
HA_POD = {**RELEASE, "sysops.dev/leader-elect": "true"}


class FakePods:
    """The leader's own pod and, per list call, what the selector finds (the old pod stops after `stops_after`)."""

    def __init__(self, own_labels: dict[str, str], old: list[tuple[str, str]], stops_after: int) -> None:
        self.own_labels = own_labels
        self.old = old  # (name, phase)
        self.stops_after = stops_after
        self.selectors: list[str] = []

    def read_namespaced_pod(self, name: str, namespace: str, *, _request_timeout: float) -> Any:
        return SimpleNamespace(metadata=SimpleNamespace(name=name, labels=self.own_labels))

    def list_namespaced_pod(self, namespace: str, *, label_selector: str, _request_timeout: float) -> Any:
        self.selectors.append(label_selector)
        if len(self.selectors) > self.stops_after:
            return SimpleNamespace(items=[])
        pods = [SimpleNamespace(metadata=SimpleNamespace(name=n), status=SimpleNamespace(phase=p)) for n, p in self.old]
        return SimpleNamespace(items=pods)


def test_the_selector_is_the_releases_server_pods_without_the_election_label() -> None:
    assert pre_ha_selector(HA_POD) == (
        "app.kubernetes.io/name=sysops,app.kubernetes.io/instance=rel,app.kubernetes.io/component=server,"
        "!sysops.dev/leader-elect"
    )
    assert pre_ha_selector(RELEASE) is None  # not an HA pod of the chart: nothing to wait for
    assert pre_ha_selector({"sysops.dev/leader-elect": "true"}) is None


def test_the_leader_waits_while_a_pre_ha_server_pod_runs_and_says_which(caplog: pytest.LogCaptureFixture) -> None:
    pods = FakePods(HA_POD, [("rel-sysops-old", "Running"), ("rel-sysops-done", "Succeeded")], stops_after=3)
    with caplog.at_level(logging.INFO, logger="sysops.leader"):
        assert wait_until_no_pre_ha_server_runs(pods, "ns", "rel-sysops-new", timeout=0.01, stop=threading.Event())
    assert len(pods.selectors) == 4  # listed until the old pod was gone
    waits = [r.getMessage() for r in caplog.records if "waiting before serving" in r.getMessage()]
    assert len(waits) == 1 and waits[0].endswith(": rel-sysops-old"), caplog.text  # an ended pod is not waited for
    assert "gone (rel-sysops-old): serving" in caplog.text


def test_no_wait_without_pre_ha_pods_or_for_a_pod_outside_the_chart() -> None:
    pods = FakePods(HA_POD, [], stops_after=0)
    assert wait_until_no_pre_ha_server_runs(pods, "ns", "p", timeout=0.01, stop=threading.Event())
    outside = FakePods({}, [("old", "Running")], stops_after=100)
    assert wait_until_no_pre_ha_server_runs(outside, "ns", "p", timeout=0.01, stop=threading.Event())
    assert outside.selectors == []


def test_stop_ends_the_wait() -> None:
    pods = FakePods(HA_POD, [("old", "Running")], stops_after=10**6)
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    assert not wait_until_no_pre_ha_server_runs(pods, "ns", "p", timeout=0.01, stop=stop)
    timer.join()
