"""The RuntimeDriver protocol (runtime/base.py), checked case by case against every driver.

Each case runs on the fake, the Docker and the Kubernetes driver (conftest.py's `harness`), so what the
core's unit tests learn from the fake holds on the engines. A case a driver does not meet on purpose is
marked for that driver with the reason; everything else must behave the same everywhere.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sysops.core.client import PluginClient
from sysops.errors import SysopsError
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_INSTANCE, LABEL_PLUGIN, StreamCancel
from sysops.runtime.faults import engine_timestamp
from sysops_sdk.wire import EXIT_INITIALIZE

from tests.contract.conftest import BROKEN_REASON, LIMITS, PLUGIN, VERSION, Harness, known_difference

pytestmark = pytest.mark.integration


def test_ping_reaches_the_engine(rig: Harness) -> None:
    rig.driver.ping()


def test_image_id_names_a_present_image_and_is_none_for_a_missing_one(
    rig: Harness, request: pytest.FixtureRequest
) -> None:
    known_difference(request, rig, "kubernetes", "images are resolved on the nodes: image_id() returns any reference")
    assert rig.driver.image_id(rig.image)
    assert rig.driver.image_id(f"sysops-contract/missing-{uuid.uuid4().hex[:8]}:0") is None


def test_a_started_instance_is_listed_with_its_labels_and_running(rig: Harness) -> None:
    spec, started = rig.start()
    assert started.handle and started.name == spec.name
    status = rig.wait_serving(spec, started.handle)
    assert status.running and status.exit_code is None and not status.oom_killed
    assert dict(status.labels).items() >= dict(spec.labels).items()
    [listed] = rig.driver.list_instances({LABEL_INSTANCE: spec.labels[LABEL_INSTANCE]})
    assert listed.handle == started.handle and listed.running
    assert dict(listed.labels).items() >= dict(spec.labels).items()


def test_the_reported_endpoint_answers_health_and_describe(rig: Harness) -> None:
    spec, started = rig.start()
    status = rig.wait_serving(spec, started.handle)
    with PluginClient(rig.endpoint(spec, status), PLUGIN, rig.token(spec, status)) as client:
        assert client.health(timeout=2.0) == "SERVING"
        descriptor = client.describe()
    assert (descriptor.name, descriptor.version) == (PLUGIN, VERSION)
    assert [command.name for command in descriptor.commands] == ["echo"]


def test_list_filters_by_installation(rig: Harness) -> None:
    other = f"other{uuid.uuid4().hex[:7]}"
    _, started = rig.start()
    _, other_started = rig.start(rig.spec(installation=other))
    ours = rig.driver.list_instances({LABEL_INSTALLATION: rig.installation, LABEL_PLUGIN: PLUGIN})
    theirs = rig.driver.list_instances({LABEL_INSTALLATION: other})
    assert [s.handle for s in ours] == [started.handle]
    assert [s.handle for s in theirs] == [other_started.handle]
    assert rig.driver.list_instances({LABEL_INSTALLATION: rig.installation, LABEL_PLUGIN: "no-such-plugin"}) == []


def test_stop_ends_the_instance_and_remove_forgets_it(rig: Harness) -> None:
    spec, started = rig.start()
    rig.wait_serving(spec, started.handle)
    rig.driver.stop(started.handle, timeout=5)
    if rig.driver.name != "kubernetes":  # a stopped pod is deleted, not kept as a stopped container
        rig.wait_for(lambda: _stopped(rig, started.handle), "the stopped instance to report not running")
        stopped = rig.driver.inspect(started.handle)
        assert stopped is not None and stopped.exit_code == 0, stopped
    rig.driver.remove(started.handle)
    rig.wait_for(lambda: rig.driver.inspect(started.handle) is None, "the removed instance to be gone")
    assert rig.driver.list_instances({LABEL_INSTANCE: spec.labels[LABEL_INSTANCE]}) == []


def _stopped(rig: Harness, handle: str) -> bool:
    status = rig.driver.inspect(handle)
    return status is not None and not status.running


def test_remove_is_idempotent_and_inspect_of_an_unknown_handle_is_none(rig: Harness) -> None:
    _, started = rig.start()
    rig.driver.remove(started.handle)
    rig.driver.remove(started.handle)
    rig.driver.remove(f"sysops-contract-missing-{uuid.uuid4().hex[:8]}")
    rig.wait_for(lambda: rig.driver.inspect(started.handle) is None, "the removed instance to be gone")
    assert rig.driver.inspect(f"sysops-contract-missing-{uuid.uuid4().hex[:8]}") is None


def test_logs_carry_the_plugin_servers_start_line(rig: Harness) -> None:
    spec, started = rig.start()
    rig.wait_serving(spec, started.handle)
    rig.wait_for(
        lambda: any(f"{PLUGIN} {VERSION} serving on" in line for line in rig.driver.logs(started.handle)),
        "the serving line in the logs",
    )
    lines = list(rig.driver.logs(started.handle, tail=1))
    assert len(lines) == 1, lines
    assert list(rig.driver.logs(started.handle, tail=0)) == []
    assert list(rig.driver.logs(f"sysops-contract-missing-{uuid.uuid4().hex[:8]}")) == []


def test_resources_read_back_the_limits_in_the_manifests_keys(rig: Harness, request: pytest.FixtureRequest) -> None:
    known_difference(
        request, rig, "kubernetes", "applied limits are quantities under cpu/memory/data, not manifest keys"
    )
    spec, started = rig.start()
    rig.wait_serving(spec, started.handle)
    report = rig.driver.resources(started.handle, LIMITS)
    assert report.mismatches == ()
    assert report.applied["cpu_percent"] == 50
    assert report.applied["memory_mb"] == 128
    assert report.applied["pids"] == 64


def test_remove_labelled_removes_only_the_labelled_instances(rig: Harness) -> None:
    _, started = rig.start()
    _, kept = rig.start(rig.spec(extra_labels={"sysops.contract": "keep"}))
    doomed = rig.spec(extra_labels={"sysops.contract": "doomed"})
    _, removed = rig.start(doomed)
    assert rig.driver.remove_labelled({LABEL_INSTALLATION: rig.installation, "sysops.contract": "doomed"}) >= 1
    rig.wait_for(lambda: rig.driver.inspect(removed.handle) is None, "the labelled instance to be gone")
    assert rig.driver.inspect(started.handle) is not None and rig.driver.inspect(kept.handle) is not None


def test_status_names_the_image_the_instance_was_created_from(rig: Harness, request: pytest.FixtureRequest) -> None:
    known_difference(request, rig, "kubernetes", "the pod's status does not report its image (InstanceStatus.image '')")
    spec, started = rig.start()
    status = rig.wait_serving(spec, started.handle)
    assert status.image == rig.driver.image_id(rig.image)


def test_calls_but_health_need_the_instance_token(rig: Harness) -> None:
    spec, started = rig.start()
    status = rig.wait_serving(spec, started.handle)
    with PluginClient(rig.endpoint(spec, status), PLUGIN, "not-the-token") as client:
        assert client.health(timeout=2.0) == "SERVING"
        with pytest.raises(SysopsError, match=r"UNAUTHENTICATED|PERMISSION_DENIED|token|denied"):
            client.describe()


def test_a_stopped_instance_is_listed_until_removed(rig: Harness) -> None:
    if rig.driver.name == "kubernetes":
        pytest.skip("kubernetes stop() deletes the pod (a pod is not kept stopped)")
    spec, started = rig.start()
    rig.wait_serving(spec, started.handle)
    rig.driver.stop(started.handle, timeout=5)
    [listed] = rig.driver.list_instances({LABEL_INSTANCE: spec.labels[LABEL_INSTANCE]})
    assert listed.handle == started.handle and not listed.running


def test_status_times_when_the_instance_started_and_stopped(rig: Harness) -> None:
    before = time.time()
    spec, started = rig.start()
    status = rig.wait_serving(spec, started.handle)
    began = engine_timestamp(status.started_at)
    assert began is not None and before - 2 <= began <= time.time() + 2, status.started_at
    if rig.driver.name == "kubernetes":
        return  # stop() deletes the pod: there is no stopped instance to ask
    rig.driver.stop(started.handle, timeout=5)
    rig.wait_for(lambda: _stopped(rig, started.handle), "the stopped instance to report not running")
    stopped = rig.driver.inspect(started.handle)
    assert stopped is not None
    ended = engine_timestamp(stopped.finished_at)
    assert ended is not None and began <= ended <= time.time() + 2, stopped.finished_at


def test_restart_keeps_the_handle_endpoint_and_token(rig: Harness, request: pytest.FixtureRequest) -> None:
    known_difference(request, rig, "kubernetes", "restart() is refused: the kubelet's livenessProbe restarts pods")
    spec, started = rig.start()
    before = rig.wait_serving(spec, started.handle)
    rig.driver.restart(started.handle, timeout=5)
    after = rig.wait_serving(spec, started.handle)
    assert (after.handle, after.name, rig.endpoint(spec, after)) == (
        before.handle,
        before.name,
        rig.endpoint(spec, before),
    )
    assert dict(after.labels) == dict(before.labels)
    assert [s.handle for s in rig.driver.list_instances({LABEL_INSTANCE: spec.labels[LABEL_INSTANCE]})] == [
        started.handle
    ]


def test_a_failing_initialize_exits_with_its_code_and_logs_why(rig: Harness) -> None:
    _, started = rig.start(rig.spec(image=rig.broken_image))

    def exited() -> bool:
        status = rig.driver.inspect(started.handle)
        return status is not None and not status.running and status.exit_code == EXIT_INITIALIZE

    rig.wait_for(exited, f"the instance to exit with code {EXIT_INITIALIZE}")
    why = f"initialize() of plugin {PLUGIN!r} failed: RuntimeError: {BROKEN_REASON}"
    rig.wait_for(lambda: any(why in line for line in rig.driver.logs(started.handle)), "the failure in the logs")


def test_a_log_follow_runs_until_cancelled(rig: Harness) -> None:
    spec, started = rig.start()
    rig.wait_serving(spec, started.handle)
    cancel = StreamCancel()
    seen: list[str] = []
    follower = threading.Thread(
        target=lambda: seen.extend(rig.driver.logs(started.handle, follow=True, cancel=cancel)), daemon=True
    )
    follower.start()
    time.sleep(1.0)
    assert follower.is_alive(), f"the follow ended by itself: {seen}"
    cancel.cancel()
    follower.join(5)
    assert not follower.is_alive(), "the follow did not end when cancelled"
    assert any(f"{PLUGIN} {VERSION} serving on" in line for line in seen), seen
