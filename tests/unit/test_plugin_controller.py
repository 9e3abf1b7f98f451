"""The server's Plugin controller (server/plugin_controller.py) over the fake driver and an in-memory Plugin API:
a changed spec is rolled (or rolled back to) without the CLI, a failed spec rolls back, says why in the status
and is not tried again, the server's own writes are no change, a deleted object is forgotten, and handling a
change reads nothing of any other plugin."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import Policy
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN, InstanceStatus
from sysops.runtime.fake import FakeDriver
from sysops.runtime.kubernetes.informer import DELETED, MODIFIED, SYNC
from sysops.runtime.kubernetes.plugin_resource import PluginApi, PluginResourceMirror, SpecConflict
from sysops.runtime.kubernetes.pod_faults import pod_fault
from sysops.server.plugin_controller import PluginController, decide
from sysops.settings import Settings
from sysops.store import RevisionRecord
from sysops_sdk import Plugin

from tests.unit.conftest import BrokenInit, EchoV1, EchoV2


class MemoryPlugins(PluginApi):
    """Plugin objects in a dict, with the API server's generation rule: a spec change bumps it, status does not."""

    def __init__(self) -> None:
        super().__init__("test", custom=object())
        self.objects: dict[str, dict[str, Any]] = {}
        self.uids = 0
        self.versions = 0

    def get(self, name: str) -> dict[str, Any] | None:
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body["metadata"]["name"])
        self.uids += 1
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("labels", {})[LABEL_INSTALLATION] = self.installation_id  # as PluginApi.create
        obj["metadata"].update(uid=f"uid-{self.uids}", generation=1)
        self._changed(obj)
        self.objects.setdefault(name, obj)
        return copy.deepcopy(self.objects[name])

    def replace_spec(self, name: str, spec: Mapping[str, Any], resource_version: str = "") -> dict[str, Any]:
        obj = self.objects[name]
        if resource_version and resource_version != obj["metadata"]["resourceVersion"]:
            raise SpecConflict(f"Plugin {name} changed since version {resource_version}")
        if obj.get("spec") != spec:
            obj["spec"] = copy.deepcopy(dict(spec))
            obj["metadata"]["generation"] += 1
        self._changed(obj)
        return copy.deepcopy(obj)

    def _changed(self, obj: dict[str, Any]) -> None:
        self.versions += 1
        obj["metadata"]["resourceVersion"] = str(self.versions)

    def patch_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        obj = self.objects.get(name)
        if obj is None:
            return None
        self._changed(obj)
        current = obj.setdefault("status", {})
        for key, value in status.items():  # a merge patch: "" is sent as null, which removes the field
            if value in ("", None):
                current.pop(key, None)
            else:
                current[key] = copy.deepcopy(value)
        return copy.deepcopy(obj)

    def delete(self, name: str) -> None:
        self.objects.pop(name, Policy())

    def list(self, **options: Any) -> dict[str, Any]:
        return {"items": [copy.deepcopy(o) for o in self.objects.values()], "metadata": {"resourceVersion": "1"}}

    def kubectl_apply(self, name: str, **changes: Any) -> dict[str, Any]:
        """What `kubectl apply` of an edited spec does."""
        return self.replace_spec(name, {**self.objects[name]["spec"], **changes})


def _manifest(version: str, **extra: Any) -> Manifest:
    data = {"name": "echo", "version": version, "entrypoint": "x:Y", "limits": {"cpu_percent": 10, "memory_mb": 64}}
    return parse_manifest({**data, **extra}, "test")


class Spy(FakeDriver):
    """The fake driver, recording the labels of every listing."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[dict[str, str]] = []

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        self.listed.append(dict(labels))
        return super().list_instances(labels)


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[PluginController, MemoryPlugins, Spy, Orchestrator]]:
    driver = Spy()
    images: dict[str, type[Plugin]] = {"echo-v1": EchoV1, "echo-v2": EchoV2, "broken": BrokenInit}
    for image, plugin_class in images.items():
        driver.add_image(image, plugin_class)
    api = MemoryPlugins()
    mirror = PluginResourceMirror("test", api=api)
    cli = Orchestrator(settings, driver, mirror=mirror)
    controller = PluginController(lambda: Orchestrator(settings, driver, mirror=mirror), api, settings.installation_id)
    yield controller, api, driver, cli
    for handle in list(driver.instances):
        driver.remove(handle)
    cli.close()


def _serving(orchestrator: Orchestrator) -> tuple[int, str]:
    [instance] = orchestrator.store.active_instances("echo")
    return instance.revision, instance.version


def _changed(controller: PluginController, api: MemoryPlugins) -> None:
    """Deliver the object's MODIFIED event and handle what it queued, as a worker would."""
    controller.on_plugin(MODIFIED, api.objects["echo"])
    for name, what in list(controller._pending.items()):
        controller._pending.pop(name)
        controller.handle(name, what)


def test_a_cli_roll_marks_its_own_spec_observed(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    obj = api.objects["echo"]
    assert obj["spec"]["image"] == "echo-v1" and obj["spec"]["revision"] == 1
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert (obj["status"]["phase"], obj["status"]["readyReplicas"], obj["status"]["revision"]) == ("Active", 1, 1)
    controller.on_plugin(MODIFIED, obj)
    assert controller._pending == {}  # the server's own write is no change to roll


def test_an_applied_image_and_manifest_roll_without_the_cli(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    api.kubectl_apply("echo", image="echo-v2", manifest=_manifest("2.0.0").model_dump(mode="json"), revision=0)
    _changed(controller, api)
    assert _serving(cli) == (2, "2.0.0")
    obj = api.objects["echo"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert (obj["status"]["phase"], obj["status"]["revision"]) == ("Active", 2)
    assert "lastFault" not in obj["status"]


def test_an_applied_revision_is_rolled_back_to(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    cli.up_image(_manifest("2.0.0"), "echo-v2", "fp2", "/src/echo")
    api.kubectl_apply("echo", revision=1)  # only the revision edited: image and manifest still say revision 2's
    _changed(controller, api)
    assert _serving(cli) == (1, "1.0.0")
    assert api.objects["echo"]["status"]["revision"] == 1


def test_a_failing_spec_rolls_back_says_why_and_is_not_tried_again(world: Any) -> None:
    controller, api, driver, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    api.kubectl_apply("echo", image="broken", manifest=_manifest("3.0.0").model_dump(mode="json"), revision=0)
    _changed(controller, api)
    assert _serving(cli) == (1, "1.0.0")
    obj = api.objects["echo"]
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert "database unreachable" in status["lastFault"]
    assert status["phase"] == "Active" and status["revision"] == 1
    assert any(c["type"] == "Degraded" and "database unreachable" in c["message"] for c in status["conditions"])
    starts = len(driver.started_specs)
    _changed(controller, api)  # a resync or a status write: the same generation is not tried again
    assert len(driver.started_specs) == starts


def test_an_invalid_manifest_is_refused_in_the_status(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    api.kubectl_apply("echo", image="echo-v2", manifest={"name": "echo", "version": "not a version"})
    _changed(controller, api)
    assert _serving(cli) == (1, "1.0.0")
    assert "version" in api.objects["echo"]["status"]["lastFault"]
    assert api.objects["echo"]["status"]["observedGeneration"] == api.objects["echo"]["metadata"]["generation"]


def test_a_deleted_object_is_forgotten(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    obj = api.objects["echo"]
    api.delete("echo")
    controller.on_plugin(DELETED, obj)
    controller.handle("echo", controller._pending.pop("echo"))
    assert cli.store.plugin("echo") is None and cli.store.revisions("echo") == []
    assert cli.store.routes() == []


def test_a_change_reads_only_the_plugin_it_names(world: Any) -> None:
    controller, api, driver, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    api.kubectl_apply("echo", image="echo-v2", manifest=_manifest("2.0.0").model_dump(mode="json"), revision=0)
    driver.listed.clear()
    _changed(controller, api)
    assert driver.listed and all(labels.get(LABEL_PLUGIN) == "echo" for labels in driver.listed)


def test_decide_from_the_spec_and_what_serves() -> None:
    revisions = {
        n: RevisionRecord(
            "echo", n, f"{n}.0.0", f"img{n}", f"img{n}", "fp", _manifest(f"{n}.0.0").model_dump(mode="json"), 0
        )
        for n in (1, 2)
    }

    def obj(generation: int = 2, observed: int = 1, **spec: Any) -> dict[str, Any]:
        return {"metadata": {"generation": generation}, "spec": spec, "status": {"observedGeneration": observed}}

    manifest2 = revisions[2].manifest
    assert decide(obj(observed=2, image="img9"), 2, revisions, Policy()).action == "none"
    assert decide(obj(image="img2", manifest=manifest2, revision=2), 2, revisions, Policy()).action == "none"
    assert decide(obj(image="img2", manifest=manifest2, revision=1), 2, revisions, Policy()).revision == 1
    assert decide(obj(image="img9", manifest=manifest2), 2, revisions, Policy()).action == "up"
    changed = {**manifest2, "description": "changed"}
    assert decide(obj(image="img2", manifest=changed), 2, revisions, Policy()).action == "up"
    assert decide(obj(revision=7), 2, revisions, Policy()).action == "none"
    assert decide(obj(), 0, {}, Policy()).action == "none"  # an owner created before its first roll


def test_pod_fault_names_what_the_kubelet_saw_as_the_call_path_does() -> None:
    def pod(restarts: int, last: dict[str, Any]) -> dict[str, Any]:
        spec = {"containers": [{"resources": {"limits": {"memory": "64Mi"}}}]}
        statuses = [{"restartCount": restarts, "state": {"running": {}}, "lastState": {"terminated": last}}]
        return {"spec": spec, "status": {"phase": "Running", "containerStatuses": statuses}}

    oom = pod(2, {"reason": "OOMKilled", "exitCode": 137})
    assert pod_fault(oom) == "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit), restarted 2 times"
    record = "unresponsive: 2 liveness probes in a row found no SERVING answer within 5s"
    liveness = pod(1, {"reason": "Error", "exitCode": 137, "message": record + "\n"})
    assert pod_fault(liveness) == f"{record}, restarted 1 time"  # said 'Error: exit code 137' before
    assert (
        pod_fault(pod(3, {"reason": "Error", "exitCode": 3})) == "crashed, restarted 3 times (last exit code unknown)"
    )
    assert pod_fault({"status": {"containerStatuses": [{"restartCount": 0, "state": {"running": {}}}]}}) == ""


def test_the_object_deleted_by_plugin_down_keeps_the_revisions(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    obj = api.objects["echo"]
    cli.down("echo")  # deletes the object itself; the revisions stay for a later start
    controller.on_plugin(DELETED, obj)
    controller.handle("echo", controller._pending.pop("echo"))
    assert [r.revision for r in cli.store.revisions("echo")] == [1]


def test_a_pod_being_deleted_is_no_fault_of_its_plugin(world: Any) -> None:
    controller, _, _, _ = world
    killed = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    labels = {LABEL_PLUGIN: "echo", "sysops.installation": controller.installation_id}

    def pod(name: str, **metadata: Any) -> dict[str, Any]:
        statuses = [{"restartCount": 0, "state": killed}]
        spec = {"containers": [{"resources": {"limits": {"memory": "64Mi"}}}]}
        status = {"containerStatuses": statuses}
        return {"metadata": {"name": name, "labels": labels, **metadata}, "spec": spec, "status": status}

    controller.on_pod(MODIFIED, pod("old", deletionTimestamp="2026-12-03T12:00:00Z"))  # stopped by a roll
    controller.on_pod(MODIFIED, pod("other", labels={**labels, "sysops.installation": "another"}))
    assert controller._faults.get("echo", {}) == {}
    controller.on_pod(MODIFIED, pod("new"))
    assert controller._faults["echo"] == {"new": "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit)"}
    controller.on_pod(DELETED, pod("new"))
    assert controller._faults["echo"] == {}


def test_a_resync_skips_a_plugin_whose_pods_did_not_change(world: Any) -> None:
    controller, _, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    handled: list[str] = []
    controller.on_handled = lambda name, seconds: handled.append(name)
    labels = {LABEL_PLUGIN: "echo", LABEL_INSTALLATION: controller.installation_id}

    def pod(version: str) -> dict[str, Any]:
        return {"metadata": {"name": "p", "labels": labels, "resourceVersion": version}, "status": {}}

    def settled(count: int) -> list[str]:
        deadline = time.monotonic() + 5
        while len(handled) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        return handled

    stop = threading.Event()
    controller.run(stop, workers=1)
    try:
        controller.on_pod(MODIFIED, pod("1"))
        assert settled(1) == ["echo"]
        controller.on_pod(SYNC, pod("1"))  # a resync: nothing changed since it was handled
        assert settled(2) == ["echo"]
        controller.on_pod(SYNC, pod("2"))  # changed (an event missed): handled
        assert settled(2) == ["echo", "echo"]
    finally:
        stop.set()


def test_an_applied_replicas_rolls_to_that_many_instances_through_rolling(world: Any) -> None:
    controller, api, _, cli = world
    cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
    phases: list[str] = []
    write = api.patch_status

    def recorded(name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        phases.append(str(status.get("phase", "")))
        return write(name, status)

    api.patch_status = recorded  # type: ignore[method-assign]
    api.kubectl_apply("echo", replicas=2)  # only spec.replicas edited
    _changed(controller, api)
    assert len(cli.store.active_instances("echo")) == 2
    obj = api.objects["echo"]
    assert obj["spec"]["replicas"] == 2 and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert phases[0] == "Rolling" and obj["status"]["phase"] == "Active"
