"""The Plugin custom resource on the Kubernetes test cluster (issue 12, part 1), through the chart's server.

- The chart installs the CRD; after `sysops plugin up`, `kubectl get plugins` reads like `sysops plugin ls`
  (NAME, VERSION, PHASE, READY, REVISION, AGE) and the plugin's pod is owned by its Plugin object.
- `kubectl apply` of the Plugin object asking another revision rolls it without the CLI: the command then
  answers from that revision, and the status says it serves.
- `kubectl apply` of a spec that cannot become ready (a self-test command the plugin lacks) is rolled back: the
  old pod keeps serving, and the status names the reason (lastFault, a Degraded condition) with the generation
  marked observed.
- Migration: a plugin kept the old way (a `sysops-plugin-<name>` ConfigMap owning its pod and NetworkPolicy) is
  moved to a Plugin object by the next server start, with the pod untouched (same UID, same restartCount).
- `kubectl delete plugin` removes its pods and NetworkPolicies (by ownership) and the server forgets it.

The plugin is the hello example renamed `crdhello` (so the images this module builds are its own), with 10% of
a CPU. Own namespace (test_kubernetes.installed_chart), removed with everything in it; the images the CLI built
are removed at the end; skipped without a cluster.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e import test_kubernetes as chart
from tests.e2e.test_kubernetes import Cluster, kubectl
from tests.integration.conftest import Sysops, copy_example, wait_for

pytestmark = chart.pytestmark
NAME = "crdhello"
#: 10% of a CPU (the node's 2 are shared by every test: calls may time out while the kubelet's exec probe, a Python
#: process in the pod's cgroup, runs, so answers are waited for), a long readiness timeout, and 256 MB (at 64 and
#: 128 MB the plugin and the probe's interpreter together got the pod OOMKilled).
SMALL = (
    "limits: {cpu_percent: 10, memory_mb: 256, pids: 64}\n"
    "liveness: {interval_s: 10, timeout_s: 15, failures: 6}\n"
    "readiness: {timeout_seconds: 120}\n"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with chart.installed_chart() as installed:
        yield installed


@pytest.fixture(scope="module")
def plugin(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sysops, Path]]:
    """crdhello up through the chart's server (revision 1); its images removed afterwards."""
    workdir = tmp_path_factory.mktemp("k8s-crd")
    plugin_dir = copy_example("hello", workdir)
    manifest = plugin_dir / "plugin.yaml"
    text = manifest.read_text().replace("name: hello", f"name: {NAME}")
    manifest.write_text("\n".join(line for line in text.splitlines() if not line.startswith("limits:")) + "\n" + SMALL)
    code = plugin_dir / "hello_plugin" / "plugin.py"
    code.write_text(code.read_text().replace('name = "hello"', f'name = "{NAME}"'))
    cli = cluster.cli(workdir / "home")
    engine = docker.from_env()
    existing = chart.installation_images(engine, chart.SERVER_INSTALLATION, [NAME])
    try:
        cli.ok("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
        yield cli, plugin_dir
    finally:
        cli.run("plugin", "down", NAME)
        built = chart.installation_images(engine, chart.SERVER_INSTALLATION, [NAME]) - existing
        wait_for(lambda: chart.remove_images(engine, built), 90, "the crdhello images the tests built to go")


def plugin_object(cluster: Cluster) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl("-n", cluster.namespace, "get", "plugin", NAME, "-o", "json"))
    return found


def plugin_pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", f"sysops.plugin={NAME}", "-o", "json"))
    return [pod for pod in pods["items"] if pod["metadata"].get("deletionTimestamp") is None]


def kubectl_apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    """`kubectl apply -f` of an edited object (as a user would: no status, no server-set metadata)."""
    body = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"], "labels": obj["metadata"].get("labels", {})},
        "spec": obj["spec"],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(body, file)
        file.flush()
        kubectl("-n", cluster.namespace, "apply", "-f", file.name)


def observed(cluster: Cluster) -> dict[str, Any] | None:
    """The Plugin object once its latest generation is observed, else None."""
    obj = plugin_object(cluster)
    status = obj.get("status") or {}
    return obj if status.get("observedGeneration", 0) >= obj["metadata"]["generation"] else None


def test_chart_installs_the_crd_and_get_plugins_reads_like_plugin_ls(
    cluster: Cluster, plugin: tuple[Sysops, Path]
) -> None:
    cli, _ = plugin
    crd = json.loads(kubectl("get", "crd", "plugins.sysops.dev", "-o", "json"))
    assert crd["spec"]["names"]["shortNames"] == ["spl"]
    table = kubectl("-n", cluster.namespace, "get", "plugins").splitlines()
    assert table[0].split() == ["NAME", "VERSION", "PHASE", "READY", "REVISION", "AGE"]
    [row] = [line.split() for line in table[1:] if line.split()[0] == NAME]
    assert row[:5] == [NAME, "1.0.0", "Active", "1", "1"]
    [listed] = [p for p in json.loads(cli.ok("plugin", "ls", "--output", "json")) if p["name"] == NAME]
    assert (listed["version"], listed["revision"]) == ("1.0.0", 1)  # its state: health checks at 10% of a CPU
    obj = plugin_object(cluster)
    [pod] = plugin_pods(cluster)
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Plugin", NAME, obj["metadata"]["uid"])
    assert obj["spec"]["revision"] == 1 and obj["spec"]["image"].startswith("sysops-plugins/")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_kubectl_apply_of_another_revision_rolls_it_without_the_cli(
    cluster: Cluster, plugin: tuple[Sysops, Path]
) -> None:
    cli, plugin_dir = plugin
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    source.write_text(good.replace('f"{greeting.capitalize()}, {name}!"', 'f"{greeting.capitalize()} v2, {name}!"'))
    try:
        cli.ok("plugin", "up", str(plugin_dir))  # revision 2, built by the CLI: its image is on the node
    finally:
        source.write_text(good)
    cli.ok("plugin", "rollback", NAME, "--to", "1")
    answers(cli, "k8s", "Hello, k8s!\n")
    [before] = plugin_pods(cluster)
    obj = plugin_object(cluster)
    assert obj["status"]["revision"] == 1
    obj["spec"]["revision"] = 2  # the user's edit: serve revision 2
    kubectl_apply(cluster, obj)
    wait_for(lambda: (o := observed(cluster)) is not None and o["status"].get("revision") == 2, 120, "revision 2")
    answers(cli, "k8s", "Hello v2, k8s!\n")
    [after] = plugin_pods(cluster)
    assert after["metadata"]["name"] != before["metadata"]["name"]
    status = plugin_object(cluster)["status"]
    assert (status["phase"], status["readyReplicas"], status.get("lastFault", "")) == ("Active", 1, "")
    [listed] = [p for p in json.loads(cli.ok("plugin", "ls", "--output", "json")) if p["name"] == NAME]
    assert listed["revision"] == 2


def test_a_bad_spec_is_rolled_back_and_the_status_says_why(cluster: Cluster, plugin: tuple[Sysops, Path]) -> None:
    cli, _ = plugin
    [before] = plugin_pods(cluster)
    obj = plugin_object(cluster)
    serving = obj["status"]["revision"]
    obj["spec"]["manifest"]["readiness"] = {"command": "no-such-check", "timeout_seconds": 120}
    kubectl_apply(cluster, obj)
    generation = plugin_object(cluster)["metadata"]["generation"]
    wait_for(lambda: observed(cluster) is not None, 240, "the bad spec to be tried and rolled back")
    status = plugin_object(cluster)["status"]
    assert status["observedGeneration"] == generation
    assert "self-test 'no-such-check' failed" in status["lastFault"], status
    [degraded] = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["status"] == "True" and "no-such-check" in degraded["message"]
    assert (status["phase"], status["revision"]) == ("Active", serving)
    assert [pod["metadata"]["name"] for pod in plugin_pods(cluster)] == [before["metadata"]["name"]]
    answers(cli, "still", "Hello, still!\n", "Hello v2, still!\n")
    events = json.loads(cli.ok("plugin", "status", NAME, "--output", "json"))["events"]
    assert any(e["kind"] == "rolled-back" and "no-such-check" in e["message"] for e in events)
    time.sleep(5)  # not tried again: no new pod appears for the same generation
    assert [pod["metadata"]["name"] for pod in plugin_pods(cluster)] == [before["metadata"]["name"]]


def answers(cli: Sysops, name: str, *expected: str) -> None:
    """`greet name` answers one of `expected` within 60 s (a call may time out while the kubelet's probe runs)."""
    wait_for(lambda: cli.run("greet", name).stdout in expected, 60, f"greet {name} to answer {expected}")


def _server_replicas(cluster: Cluster) -> int:
    deployment = json.loads(kubectl("-n", cluster.namespace, "get", "deployment", "sysops", "-o", "json"))
    return int(deployment["spec"]["replicas"])


def _scale_server(cluster: Cluster, replicas: int) -> None:
    kubectl("-n", cluster.namespace, "scale", "deployment", "sysops", f"--replicas={replicas}")
    if replicas == 0:
        wait_for(lambda: cluster.server_pod()[0] == "" and not _server_pods(cluster), 120, "the server pods to go")
    else:
        wait_for(lambda: cluster.server_pod()[0] != "", 180, "a ready server pod")


def _server_pods(cluster: Cluster) -> list[str]:
    out = kubectl("-n", cluster.namespace, "get", "pods", "-l", "app.kubernetes.io/component=server", "-o", "name")
    return out.split()


def _to_configmap_state(cluster: Cluster) -> dict[str, Any]:
    """Put crdhello's state back the way an older server kept it: a ConfigMap owning its pod and policy, and no
    Plugin object (deleted with Orphan, so the pod stays). Return the ConfigMap."""
    obj = plugin_object(cluster)
    spec = obj["spec"]
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"sysops-plugin-{NAME}",
            "labels": {
                "app.kubernetes.io/managed-by": "sysops",
                "sysops.dev/role": "plugin-state",
                "sysops.plugin": NAME,
            },
        },
        "data": {
            "manifest.json": json.dumps(spec["manifest"], sort_keys=True),
            "revisions.json": json.dumps(spec["revisions"]),
            "source": spec.get("source", ""),
        },
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(configmap, file)
        file.flush()
        created = json.loads(kubectl("-n", cluster.namespace, "create", "-f", file.name, "-o", "json"))
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": created["metadata"]["name"],
        "uid": created["metadata"]["uid"],
    }
    patch = json.dumps([{"op": "replace", "path": "/metadata/ownerReferences", "value": [owner]}])
    [pod] = plugin_pods(cluster)
    for kind in ("pod", "networkpolicy"):
        kubectl("-n", cluster.namespace, "patch", kind, pod["metadata"]["name"], "--type=json", "-p", patch)
    kubectl("-n", cluster.namespace, "delete", "plugin", NAME, "--cascade=orphan")
    return created


def test_configmap_state_is_migrated_with_no_pod_restart(cluster: Cluster, plugin: tuple[Sysops, Path]) -> None:
    cli, _ = plugin
    replicas = _server_replicas(cluster)
    history = json.loads(cli.ok("plugin", "history", NAME, "--output", "json"))
    _scale_server(cluster, 0)  # no server runs while the state is put back the old way
    try:
        configmap = _to_configmap_state(cluster)
        [pod] = plugin_pods(cluster)
        assert pod["metadata"]["ownerReferences"][0]["uid"] == configmap["metadata"]["uid"]
        restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    finally:
        _scale_server(cluster, replicas)
    cli = cluster.cli(cli.home)
    wait_for(lambda: cli.run("plugin", "ls").returncode == 0, 120, "the new server to answer")
    assert (
        kubectl("-n", cluster.namespace, "get", "configmaps", "-l", "sysops.dev/role=plugin-state", "-o", "name") == ""
    )
    obj = plugin_object(cluster)
    assert [r["revision"] for r in obj["spec"]["revisions"]] == [r["revision"] for r in history]
    [after] = plugin_pods(cluster)
    assert (after["metadata"]["name"], after["metadata"]["uid"]) == (pod["metadata"]["name"], pod["metadata"]["uid"])
    assert after["status"]["containerStatuses"][0]["restartCount"] == restarts
    [owner] = after["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Plugin", obj["metadata"]["uid"])
    policy = json.loads(kubectl("-n", cluster.namespace, "get", "networkpolicy", pod["metadata"]["name"], "-o", "json"))
    assert [ref["uid"] for ref in policy["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]
    [listed] = [p for p in json.loads(cli.ok("plugin", "ls", "--output", "json")) if p["name"] == NAME]
    assert listed["revision"] == obj["spec"]["revision"]  # the revision its pod runs
    answers(cli, "migrated", "Hello, migrated!\n", "Hello v2, migrated!\n")


def test_kubectl_delete_plugin_removes_its_pods_policies_and_record(
    cluster: Cluster, plugin: tuple[Sysops, Path]
) -> None:
    cli = cluster.cli(plugin[0].home)
    assert len(plugin_pods(cluster)) == 1 and NAME in kubectl("-n", cluster.namespace, "get", "networkpolicies")
    kubectl("-n", cluster.namespace, "delete", "plugin", NAME)
    wait_for(lambda: cluster.plugin_objects() == [], 90, "the plugin's pods and policies to be deleted")
    wait_for(
        lambda: not [p for p in json.loads(cli.ok("plugin", "ls", "--output", "json")) if p["name"] == NAME],
        60,
        "the server to forget the plugin",
    )
    assert cli.run("plugin", "status", NAME).returncode == 8
    assert cli.run("greet", "gone").returncode != 0
