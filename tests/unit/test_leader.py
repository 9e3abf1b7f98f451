"""server/leader.py on a fake CoordinationV1Api: contention, expiry takeover, update conflicts, release, loss."""

from __future__ import annotations

import copy
import re
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sysops.server.leader import RENEW_SECONDS, LeaderElector, become_leader, lease_name
from sysops.server.leader_label import LEADER_LABEL

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class FakeLeases:
    """Leases in one namespace with resourceVersions: create is 409 when it exists, replace 409 when stale."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.before_replace: Callable[[], None] | None = None
        self.failing = False
        self.writes = 0
        self.timeouts: list[float] = []

    def _check(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        if self.failing:
            raise ApiException(status=500, reason="Internal Server Error")

    def read_namespaced_lease(self, name: str, namespace: str, *, _request_timeout: float) -> dict[str, Any]:
        self._check(_request_timeout)
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.leases[name])

    def _store(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = stored
        return copy.deepcopy(stored)

    def create_namespaced_lease(
        self, namespace: str, body: dict[str, Any], *, _request_timeout: float
    ) -> dict[str, Any]:
        self._check(_request_timeout)
        name = body["metadata"]["name"]
        if name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        assert "resourceVersion" not in body["metadata"]
        return self._store(name, body)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any], *, _request_timeout: float
    ) -> dict[str, Any]:
        self._check(_request_timeout)
        if self.before_replace is not None:
            hook, self.before_replace = self.before_replace, None
            hook()
        if body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(name, body)

    def spec(self, name: str = "sysops-leader") -> dict[str, Any]:
        spec: dict[str, Any] = self.leases[name]["spec"]
        return spec


class FakePods:
    """Pod label patches (merge patches of sysops.dev/leader), in order; `failing` makes the next ones fail."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []
        self.failing = 0

    def patch_namespaced_pod(
        self, name: str, namespace: str, body: Any, *, _content_type: str, _request_timeout: float
    ) -> None:
        assert _content_type == "application/merge-patch+json" and _request_timeout <= 2.0
        if self.failing:
            self.failing -= 1
            raise ApiException(status=500, reason="Internal Server Error")
        self.patches.append((name, body["metadata"]["labels"][LEADER_LABEL]))

    def read_namespaced_pod(self, name: str, namespace: str, *, _request_timeout: float) -> Any:
        return SimpleNamespace(metadata=SimpleNamespace(name=name, labels={}))  # not an HA pod of the chart

    def list_namespaced_pod(self, namespace: str, *, label_selector: str, _request_timeout: float) -> Any:
        raise AssertionError("not listed for a pod without the election label")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> FakeLeases:
    return FakeLeases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elector(api: FakeLeases, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(api, "ns", "sysops-leader", identity, clock=clock)


def test_the_first_candidate_creates_the_lease_and_the_second_stays_standby(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew() and a.is_leader
    spec = api.spec()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("pod-a", 10, 0)
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert not b.try_acquire_or_renew() and not b.is_leader
    assert b.last_holder == "pod-a"


def test_a_renewing_leader_is_never_taken_over(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew()
    acquired = api.spec()["acquireTime"]
    for _ in range(20):  # 40 s of renewals every 2 s
        clock.now += 2
        assert a.renew_once()
        assert not b.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "pod-a" and api.spec()["acquireTime"] == acquired


def test_an_expired_lease_is_taken_over_after_its_duration_on_the_standbys_clock(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew()  # then pod-a stops renewing (its node died)
    assert not b.try_acquire_or_renew()
    clock.now += 9.9
    assert not b.try_acquire_or_renew()
    clock.now += 0.1
    assert b.try_acquire_or_renew()
    assert (api.spec()["holderIdentity"], api.spec()["leaseTransitions"]) == ("pod-b", 1)
    assert not a.renew_once()  # the old leader learns it lost the lease


def test_two_candidates_taking_an_expired_lease_at_once_only_one_wins(api: FakeLeases, clock: Clock) -> None:
    a, b, c = elector(api, clock, "pod-a"), elector(api, clock, "pod-b"), elector(api, clock, "pod-c")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    clock.now += 10
    # c writes between b's read and b's update: b's update carries a stale resourceVersion (409).
    api.before_replace = lambda: c.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert c.is_leader and not b.is_leader
    assert api.spec()["holderIdentity"] == "pod-c"


def test_a_conflict_on_renewal_is_retried_not_fatal(api: FakeLeases, clock: Clock) -> None:
    a = elector(api, clock, "pod-a")
    assert a.try_acquire_or_renew()

    def touch() -> None:  # someone bumps the object (e.g. a label edit) between read and update
        api.leases["sysops-leader"]["metadata"]["resourceVersion"] = "999"

    api.before_replace = touch
    clock.now += 2
    assert a.renew_once()  # the 409 is one failed try within the deadline
    clock.now += 2
    assert a.renew_once() and api.spec()["holderIdentity"] == "pod-a"


def test_creating_races_with_another_creator(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    original = api.read_namespaced_lease

    def read_then_b_creates(name: str, namespace: str, *, _request_timeout: float) -> dict[str, Any]:
        api.read_namespaced_lease = original  # type: ignore[method-assign]
        try:
            return original(name, namespace, _request_timeout=_request_timeout)
        finally:
            assert b.try_acquire_or_renew()

    api.read_namespaced_lease = read_then_b_creates  # type: ignore[method-assign]
    assert not a.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "pod-b"


def test_release_lets_the_standby_take_over_at_once(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.renew_once() and not b.try_acquire_or_renew()  # the standby has seen the leader renew
    assert a.release() and not a.is_leader
    spec = api.spec()
    assert spec.get("holderIdentity") is None and spec["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()  # no time passed
    assert api.spec()["holderIdentity"] == "pod-b"


def test_a_released_lease_goes_to_the_standby_that_watched_the_leader_not_to_a_pod_that_just_started(
    api: FakeLeases, clock: Clock
) -> None:
    """The Deployment's replacement of a deleted leader polls the Lease as soon as it starts: a released Lease is left
    to the standby (two of its tries), so the warm standby leads, not whichever pod asked first."""
    leader, standby = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    assert leader.renew_once() and not standby.try_acquire_or_renew()  # the standby has seen the leader renew
    replacement = elector(api, clock, "pod-c")
    assert not replacement.try_acquire_or_renew()  # first read while the leader drains: its name, no renewal
    assert leader.release()
    assert not replacement.try_acquire_or_renew()  # released: left to the standby, which saw the leader renew
    clock.now += 2 * RENEW_SECONDS - 0.1
    assert not replacement.try_acquire_or_renew()
    assert standby.try_acquire_or_renew()  # its next try
    assert api.spec()["holderIdentity"] == "pod-b"
    assert not replacement.try_acquire_or_renew()


def test_with_no_standby_a_new_pod_takes_a_released_lease_after_two_renew_periods(
    api: FakeLeases, clock: Clock
) -> None:
    leader = elector(api, clock, "pod-a")
    assert leader.try_acquire_or_renew() and leader.release()
    replacement = elector(api, clock, "pod-c")
    assert not replacement.try_acquire_or_renew()
    clock.now += 2 * RENEW_SECONDS
    assert replacement.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "pod-c"


def test_a_leader_that_never_saw_another_takes_back_a_lease_whose_holder_was_cleared(
    api: FakeLeases, clock: Clock
) -> None:
    """The wait for a standby is for candidates only: the leader (it created the Lease, so it never saw another
    holder) renews a Lease whose holder someone cleared, and goes on leading."""
    leader = elector(api, clock, "pod-a")
    assert leader.try_acquire_or_renew()
    api.spec()["holderIdentity"] = None
    assert leader.renew_once() and leader.is_leader
    assert api.spec()["holderIdentity"] == "pod-a"


def test_release_of_a_lease_we_do_not_hold_changes_nothing(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew()
    writes = api.writes
    assert not b.release()
    assert api.writes == writes and api.spec()["holderIdentity"] == "pod-a"


def test_a_restarted_container_of_the_leader_pod_takes_its_own_lease_at_once(api: FakeLeases, clock: Clock) -> None:
    assert elector(api, clock, "pod-a").try_acquire_or_renew()
    restarted = elector(api, clock, "pod-a")  # same pod name, new process
    assert restarted.try_acquire_or_renew()
    assert api.spec()["leaseTransitions"] == 0


def test_renewal_failing_past_the_deadline_loses_the_lease_before_it_expires(api: FakeLeases, clock: Clock) -> None:
    a = elector(api, clock, "pod-a")
    assert a.try_acquire_or_renew()
    api.failing = True
    for _ in range(3):
        clock.now += 2
        assert a.renew_once()  # 2, 4, 6 s without a renewal: still within the deadline
    clock.now += 2
    assert not a.renew_once() and not a.is_leader  # 8 s: gives up, 2 s before anyone may take it
    api.failing = False
    assert not a.renew_once()  # once lost, stays lost (the process exits)


def test_keep_renewing_calls_on_lost_when_another_holder_takes_it(api: FakeLeases) -> None:
    a = LeaderElector(api, "ns", "sysops-leader", "pod-a", renew_seconds=0.01)
    assert a.try_acquire_or_renew()
    lost = threading.Event()
    stop = threading.Event()
    thread = a.keep_renewing(stop, lost.set)
    assert not lost.wait(0.2)  # renewing fine
    api.leases["sysops-leader"]["spec"]["holderIdentity"] = "pod-b"
    api.leases["sysops-leader"]["metadata"]["resourceVersion"] = "500"
    assert lost.wait(5)
    thread.join(5)
    stop.set()


def test_wait_for_leadership_blocks_until_the_holder_releases(api: FakeLeases) -> None:
    a = LeaderElector(api, "ns", "sysops-leader", "pod-a", renew_seconds=0.01)
    b = LeaderElector(api, "ns", "sysops-leader", "pod-b", renew_seconds=0.01)
    assert a.try_acquire_or_renew()
    won = threading.Event()
    waiter = threading.Thread(target=lambda: b.wait_for_leadership(threading.Event()) and won.set(), daemon=True)
    waiter.start()
    assert not won.wait(0.3)
    a.release()
    assert won.wait(5)
    waiter.join(5)
    assert api.spec()["holderIdentity"] == "pod-b"


def test_wait_for_leadership_returns_false_when_stopped(api: FakeLeases, clock: Clock) -> None:
    assert elector(api, clock, "pod-a").try_acquire_or_renew()
    stop = threading.Event()
    stop.set()
    assert not elector(api, clock, "pod-b").wait_for_leadership(stop)


def test_become_leader_opens_the_liveness_port_first_and_leads_under_the_services_lease(
    api: FakeLeases, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SYSOPS_LIVENESS_PORT", str(port))
    monkeypatch.setenv("SYSOPS_SERVER_SERVICE", "rel-sysops")
    monkeypatch.setenv("SYSOPS_NAMESPACE", "ns")
    monkeypatch.setenv("POD_NAME", "rel-sysops-abc")
    api.leases["rel-sysops-leader"] = {
        "metadata": {"name": "rel-sysops-leader", "resourceVersion": "1"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 10},
    }
    stop = threading.Event()
    pods = FakePods()
    standby = threading.Thread(target=lambda: become_leader(stop, api, pods), daemon=True)
    standby.start()
    wait_until(lambda: _connects(port))  # alive while standby, though it leads nothing
    wait_until(lambda: bool(pods.patches))
    assert standby.is_alive()
    stop.set()
    standby.join(5)
    assert not standby.is_alive() and api.spec("rel-sysops-leader")["holderIdentity"] == "other"
    assert pods.patches == [("rel-sysops-abc", None)]  # a standby's pod never carries the leader label


def test_become_leader_returns_the_renewing_elector(api: FakeLeases, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSOPS_LIVENESS_PORT", raising=False)
    monkeypatch.setenv("POD_NAME", "pod-a")
    stop = threading.Event()
    pods = FakePods()
    pods.failing = 1  # retried
    original = api.create_namespaced_lease

    def create(namespace: str, body: dict[str, Any], *, _request_timeout: float) -> dict[str, Any]:
        assert pods.patches == [("pod-a", None)]  # the label is removed before the Lease is tried
        return original(namespace, body, _request_timeout=_request_timeout)

    monkeypatch.setattr(api, "create_namespaced_lease", create)
    elector = become_leader(stop, api, pods)
    assert elector is not None and elector.is_leader and elector.name == lease_name()
    assert pods.patches == [("pod-a", None), ("pod-a", "true")]  # labelled once leading, before it returns
    stop.set()
    assert elector.release()


def test_every_lease_call_has_a_request_timeout_no_longer_than_the_renew_period(api: FakeLeases, clock: Clock) -> None:
    a, b = elector(api, clock, "pod-a"), elector(api, clock, "pod-b")
    assert a.try_acquire_or_renew() and a.renew_once() and not b.try_acquire_or_renew() and a.release()
    assert len(api.timeouts) >= 7 and all(0 < timeout <= a.renew_seconds for timeout in api.timeouts)


def test_a_renewal_counts_from_when_it_was_sent_not_when_it_was_answered(api: FakeLeases, clock: Clock) -> None:
    """The two-leaders case: a renewal sent at t=2 and answered at t=9 must not let the leader believe it holds the
    Lease past t=2+10 (a standby saw the write at about t=2 and takes over 10 s later on its own clock)."""
    start = clock.now
    a = elector(api, clock, "pod-a")
    assert a.try_acquire_or_renew()
    clock.now = start + 2

    def answer_late() -> None:
        clock.now = start + 9

    api.before_replace = answer_late
    assert a.renew_once()
    api.failing = True
    clock.now = start + 2 + a.renew_deadline_seconds  # 8 s after the renewal was sent, not after its answer
    assert not a.renew_once() and not a.is_leader
    assert a.overdue(start + 2) is False or clock.now - (start + 2) > a.lease_seconds - 1


def test_the_watchdog_exits_while_the_renew_thread_is_stuck_in_a_call(api: FakeLeases) -> None:
    fake_now = [1000.0]
    a = LeaderElector(api, "ns", "sysops-leader", "pod-a", renew_seconds=0.05, clock=lambda: fake_now[0])
    assert a.try_acquire_or_renew()
    stuck, stop, lost, overdue = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    api.before_replace = lambda: stuck.wait(30)  # the next renewal hangs (no request timeout in the fake)
    a.keep_renewing(stop, lost.set)
    a.start_watchdog(stop, overdue.set)
    fake_now[0] += a.lease_seconds - 1.5  # below lease - margin: no exit yet
    assert not overdue.wait(0.6)
    fake_now[0] += 0.6  # 9.1 s since the last renewal was sent: past lease - margin
    assert overdue.wait(5) and not lost.is_set()  # the renew thread is still stuck; the watchdog acted
    stuck.set()
    stop.set()


def test_the_exit_on_a_lost_lease_makes_no_api_call(
    api: FakeLeases, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sysops.server import leader

    a = elector(api, clock, "pod-a")
    assert a.try_acquire_or_renew()
    calls = len(api.timeouts)
    exits: list[int] = []
    monkeypatch.setattr(leader.os, "_exit", exits.append)
    leader._exit_lost(a, "test")
    assert exits == [5] and len(api.timeouts) == calls


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)
