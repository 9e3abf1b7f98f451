"""What the server trusts of Plugin objects and old state ConfigMaps (anyone with RBAC on them may write them):
only its own installation's images, from its own registry; revisions restored only when well formed; a bad
ConfigMap skipped, never a crash of serve()."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml
from sysops.core.orchestrator import Orchestrator
from sysops.errors import UsageError
from sysops.runtime.fake import FakeDriver
from sysops.runtime.kubernetes import migration
from sysops.runtime.kubernetes.informer import DELETED, MODIFIED
from sysops.runtime.kubernetes.plugin_resource import PluginApi, PluginResourceMirror
from sysops.server.plugin_controller import PluginController
from sysops.server.service import check_own_image
from sysops.settings import Settings
from sysops.store import RevisionRecord

from tests.unit.conftest import EchoV1, EchoV2
from tests.unit.test_plugin_controller import MemoryPlugins, _manifest

INSTALL = "abc123"
CRD = Path(__file__).resolve().parents[2] / "charts" / "sysops" / "crds" / "plugins.sysops.dev.yaml"


def test_only_this_installations_repository_in_its_registry_is_accepted() -> None:
    check_own_image(f"sysops-plugins/{INSTALL}-hello:1.0.0-x", INSTALL, "hello", registry="")
    check_own_image(f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello", registry="reg.local:5000")
    check_own_image(f"sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello", registry="reg.local:5000")
    for image in (
        f"evil.example/sysops-plugins/{INSTALL}-hello:x",  # any registry would serve the attacker's image
        f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1",  # a registry the server is not configured with
        f"evil/sysops-plugins/{INSTALL}-hello:1",
        f"sysops-plugins/{INSTALL}-other:1",
        f"sysops-plugins/{INSTALL}-hello",
        "evil/x",
    ):
        with pytest.raises(UsageError):
            check_own_image(image, INSTALL, "hello", registry="")


def test_the_registry_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSOPS_REGISTRY", "reg.local:5000")
    check_own_image(f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello")
    with pytest.raises(UsageError):
        check_own_image(f"evil.example/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello")


# --- revisions restored from Plugin objects (item: spec.revisions is input, not truth)


def _refuse_evil(image: str, plugin: str) -> None:
    if not image.startswith("echo-"):
        raise UsageError(f"image {image} is not a plugin image of this server")


def _revision(n: int, image: str, **extra: Any) -> dict[str, Any]:
    manifest = _manifest(f"{n}.0.0").model_dump(mode="json")
    return {"revision": n, "version": f"{n}.0.0", "image": image, "image_id": image, "manifest": manifest, **extra}


def test_a_restart_restores_only_well_formed_revisions_of_own_images(settings: Settings) -> None:
    api = MemoryPlugins()
    good = _revision(1, "echo-v1")
    bad = [
        {**_revision(2, "echo-v2"), "revision": "abc"},
        {k: v for k, v in _revision(3, "echo-v2").items() if k != "version"},
        _revision(4, "evil/x"),  # added by whoever may patch Plugin objects
        {**_revision(5, "echo-v2"), "image_id": "evil/x"},
        {**_revision(6, "echo-v2"), "manifest": {"name": "other", "version": "6.0.0"}},
        "not an object",
    ]
    manifest = good["manifest"]
    api.create({"metadata": {"name": "echo"}, "spec": {"manifest": manifest, "revisions": [good, *bad]}})
    api.create({"metadata": {"name": "junk"}, "spec": {"manifest": "x", "revisions": 7}})
    driver = FakeDriver()
    restarted = Orchestrator(settings, driver, mirror=PluginResourceMirror("test", api=api))
    try:
        restarted.restore_from_mirror(check_image=_refuse_evil)  # raised ValueError/KeyError before
        assert [r.revision for r in restarted.store.revisions("echo")] == [1]
        assert restarted.store.plugin("junk") is None
    finally:
        restarted.close()


def test_a_rollback_checks_the_revisions_image_again(settings: Settings) -> None:
    driver = FakeDriver()
    driver.add_image("echo-v1", EchoV1)
    driver.add_image("evil/x", EchoV2)
    api = MemoryPlugins()
    mirror = PluginResourceMirror("test", api=api)
    cli = Orchestrator(settings, driver, mirror=mirror)
    controller = PluginController(
        lambda: Orchestrator(settings, driver, mirror=mirror), api, settings.installation_id, check_image=_refuse_evil
    )
    try:
        cli.up_image(_manifest("1.0.0"), "echo-v1", "fp1", "/src/echo")
        evil = _revision(2, "evil/x")
        cli.store.add_revision(RevisionRecord("echo", 2, "2.0.0", "evil/x", "evil/x", "", evil["manifest"], 0.0))
        api.kubectl_apply("echo", revision=2)
        controller.on_plugin(MODIFIED, api.objects["echo"])
        controller.handle("echo", controller._pending.pop("echo"))
        [instance] = cli.store.active_instances("echo")
        assert (instance.revision, instance.image_id) == (1, "echo-v1")
        assert "evil/x" in api.objects["echo"]["status"]["lastFault"]
    finally:
        for handle in list(driver.instances):
            driver.remove(handle)
        cli.close()


def test_the_crd_types_the_revisions() -> None:
    crd = yaml.safe_load(CRD.read_text())
    items = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["revisions"]
    schema = _json_schema(items["items"])
    jsonschema.validate(_revision(1, "echo-v1"), schema)
    for bad in (
        {**_revision(1, "x"), "revision": "abc"},
        {"revision": 1, "image": "x"},
        {"revision": 1, "version": "1"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def _json_schema(openapi: Any) -> Any:
    if isinstance(openapi, dict):
        return {k: _json_schema(v) for k, v in openapi.items() if not k.startswith("x-kubernetes")}
    return openapi


# --- the migration of an older server's state ConfigMaps (anyone who may create ConfigMaps can label one)


class FakeCluster:
    """The core and networking APIs the migration calls, with its state ConfigMaps (no pods or policies)."""

    def __init__(self, configmaps: list[Any]) -> None:
        self.configmaps = configmaps
        self.deleted: list[tuple[str, Any]] = []
        self.patched: list[str] = []

    def list_namespaced_config_map(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=self.configmaps)

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=[])

    def list_namespaced_network_policy(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=[])

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **options: Any) -> None:
        self.patched.append(name)

    patch_namespaced_network_policy = patch_namespaced_pod

    def delete_namespaced_config_map(self, name: str, namespace: str, **options: Any) -> None:
        self.deleted.append((name, options.get("body")))


def _configmap(name: str, plugin: str, uid: str, **data: str) -> Any:
    labels = {"sysops.dev/role": "plugin-state", "sysops.plugin": plugin}
    return SimpleNamespace(metadata=SimpleNamespace(name=name, uid=uid, labels=labels), data=data)


def test_a_bad_configmap_is_skipped_and_an_existing_objects_pending_generation_stays() -> None:
    good = _revision(1, "echo-v1")
    data = {"manifest.json": json.dumps(good["manifest"]), "revisions.json": json.dumps([good]), "source": "/s"}
    cluster = FakeCluster(
        [
            _configmap("sysops-plugin-broken", "broken", "u1", **{"manifest.json": "{not json"}),
            _configmap("made-up", "echo", "u2", **data),  # not named sysops-plugin-echo
            _configmap("sysops-plugin-pending", "pending", "u3", **data),
        ]
    )
    api = MemoryPlugins()
    api.create({"metadata": {"name": "pending"}, "spec": {"image": "x"}})
    api.kubectl_apply("pending", image="y")  # generation 2, not yet handled by the controller
    api.patch_status("pending", {"observedGeneration": 1})
    assert migration.ConfigMapMigration(cluster, cluster, api).run() == ["echo", "pending"]  # raised before
    assert api.objects["pending"]["status"]["observedGeneration"] == 1
    assert api.objects["pending"]["spec"] == {"image": "y"}
    assert api.objects["echo"]["status"]["observedGeneration"] == api.objects["echo"]["metadata"]["generation"]
    body = {"propagationPolicy": "Orphan", "preconditions": {"uid": "u2"}}
    assert cluster.deleted[0] == ("made-up", body)
    assert [name for name, _ in cluster.deleted] == ["made-up", "sysops-plugin-pending"]


# --- the server's spec writes never overwrite a spec applied meanwhile


class RacingPlugins(MemoryPlugins):
    """A kubectl apply (or a status write) lands between the server's read and its spec write, once."""

    def __init__(self, race: str) -> None:
        super().__init__()
        self.race = race

    def replace_spec(self, name: str, spec: Mapping[str, Any], resource_version: str = "") -> dict[str, Any]:
        if self.race == "apply" and name in self.objects:
            self.race = ""
            self.kubectl_apply(name, image="echo-applied")
        elif self.race == "status":
            self.race = ""
            self.patch_status(name, {"phase": "Active"})
        return super().replace_spec(name, spec, resource_version)


@pytest.mark.parametrize("race", ["apply", "status"])
def test_a_spec_applied_during_a_server_write_is_kept_pending(race: str) -> None:
    api = RacingPlugins(race)
    api.create({"metadata": {"name": "echo"}, "spec": {"image": "echo-v1"}})
    api.patch_status("echo", {"observedGeneration": 1})
    revisions = [_revision(2, "echo-v2")]
    PluginResourceMirror("test", api=api).save("echo", "/s", revisions[0]["manifest"], revisions)
    obj = api.objects["echo"]
    if race == "apply":  # the user's spec stays, and pending
        assert obj["spec"]["image"] == "echo-applied"
        assert obj["status"]["observedGeneration"] < obj["metadata"]["generation"]
    else:  # a status write only: read again and written
        assert obj["spec"]["image"] == "echo-v2"
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_replace_spec_sends_a_resource_version_test() -> None:
    calls: list[tuple[Any, ...]] = []

    class Custom:
        def patch_namespaced_custom_object(self, *args: Any, **options: Any) -> dict[str, Any]:
            calls.append((args[-1], options))
            return {}

    PluginApi("ns", custom=Custom()).replace_spec("echo", {"image": "x"}, "42")
    [(body, options)] = calls
    assert body[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert options == {"_content_type": "application/json-patch+json"}


# --- two releases in one namespace: each acts on its own Plugin objects only


def test_objects_are_labelled_and_listed_per_installation() -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    class Custom:
        def create_namespaced_custom_object(self, *args: Any) -> Any:
            calls.append(("create", args[-1], {}))
            return args[-1]

        def list_namespaced_custom_object(self, *args: Any, **options: Any) -> Any:
            calls.append(("list", None, options))
            return {"items": [{"metadata": {"name": "old"}}]} if "!" in options["label_selector"] else {"items": []}

        def patch_namespaced_custom_object(self, *args: Any, **options: Any) -> Any:
            calls.append(("patch", args[-2:], options))

    api = PluginApi("ns", custom=Custom(), installation_id=INSTALL)
    api.create({"metadata": {"name": "echo", "labels": {"a": "b"}}, "spec": {}})
    api.list()
    assert api.adopt_unlabelled() == ("old",)
    created, listed = calls[0][1], calls[1][2]
    assert created["metadata"]["labels"] == {"a": "b", "sysops.installation": INSTALL}
    assert listed == {"label_selector": f"sysops.installation={INSTALL}"}
    assert calls[-1][1] == ("old", {"metadata": {"labels": {"sysops.installation": INSTALL}}})


def test_the_controller_ignores_another_installations_objects(settings: Settings) -> None:
    api = MemoryPlugins()
    controller = PluginController(lambda: Orchestrator(settings, FakeDriver()), api, settings.installation_id)
    other = {"metadata": {"name": "echo", "generation": 2, "labels": {"sysops.installation": "another"}}}
    controller.on_plugin(MODIFIED, other)
    controller.on_plugin(DELETED, other)
    assert controller._pending == {} and controller.objects == {}
