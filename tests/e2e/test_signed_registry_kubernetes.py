"""Signed plugins through a real registry on the Kubernetes test cluster: the chart's server verifies a plugin's
signature, read from the registry beside the image (tag sha256-<hex>.sig), before any pod starts, and the pod
pulls the image from that registry.

The registry is the loopback one of tests/registry_fixture.py (the node's engine pushes to and pulls from
127.0.0.1 without TLS); the server pod reaches it through a forwarder the test runs on the docker0 gateway
(chart value trust.registryEndpoint). The CLI signs its builds with its key `ci`, which the chart trusts as a
community key (trust.keys); the policy makes private plugins need a community signature. Then:
- a plugin signed by `ci` comes up, its pod's image is the registry's (imagePullPolicy Always) and it answers;
  the pod spec names the image by the manifest digest the tag named at the roll (`REPO@sha256:...`), the one
  whose signature the server verified, and moving the tag to another image afterwards changes nothing: a new pod
  (the old one deleted) pulls the same digest and answers;
- a plugin signed by a key the server does not know is refused (exit 9, "unknown signer key"), no pod created;
- the same image with its `.sig` artifact deleted from the registry is refused as unsigned (exit 9).
Own namespace (test_kubernetes.installed_chart), everything removed afterwards; skipped without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sysops.settings import Settings

from tests.e2e import test_kubernetes as chart
from tests.e2e.test_kubernetes import Cluster, kubectl
from tests.integration.conftest import Sysops, bridge_gateway, plugin_code, wait_for, write_plugin
from tests.registry_fixture import (
    LoopbackRegistry,
    registry_fixture,  # noqa: F401  (defines the fixture `registry`)
)

pytestmark = chart.pytestmark
SIGNED, ROGUE = "signed-one", "rogue-one"
SMALL = "limits: {cpu_percent: 20, memory_mb: 64}\nliveness: {interval_s: 10, timeout_s: 15, failures: 6}\n"
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def docker_gateway() -> str:
    """The docker0 bridge's address: where pods reach the node."""
    return bridge_gateway()


@contextlib.contextmanager
def forwarder(listen_host: str, target_port: int) -> Iterator[int]:
    """Forward TCP connections on listen_host:<free port> to 127.0.0.1:target_port until the block ends."""
    server = socket.create_server((listen_host, 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def signing_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's home with its keys `ci` (trusted by the server) and `rogue` (not)."""
    home = tmp_path_factory.mktemp("k8s-signed") / "home"
    cli = Sysops(home=home, env={**os.environ, "SYSOPS_HOME": str(home)})
    cli.ok("key", "generate", "ci")
    cli.ok("key", "generate", "rogue")
    return home


@pytest.fixture(scope="module")
def cluster(registry: LoopbackRegistry, signing_home: Path) -> Iterator[Cluster]:
    port = int(registry.host.rpartition(":")[2])
    gateway = docker_gateway()
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "sysops.cli.main", "key", "ls", "--output", "json"],
            env={**os.environ, "SYSOPS_HOME": str(signing_home)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ci_key = next(row["public_key"] for row in listed if row["name"] == "ci")
    with forwarder(gateway, port) as forwarded, chart.installed_chart(
        "--set", f"plugins.registry={registry.host}",
        "--set", "plugins.imagePullPolicy=Always",
        "--set-json", f"trust.keys={json.dumps([{'name': 'ci', 'tier': 'community', 'publicKey': ci_key}])}",
        "--set", f"trust.registryEndpoint={gateway}:{forwarded}",
        "--set", "trust.registryInsecure=true",
        "--set-json", 'policy.trust={"private": {"require_signature": true, "signers": ["community"]}}',
    ) as installed:  # fmt: skip
        yield installed


@pytest.fixture(scope="module")
def cli(cluster: Cluster, signing_home: Path, registry: LoopbackRegistry) -> Iterator[Sysops]:
    engine = docker.from_env()
    sysops = cluster.cli(signing_home)
    sysops = Sysops(home=signing_home, env={**sysops.env, "SYSOPS_REGISTRY": registry.host, "SYSOPS_SIGNING_KEY": "ci"})
    try:
        yield sysops
    finally:
        for name in (SIGNED, ROGUE):
            sysops.run("plugin", "down", name, "--force")
        wait_for(lambda: cluster.plugin_objects() == [], 90, "the plugins' pods to be deleted")
        built = chart.installation_images(engine, chart.SERVER_INSTALLATION, (SIGNED, ROGUE))
        wait_for(lambda: chart.remove_images(engine, built), 60, "the plugin images the tests built to go")


def small_plugin(directory: Path, name: str) -> Path:
    """A plugin `name` whose command `<name>-ping` answers pong, with small limits."""
    command = f"{name.split('-')[0]}-ping"
    return write_plugin(
        directory / name, name=name, code=plugin_code(name, command=command), manifest_extra=SMALL, command=command
    )


def plugin_pod_images(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    listed = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", f"sysops.plugin={name}", "-o", "json"))
    return [
        (pod["spec"]["containers"][0]["image"], pod["status"].get("containerStatuses", [{}])[0].get("imageID", ""))
        for pod in listed["items"]
    ]


def registry_tags(registry: LoopbackRegistry, repository: str) -> list[str]:
    with urllib.request.urlopen(f"{registry.url}/v2/{repository}/tags/list", timeout=10) as response:
        return list(json.loads(response.read())["tags"] or [])


def test_a_signed_plugin_is_verified_by_the_server_and_pulled_from_the_registry(
    cluster: Cluster, cli: Sysops, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    directory = small_plugin(tmp_path, SIGNED)
    cli.ok("plugin", "up", str(directory))
    repository = f"sysops-plugins/{chart.SERVER_INSTALLATION}-{SIGNED}"
    tags = registry_tags(registry, repository)
    assert any(tag.endswith(".sig") for tag in tags), tags
    [image_tag] = [tag for tag in tags if not tag.endswith(".sig")]
    [(image, image_id)] = plugin_pod_images(cluster, SIGNED)
    pinned = f"{registry.host}/{repository}@{registry.manifest_digest(repository, image_tag)}"
    assert image == pinned  # what the server verified, not the tag
    assert image_id.endswith(pinned.partition("@")[2]) and f"{registry.host}/{repository}@sha256:" in image_id
    assert cli.ok("signed-ping").strip() == "pong"
    [revision] = json.loads(cli.ok("plugin", "history", SIGNED, "--output", "json"))
    assert revision["digest"] == pinned  # the revision keeps the digest: rollbacks and replicas pull it


def test_a_tag_moved_after_the_roll_changes_nothing_that_runs(
    cluster: Cluster, cli: Sysops, registry: LoopbackRegistry
) -> None:
    repository = f"sysops-plugins/{chart.SERVER_INSTALLATION}-{SIGNED}"
    [image_tag] = [tag for tag in registry_tags(registry, repository) if not tag.endswith(".sig")]
    [(pinned, _)] = plugin_pod_images(cluster, SIGNED)
    engine = docker.from_env()
    moved = f"{registry.host}/{repository}:{image_tag}"
    other = engine.images.get(Settings().base_image)  # not the signed plugin: no plugin at all
    other.tag(moved)
    try:
        engine.images.push(moved)
    finally:
        engine.images.remove(moved)  # the tag only: the base image keeps its own
    assert registry.manifest_digest(repository, image_tag) != pinned.partition("@")[2]  # the tag moved
    [before] = json.loads(
        kubectl("-n", cluster.namespace, "get", "pods", "-l", f"sysops.plugin={SIGNED}", "-o", "json")
    )["items"]
    kubectl("-n", cluster.namespace, "delete", "pod", before["metadata"]["name"], "--wait=true")
    wait_for(
        lambda: (
            [p for p in plugin_pod_images(cluster, SIGNED) if p[1]] != []
            and cli.run("signed-ping").stdout.strip() == "pong"
        ),
        120,
        "a new pod of the signed plugin, brought by reconciliation, to answer",
    )
    [(image, image_id)] = plugin_pod_images(cluster, SIGNED)
    assert image == pinned and image_id.endswith(pinned.partition("@")[2])  # the verified image, pulled again


def test_an_unknown_signer_and_an_unsigned_image_are_refused_by_the_server(
    cluster: Cluster, cli: Sysops, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    directory = small_plugin(tmp_path, ROGUE)
    rogue = Sysops(home=cli.home, env={**cli.env, "SYSOPS_SIGNING_KEY": "rogue"})
    refused = rogue.run("plugin", "up", str(directory))
    assert refused.returncode == 9, refused.stderr
    assert "unknown signer key" in refused.stderr and "Traceback" not in refused.stderr
    assert plugin_pod_images(cluster, ROGUE) == []

    repository = f"sysops-plugins/{chart.SERVER_INSTALLATION}-{ROGUE}"
    [image_tag] = [tag for tag in registry_tags(registry, repository) if not tag.endswith(".sig")]
    [signature_tag] = [tag for tag in registry_tags(registry, repository) if tag.endswith(".sig")]
    digest = registry.manifest_digest(repository, signature_tag)
    request = urllib.request.Request(f"{registry.url}/v2/{repository}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    script = (
        "import sys; from pathlib import Path\n"
        "from sysops.cli.plugin_cmd import orchestrator_for_cli\n"
        "from sysops.core.manifest import load_manifest\n"
        "from sysops.errors import SysopsError\n"
        "try:\n"
        f"    orchestrator_for_cli().up_image(load_manifest(Path({str(directory)!r})), sys.argv[1], '', 'test')\n"
        "except SysopsError as error:\n"
        "    print(error, file=sys.stderr); sys.exit(int(error.exit_code))\n"
    )
    unsigned = subprocess.run(
        [sys.executable, "-c", script, f"{registry.host}/{repository}:{image_tag}"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unsigned.returncode == 9, unsigned.stderr
    assert "unsigned, tier private requires a signature" in unsigned.stderr
    assert plugin_pod_images(cluster, ROGUE) == []
