"""The server's home on a PersistentVolume (chart value `persistence`) on the Kubernetes test cluster (issue 10):
host-service data, here a plugin's `state`, survives the replacement of the server pod.

The cluster has no dynamic provisioner, so the test makes the storage itself: a directory on this machine
(the cluster's only node), owned by the server pod's uid/gid (hostPath volumes ignore `fsGroup`), a hostPath
PersistentVolume on it, and a claim bound to that volume, given to the chart as `persistence.existingClaim`.
A refusal there names the Helm value that grants (services/dispatch.py: the chart's server has
SYSOPS_SERVER_SERVICE). Plugin: tests/integration/plugins/keeper. Own namespace; the volume, claim,
namespace, directory and plugin images made here are removed afterwards; skipped without a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.test_host_services_kubernetes import plugin_images, plugin_up, remove_plugins
from tests.e2e.test_kubernetes import Cluster, installed_chart, kubectl
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import Sysops, wait_for

pytestmark = kubernetes_marks
#: uid/gid of the server pod (charts/sysops/templates/deployment.yaml securityContext).
SERVER_UID = 10001
CLAIM = "sysops-e2e-home"
POLICY = {"plugins": {"keeper": {"grants": ["state.*"]}}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-persistence")


def volume_objects(namespace: str, volume: str, path: Path) -> str:
    """A hostPath PersistentVolume at `path` and the claim CLAIM in `namespace`, bound to each other by name."""
    size = "1Gi"
    persistent_volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": CLAIM},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": size}},
        },
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [persistent_volume, claim]})


@pytest.fixture(scope="module")
def volume_path(workdir: Path) -> Iterator[Path]:
    path = workdir / "server-volume"
    path.mkdir(mode=0o700)
    os.chown(path, SERVER_UID, SERVER_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(workdir: Path, volume_path: Path) -> Iterator[Cluster]:
    volume = f"sysops-e2e-home-{uuid.uuid4().hex[:6]}"
    manifest = workdir / "volume.json"

    def make_volume(namespace: str) -> None:
        kubectl("create", "namespace", namespace)
        manifest.write_text(volume_objects(namespace, volume, volume_path))
        kubectl("apply", "-f", str(manifest))

    values = workdir / "values.yaml"
    values.write_text(json.dumps({"policy": POLICY, "persistence": {"enabled": True, "existingClaim": CLAIM}}))
    try:
        with installed_chart("-f", str(values), prepare=make_volume) as installed:
            yield installed
    finally:
        # Bound, the volume is kept until its claim goes with the namespace (deleted by installed_chart).
        kubectl("delete", "persistentvolume", volume, "--wait=false", "--ignore-not-found", check=False)
        wait_for(
            lambda: not kubectl("get", "persistentvolume", volume, "--ignore-not-found", "-o", "name", check=False),
            120,
            f"the PersistentVolume {volume} to be deleted",
        )


@pytest.fixture(scope="module")
def cli(cluster: Cluster, workdir: Path) -> Iterator[Sysops]:
    engine = docker.from_env()
    existing = plugin_images(engine)
    try:
        yield cluster.cli(workdir / "home")
    finally:
        # A CLI for the server pod as it is now: the test replaces it, and its address with it.
        remove_plugins(cluster.cli(workdir / "home"), cluster, engine, existing)


def test_state_survives_the_replacement_of_the_server_pod(
    cluster: Cluster, cli: Sysops, workdir: Path, volume_path: Path
) -> None:
    plugin_up(cli, workdir, "keeper")
    assert cli.ok("remember", "colour", "blue") == "version 1\n"
    assert (volume_path / "home" / "state.db").is_file()  # the server's store is on the volume
    old_pod, _ = cluster.server_pod()
    kubectl("-n", cluster.namespace, "delete", "pod", old_pod, "--wait=true")
    # The new pod may get the old one's IP back: wait for a ready pod with another name.
    wait_for(lambda: cluster.server_pod()[0] not in ("", old_pod), 120, "a new server pod")
    cli = cluster.cli(cli.home)
    wait_for(lambda: cli.run("plugin", "ls").returncode == 0, 60, "the new server to answer")
    assert cli.ok("recall", "colour") == "A:blue\n"  # "A:(none)" when the store was on the emptyDir


def test_a_refusal_names_the_helm_value_that_grants(cli: Sysops, cluster: Cluster) -> None:
    refused = cluster.cli(cli.home).run("peek-config")  # keeper asks config.read; POLICY grants it state only
    assert refused.returncode != 0
    assert (
        "(add it under plugins.keeper.grants in /etc/sysops/policy.yaml: the Helm value policy.plugins.keeper.grants)"
        in refused.stderr
    ), refused.stderr
