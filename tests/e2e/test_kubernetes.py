"""Kubernetes end to end: the Helm chart installs `sysops serve`, and the CLI drives plugin pods through it.

Needs a cluster: KUBECONFIG set and `helm`/`kubectl` on PATH (`.ci/run` brings up ../shared/k8s). Without
them every test here is skipped with the reason. Each module run uses its own namespace and removes it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from sysops.runtime.base import is_plugin_uid
from sysops.runtime.kubernetes.driver import ORCHESTRATOR_SELECTOR
from sysops.settings import Settings

from tests.integration.conftest import SYSOPS, Sysops, copy_example, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG") or not shutil.which("helm") or not shutil.which("kubectl"),
        reason='no Kubernetes cluster: set KUBECONFIG and put helm and kubectl on PATH (eval "$(../shared/k8s/up.sh)")',
    ),
]


def kubectl(*args: str, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


@dataclass
class Cluster:
    namespace: str
    token: str

    def server_pod(self) -> tuple[str, str]:
        """Name and gRPC address of the ready serving orchestrator pod (empty strings when none is ready): with
        several replicas every healthy one is Ready, and the one serving is the leader, labelled
        sysops.dev/leader=true (a single replica has no leader election: no sysops.dev/leader-elect label)."""
        pods = json.loads(
            kubectl("-n", self.namespace, "get", "pods", "-l", "app.kubernetes.io/component=server", "-o", "json")
        )
        ready = [
            pod for pod in pods["items"]
            if pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            and (
                (pod["metadata"].get("labels") or {}).get("sysops.dev/leader") == "true"
                or "sysops.dev/leader-elect" not in (pod["metadata"].get("labels") or {})
            )
        ]  # fmt: skip
        return (ready[0]["metadata"]["name"], f"{ready[0]['status']['podIP']}:7443") if ready else ("", "")

    def server_address(self) -> str:
        """The server's Service as users reach it: ClusterIP and gRPC port (the test cluster has no DNS, so not
        `sysops.<namespace>.svc`). kube-proxy routes it to the ready server pod, whichever that is."""
        service = json.loads(kubectl("-n", self.namespace, "get", "service", "sysops", "-o", "json"))
        [port] = [port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc"]
        return f"{service['spec']['clusterIP']}:{port}"

    def cli(self, home: Path) -> Sysops:
        env = {
            **os.environ,
            "SYSOPS_HOME": str(home),
            "SYSOPS_SERVER": self.server_address(),
            "SYSOPS_TOKEN": self.token,
            **self.tls_env(home.parent),
        }
        return Sysops(home=home, env=env)

    def tls_env(self, directory: Path) -> dict[str, str]:
        """How the CLI verifies the server: the CA of the chart's TLS Secret (written to `directory`) and the name
        its certificate carries for the Service (the address is a ClusterIP); SYSOPS_INSECURE=1 when the chart
        was installed with tls.enabled=false (no Secret)."""
        found = kubectl("-n", self.namespace, "get", "secret", "sysops-tls", "-o", "json", check=False)
        if not found:
            return {"SYSOPS_INSECURE": "1"}
        ca = directory / f"{self.namespace}-ca.crt"
        ca.write_bytes(base64.b64decode(json.loads(found)["data"]["ca.crt"]))
        return {
            "SYSOPS_SERVER_CA": str(ca),
            "SYSOPS_SERVER_NAME": f"sysops.{self.namespace}.svc",
            "SYSOPS_INSECURE": "",
        }

    def plugin_objects(self) -> list[str]:
        out = kubectl(
            "-n", self.namespace, "get", "pods,networkpolicies,plugins,secrets", "-l", "sysops.plugin", "-o", "name"
        )
        return out.split()


@contextlib.contextmanager
def installed_chart(*helm_args: str, prepare: Callable[[str], None] | None = None) -> Iterator[Cluster]:
    """The orchestrator image built and the chart installed (with `helm_args`) in a namespace of its own,
    removed with everything in it afterwards. `prepare(namespace)`, if given, runs before the install (the
    namespace does not exist yet: it may create it, and objects in it that the install needs)."""
    subprocess.run([str(ROOT / "scripts" / "build-orchestrator-image.sh")], check=True, timeout=900)
    namespace = f"sysops-e2e-{uuid.uuid4().hex[:6]}"
    try:
        if prepare is not None:
            prepare(namespace)
        subprocess.run(
            ["helm", "install", "sysops", str(ROOT / "charts" / "sysops"), "-n", namespace, "--create-namespace",
             "--wait", "--timeout", "180s", "--set", "image.pullPolicy=Never", *helm_args],
            check=True, timeout=300,
        )  # fmt: skip
        secret = json.loads(kubectl("-n", namespace, "get", "secret", "sysops-auth", "-o", "json"))
        cluster = Cluster(namespace, base64.b64decode(secret["data"]["token"]).decode())
        # --wait does not wait for the HA leader to serve: every healthy replica is Ready, standbys too, and the
        # leader labels its pod before it listens.
        wait_for(lambda: _listening(cluster.server_pod()[1]), 180, "the server (the HA leader) to listen")
        yield cluster
    finally:
        subprocess.run(["helm", "uninstall", "sysops", "-n", namespace, "--wait"], check=False, timeout=180)
        delete_namespace(namespace)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    if not host:
        return False
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


#: The installation of the chart's server (its SYSOPS_HOME), whose id labels the plugin images the CLI builds.
SERVER_INSTALLATION = hashlib.sha256(b"/var/lib/sysops/home").hexdigest()[:12]


def delete_namespace(namespace: str) -> None:
    """Delete a test namespace and wait until it is gone: its pods hold the node's CPU (the test node has 2) until
    then, and the next module's pods would not be scheduled (a roll of the next test failed so, under load)."""
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=100s", check=False)


def installation_images(engine: docker.DockerClient, installation: str, plugins: Iterable[str]) -> set[str]:
    """Ids of the images the CLI built for `plugins` of `installation` (labelled so)."""
    return {
        image.id
        for name in plugins
        for image in engine.images.list(
            filters={"label": [f"sysops.installation={installation}", f"sysops.plugin={name}"]}
        )
    }


def remove_images(engine: docker.DockerClient, images: set[str]) -> bool:
    """Remove `images` (force: exited containers of deleted pods may still name them); False if one is in use."""
    removed = True
    for image in images:
        try:
            engine.images.remove(image, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:  # 409: a container of a pod being deleted still runs it
            removed = False
    return removed


def remove_built_images(installation: str, plugins: Iterable[str] = ("hello",)) -> None:
    """Remove the images the CLI built for `plugins` of a server outside the cluster (its own installation)."""
    engine = docker.from_env()
    built = installation_images(engine, installation, plugins)
    wait_for(lambda: remove_images(engine, built), 60, f"the images of installation {installation} to go")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with installed_chart() as installed:
        yield installed


@pytest.fixture(scope="module")
def hello(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sysops, Path]]:
    workdir = tmp_path_factory.mktemp("k8s")
    plugin_dir = copy_example("hello", workdir)
    cli = cluster.cli(workdir / "home")
    engine = docker.from_env()
    existing = installation_images(engine, SERVER_INSTALLATION, ["hello"])
    up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
    assert up.returncode == 0, up.stderr
    yield cli, plugin_dir
    cli.run("plugin", "down", "hello")  # the last test took it down already, unless it failed
    new_images = installation_images(engine, SERVER_INSTALLATION, ["hello"]) - existing
    wait_for(lambda: remove_images(engine, new_images), 60, "the hello images the tests built to go")


def _plugin_pods(cluster: Cluster) -> list[dict]:  # type: ignore[type-arg]
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", "sysops.plugin=hello", "-o", "json"))
    return [pod for pod in pods["items"] if pod["metadata"].get("deletionTimestamp") is None]


def test_routed_command_answers_from_the_pod(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, _ = hello
    assert cli.ok("greet", "Kubernetes") == "Hello, Kubernetes!\n"
    assert json.loads(cli.ok("info", "--output", "json"))["plugin"] == "hello"
    [listed] = json.loads(cli.ok("plugin", "ls", "--output", "json"))
    assert (listed["state"], listed["health"]) == ("Active", "SERVING")
    [pod] = _plugin_pods(cluster)
    assert listed["container"] == pod["metadata"]["name"]
    assert "serving on 0.0.0.0:50051" in cli.ok("plugin", "logs", "hello")


def test_pod_carries_the_manifest_limits_and_hardening(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    [pod] = _plugin_pods(cluster)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "500m"  # cpu_percent: 50
    assert container["resources"]["limits"]["memory"] == "128Mi"  # memory_mb: 128
    assert container["resources"]["requests"] == container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    context = pod["spec"]["securityContext"]
    assert is_plugin_uid(context["runAsUser"]) and context["runAsGroup"] == context["fsGroup"] == context["runAsUser"]
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"]["automountServiceAccountToken"] is False
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Plugin", "hello", True)
    assert {e["name"] for e in container["env"]} >= {"SYSOPS_TOKEN", "SYSOPS_LISTEN"}
    policy = json.loads(kubectl("-n", cluster.namespace, "get", "networkpolicy", pod["metadata"]["name"], "-o", "json"))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # One way out: the server pods' gRPC port (host services), nothing else (hello declares no network).
    assert policy["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": ORCHESTRATOR_SELECTOR}}], "ports": [{"protocol": "TCP", "port": 7443}]}
    ]


def test_broken_version_rolls_back_and_the_old_pod_keeps_serving(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, plugin_dir = hello
    [before] = _plugin_pods(cluster)
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('no database')"))
    try:
        broken = cli.run("plugin", "up", str(plugin_dir))
        assert broken.returncode == 6, broken.stderr
        assert "initialize() of plugin 'hello' failed: RuntimeError: no database" in broken.stderr
    finally:
        source.write_text(good)
    assert cli.ok("greet", "still") == "Hello, still!\n"
    assert [pod["metadata"]["name"] for pod in _plugin_pods(cluster)] == [before["metadata"]["name"]]
    status = json.loads(cli.ok("plugin", "status", "hello", "--output", "json"))
    assert status["events"][-1]["kind"] == "rolled-back"


def test_new_version_then_rollback_to_the_first(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, plugin_dir = hello
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    source.write_text(good.replace('f"{greeting.capitalize()}, {name}!"', 'f"{greeting.capitalize()} v2, {name}!"'))
    try:
        cli.ok("plugin", "up", str(plugin_dir))
        assert cli.ok("greet", "k8s") == "Hello v2, k8s!\n"
        rolled = cli.run("plugin", "rollback", "hello", "--to", "1")
        assert rolled.returncode == 0 and "building" not in rolled.stderr, rolled.stderr
        assert cli.ok("greet", "k8s") == "Hello, k8s!\n"
        assert len(_plugin_pods(cluster)) == 1
    finally:
        source.write_text(good)


def test_restarted_orchestrator_pod_keeps_the_plugin(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, _ = hello
    [plugin_pod] = _plugin_pods(cluster)
    old_pod, _ = cluster.server_pod()
    kubectl("-n", cluster.namespace, "delete", "pod", old_pod, "--wait=true")
    # The new pod may get the old one's IP back: wait for a ready pod with another name.
    wait_for(lambda: cluster.server_pod()[0] not in ("", old_pod), 120, "a new orchestrator pod")
    cli = cluster.cli(cli.home)
    wait_for(lambda: cli.run("plugin", "ls").returncode == 0, 60, "the new server to answer")
    [listed] = json.loads(cli.ok("plugin", "ls", "--output", "json"))
    assert (listed["name"], listed["state"]) == ("hello", "Active")
    assert cli.ok("greet", "again") == "Hello, again!\n"
    assert [pod["metadata"]["name"] for pod in _plugin_pods(cluster)] == [plugin_pod["metadata"]["name"]]
    history = json.loads(cli.ok("plugin", "history", "hello", "--output", "json"))
    assert [r["revision"] for r in history] == [1, 2]


def test_down_leaves_no_objects_behind(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli = cluster.cli(hello[0].home)
    cli.ok("plugin", "down", "hello")
    wait_for(lambda: cluster.plugin_objects() == [], 60, "the plugin's pods, policies and state to be deleted")
    assert json.loads(cli.ok("plugin", "ls", "--output", "json")) == []


def test_a_server_outside_the_cluster_restores_state_from_plugin_objects(tmp_path: Path) -> None:
    """The Kubernetes driver driven from this machine (kubeconfig): state survives losing the server's store."""
    namespace = f"sysops-host-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", str(ROOT / "charts" / "sysops" / "crds"))  # the chart's CRD (cluster-wide)
    kubectl("create", "namespace", namespace)
    token = uuid.uuid4().hex
    port = 17000 + int(uuid.uuid4().int % 1000)
    server_env = {
        **os.environ, "SYSOPS_NAMESPACE": namespace, "SYSOPS_SERVER_TOKEN": token, "SYSOPS_HOME": str(tmp_path / "srv"),
    }  # fmt: skip

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [SYSOPS, "serve", "--runtime", "kubernetes", "--listen", f"127.0.0.1:{port}"],
            env=server_env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None and "control API on" in process.stderr.readline()
        return process

    server = start()
    env = {
        **os.environ,
        "SYSOPS_HOME": str(tmp_path / "cli"),
        "SYSOPS_SERVER": f"127.0.0.1:{port}",
        "SYSOPS_TOKEN": token,
        "SYSOPS_INSECURE": "1",  # this server has no TLS
    }
    cli = Sysops(home=tmp_path / "cli", env=env)
    try:
        plugin_dir = copy_example("hello", tmp_path)
        cli.ok("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
        assert cli.ok("greet", "host") == "Hello, host!\n"
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(tmp_path / "srv")  # the server's local store is gone, as with an emptyDir
        server = start()
        [listed] = json.loads(cli.ok("plugin", "ls", "--output", "json"))
        assert (listed["name"], listed["state"], listed["revision"]) == ("hello", "Active", 1)
        assert [r["revision"] for r in json.loads(cli.ok("plugin", "history", "hello", "--output", "json"))] == [1]
        assert cli.ok("greet", "again") == "Hello, again!\n"
        cli.ok("plugin", "down", "hello")
        wait_for(
            lambda: (
                kubectl("-n", namespace, "get", "pods,networkpolicies,plugins", "-l", "sysops.plugin", "-o", "name")
                == ""
            ),
            60,
            "the plugin's objects to be deleted",
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
        delete_namespace(namespace)
        remove_built_images(Settings(home=tmp_path / "srv").installation_id)
