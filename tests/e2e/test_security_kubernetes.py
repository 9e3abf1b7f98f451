"""Security of the cluster path on the Kubernetes test cluster (issue 12, part 4):

- per-pod tokens: no token value in any pod spec; each plugin pod's SYSOPS_TOKEN comes from its own Secret
  `<pod>-token` (owned by the Plugin object, with the chart's CA as `ca.crt`), and the token is
  HMAC-SHA256(the chart's `<fullname>-keys` key, pod name);
- the token Secret and the NetworkPolicy exist before the pod: the resourceVersions they were created at
  (ADDED events of watches started before `plugin up`; one etcd revision counter for all kinds) come first;
- TLS on the control API: the CLI with the chart's CA works, with another CA it is refused in one line (exit 5),
  plaintext (`--insecure`, or a plain gRPC client) is not served; plugin pods call host services over TLS;
- RBAC: `kubectl auth can-i --list` of the server's ServiceAccount, less what every authenticated user may do
  (a ServiceAccount without bindings gives that), is exactly the namespaced set the design names, and the
  ServiceAccount may do nothing more in another namespace nor is bound by any ClusterRoleBinding;
- `helm upgrade` keeps the TLS Secret and the token key (`lookup`): the CLI's CA and the pod's token still hold.

Own namespace (test_kubernetes.installed_chart), plugin at 10% CPU; everything removed afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.e2e.test_kubernetes import (
    ROOT,
    SERVER_INSTALLATION,
    Cluster,
    installation_images,
    installed_chart,
    kubectl,
    remove_images,
)
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import Sysops, wait_for
from tests.unit.tls_pki import make_pki

pytestmark = kubernetes_marks
KEEPER = Path(__file__).parents[1] / "integration" / "plugins" / "keeper"
POLICY = {"plugins": {"keeper": {"grants": ["state.*"]}}}
#: What the server's Role grants, as `kubectl auth can-i --list` shows it: (resource, resource names) -> verbs.
EXPECTED_GRANTS: dict[tuple[str, str], set[str]] = {
    ("pods", "[]"): {"get", "list", "watch", "create", "delete", "patch"},
    ("pods/log", "[]"): {"get"},
    ("services", "[]"): {"get"},
    ("networkpolicies.networking.k8s.io", "[]"): {"get", "list", "create", "delete", "patch", "update"},
    ("plugins.sysops.dev", "[]"): {"get", "list", "watch", "create", "patch", "delete"},
    ("plugins.sysops.dev/status", "[]"): {"patch"},
    ("configmaps", "[]"): {"get", "list", "delete"},
    ("secrets", "[]"): {"create", "delete", "deletecollection"},
    ("leases.coordination.k8s.io", "[]"): {"create"},
    ("leases.coordination.k8s.io", "[sysops-leader]"): {"get", "update"},
}
_CAN_I_ROW = re.compile(r"^(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+\[([^\]]*)\]$")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-security")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[Cluster]:
    values = workdir / "values.yaml"
    values.write_text(json.dumps({"policy": POLICY}))
    with installed_chart("-f", str(values)) as installed:
        yield installed


@pytest.fixture(scope="module")
def cli(cluster: Cluster, workdir: Path) -> Sysops:
    return cluster.cli(workdir / "home")


class CreationWatch:
    """The resourceVersion each of a plugin's pods, NetworkPolicies and Secrets was created at (watch ADDED
    events from the namespace's current revision on), collected in the background until `stop`. Each watch asks
    the API server to end it every few seconds and goes on from the last revision it saw (the test cluster's API
    server may also cut a watch short), so `stop` returns promptly."""

    def __init__(self, namespace: str, plugin: str) -> None:
        config.load_kube_config()
        self.created: dict[tuple[str, str], int] = {}
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        core, networking = client.CoreV1Api(), client.NetworkingV1Api()
        selector = f"sysops.plugin={plugin}"
        for kind, lister in (
            ("Pod", core.list_namespaced_pod),
            ("NetworkPolicy", networking.list_namespaced_network_policy),
            ("Secret", core.list_namespaced_secret),
        ):
            since = str(lister(namespace, label_selector=selector).metadata.resource_version)
            thread = threading.Thread(target=self._collect, args=(kind, lister, namespace, selector, since))
            thread.start()
            self._threads.append(thread)

    def _collect(self, kind: str, lister: Any, namespace: str, selector: str, since: str) -> None:
        while not self._stopped.is_set():
            try:
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    lister, namespace, label_selector=selector, resource_version=since, timeout_seconds=3
                ):
                    metadata = event["object"].metadata
                    since = str(metadata.resource_version)
                    if event["type"] == "ADDED":
                        self.created.setdefault((kind, metadata.name), int(metadata.resource_version))
            except (urllib3.exceptions.HTTPError, ApiException):
                self._stopped.wait(0.2)

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def keeper(cluster: Cluster, cli: Sysops, workdir: Path) -> Iterator[dict[tuple[str, str], int]]:
    """keeper up at 10% CPU, with the resourceVersions its objects were created at."""
    engine = docker.from_env()
    existing = installation_images(engine, SERVER_INSTALLATION, ["keeper"])
    plugin_dir = workdir / "keeper"
    shutil.copytree(KEEPER, plugin_dir)
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text() + "limits: {cpu_percent: 10, memory_mb: 64}\n")
    watcher = CreationWatch(cluster.namespace, "keeper")
    try:
        cli.ok("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
        wait_for(lambda: {kind for kind, _ in watcher.created} >= {"Pod", "NetworkPolicy", "Secret"}, 30, "events")
    finally:
        watcher.stop()
    try:
        yield dict(watcher.created)
    finally:
        cli.run("plugin", "down", "keeper")
        wait_for(lambda: cluster.plugin_objects() == [], 90, "keeper's pod, policy, Secret and Plugin to go")
        built = installation_images(engine, SERVER_INSTALLATION, ["keeper"]) - existing
        wait_for(lambda: remove_images(engine, built), 60, "the keeper images to go")


def _pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]
    return [pod for pod in pods if pod["metadata"].get("deletionTimestamp") is None]


def _secret(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("-n", cluster.namespace, "get", "secret", name, "-o", "json")))


def _decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def test_no_token_in_any_pod_spec_only_a_reference_to_its_secret(cluster: Cluster, keeper: Any) -> None:
    [pod] = _pods(cluster, "sysops.plugin=keeper")
    name = pod["metadata"]["name"]
    secret = _secret(cluster, f"{name}-token")
    token = _decoded(secret, "token").decode()
    key = _decoded(_secret(cluster, "sysops-keys"), "token-key")
    assert token == hmac.new(key, name.encode(), hashlib.sha256).hexdigest(), "HMAC-SHA256(key, pod name)"
    every_pod = kubectl("-n", cluster.namespace, "get", "pods", "-o", "json")
    assert token not in every_pod and cluster.token not in every_pod
    for item in json.loads(every_pod)["items"]:
        for container in item["spec"]["containers"]:
            for variable in container.get("env") or []:
                if variable["name"] in ("SYSOPS_TOKEN", "SYSOPS_SERVER_TOKEN"):
                    assert "valueFrom" in variable and "value" not in variable, (item["metadata"]["name"], variable)
    env = {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}
    assert env["SYSOPS_TOKEN"] == {
        "name": "SYSOPS_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": f"{name}-token", "key": "token"}},
    }
    assert env["SYSOPS_HOST_CA"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-token", "key": "ca.crt"}
    assert env["SYSOPS_HOST_SERVER_NAME"]["value"] == f"sysops.{cluster.namespace}.svc"
    assert _decoded(secret, "ca.crt") == _decoded(_secret(cluster, "sysops-tls"), "ca.crt")
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Plugin", "keeper"), "kubectl delete plugin removes it too"


def test_the_secret_and_the_policy_exist_before_the_pod(keeper: dict[tuple[str, str], int]) -> None:
    created = {kind: version for (kind, _), version in keeper.items()}
    assert created["Secret"] < created["Pod"], keeper
    assert created["NetworkPolicy"] < created["Pod"], keeper


def _keeper_story(cluster: Cluster) -> str:
    """What the kubelet says about keeper's pod (restarts, probe failures), for a failure message."""
    return kubectl("-n", cluster.namespace, "describe", "pods", "-l", "sysops.plugin=keeper", check=False)[-3000:]


def test_plugin_pods_call_host_services_over_tls(cluster: Cluster, cli: Sysops, keeper: Any) -> None:
    remembered = cli.run("remember", "colour", "teal")
    assert remembered.returncode == 0, remembered.stderr + _keeper_story(cluster)
    assert cli.ok("recall", "colour").strip() == "A:teal"  # keeper's MARK, then the value


def test_the_cli_verifies_the_server_and_plaintext_is_not_served(cluster: Cluster, cli: Sysops, workdir: Path) -> None:
    assert cli.run("plugin", "ls").returncode == 0, "the chart's CA and the Service's name verify it"
    other = workdir / "other-pki"
    other.mkdir()
    make_pki(other)
    wrong = cli.run("plugin", "ls", env={"SYSOPS_SERVER_CA": str(other / "other-ca.crt")})
    assert wrong.returncode == 5, wrong.stderr
    assert wrong.stderr.count("\n") == 1 and wrong.stderr.startswith("error: "), wrong.stderr
    assert "TLS verification failed, its certificate is not signed by the CA" in wrong.stderr
    plaintext = cli.run("--insecure", "plugin", "ls")
    assert plaintext.returncode == 5 and "a server with TLS refuses plaintext" in plaintext.stderr, plaintext.stderr
    address = cli.env["SYSOPS_SERVER"]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _can_i(namespace: str, service_account: str, in_namespace: str) -> dict[tuple[str, str], set[str]]:
    """`kubectl auth can-i --list` as the ServiceAccount: (resource or URL, resource names) -> verbs."""
    listing = kubectl(
        "auth", "can-i", "--list", "--as", f"system:serviceaccount:{namespace}:{service_account}", "-n", in_namespace
    )
    grants: dict[tuple[str, str], set[str]] = {}
    for line in listing.splitlines()[1:]:
        match = _CAN_I_ROW.match(line.rstrip())
        assert match is not None, f"unexpected `kubectl auth can-i --list` row: {line!r}"
        resource, urls, names, verbs = match.groups()
        grants.setdefault((resource or urls, names), set()).update(verbs.split())
    return grants


def test_rbac_is_the_namespaced_least_privilege_set(cluster: Cluster) -> None:
    namespace = cluster.namespace
    kubectl("-n", namespace, "create", "serviceaccount", "sysops-baseline")
    try:
        baseline = _can_i(namespace, "sysops-baseline", namespace)  # what every authenticated user may do
        granted = _can_i(namespace, "sysops", namespace)
        added = {
            key: verbs - baseline.get(key, set()) for key, verbs in granted.items() if verbs - baseline.get(key, set())
        }
        assert added == EXPECTED_GRANTS
        assert _can_i(namespace, "sysops", "default") == baseline, "nothing outside its namespace"
    finally:
        kubectl("-n", namespace, "delete", "serviceaccount", "sysops-baseline", check=False)
    bindings = json.loads(kubectl("get", "clusterrolebindings", "-o", "json"))["items"]
    bound = [
        binding["metadata"]["name"]
        for binding in bindings
        for subject in binding.get("subjects") or []
        if subject.get("namespace") == namespace or subject.get("name") == f"system:serviceaccounts:{namespace}"
    ]
    assert bound == [], "no ClusterRoleBinding reaches the server's ServiceAccount"


def test_an_upgrade_keeps_the_certificate_and_the_token_key(cluster: Cluster, cli: Sysops, keeper: Any) -> None:
    before = {name: _secret(cluster, name)["data"] for name in ("sysops-tls", "sysops-keys")}
    subprocess.run(
        ["helm", "upgrade", "sysops", str(ROOT / "charts" / "sysops"), "-n", cluster.namespace, "--reuse-values",
         "--wait", "--timeout", "180s"],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    assert {name: _secret(cluster, name)["data"] for name in before} == before
    assert cli.ok("recall", "colour").strip() == "A:teal", "the CA and the pod's token still hold"
