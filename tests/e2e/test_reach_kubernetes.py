"""Reaching the chart's server as users do (issue 12, part 6): through its Service, and through
`kubectl port-forward` from a workstation.

- In the cluster network: the CLI's SYSOPS_SERVER is the Service's ClusterIP and port (the test cluster has no
  DNS; kube-proxy routes the ClusterIP to the ready server pod), never a pod IP; `plugin up`, a routed command
  and `plugin ls` go through it.
- From a workstation: `kubectl port-forward svc/sysops 0:7443` (the local port kubectl picks is read from its
  output, within a bound; the process is killed afterwards); the same commands through 127.0.0.1:<port>. When
  the chart serves TLS (Secret `sysops-tls`), the CLI verifies the server's certificate with the chart's CA
  against the Service's name (`sysops.<namespace>.svc`), and a name the certificate does not carry is refused.
A small plugin (10% of a CPU: the node has 2) written in the test's tmp directory. Own namespace
(test_kubernetes.installed_chart), everything removed afterwards, including the images the CLI built; skipped
without a cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e import test_kubernetes as chart
from tests.e2e.test_kubernetes import Cluster, kubectl
from tests.integration.conftest import Sysops, plugin_code, wait_for, write_plugin

pytestmark = chart.pytestmark
PLUGIN = "reach"
COMMAND = "reach-ping"
SMALL = "limits: {cpu_percent: 10, memory_mb: 64}\nliveness: {interval_s: 10, timeout_s: 15, failures: 6}\n"
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> 7443")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with chart.installed_chart() as installed:
        yield installed


@pytest.fixture(scope="module")
def plugin_dir(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The small plugin's directory; afterwards its pods are gone and the images the CLI built for it removed."""
    engine = docker.from_env()
    existing = chart.installation_images(engine, chart.SERVER_INSTALLATION, [PLUGIN])
    directory = tmp_path_factory.mktemp("k8s-reach")
    try:
        yield write_plugin(
            directory / PLUGIN,
            name=PLUGIN,
            code=plugin_code(PLUGIN, command=COMMAND, answer="pong"),
            manifest_extra=SMALL,
            command=COMMAND,
        )
    finally:
        with contextlib.suppress(AssertionError):  # the namespace goes anyway; the images must
            wait_for(lambda: cluster.plugin_objects() == [], 60, "the plugin's pods and policies to be deleted")
        built = chart.installation_images(engine, chart.SERVER_INSTALLATION, [PLUGIN]) - existing
        wait_for(lambda: chart.remove_images(engine, built), 60, "the reach images the test built to go")


def tls_ca(cluster: Cluster, directory: Path) -> Path | None:
    """The chart's CA certificate written to `directory`, or None when the chart serves no TLS."""
    found = kubectl("-n", cluster.namespace, "get", "secret", "sysops-tls", "-o", "json", check=False)
    if not found:
        return None
    ca = directory / "sysops-ca.crt"
    ca.write_bytes(base64.b64decode(json.loads(found)["data"]["ca.crt"]))
    return ca


def drive(cli: Sysops, plugin_dir: Path) -> None:
    """up, a routed command, ls and down, each through the server the CLI's environment names."""
    try:
        up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
        assert up.returncode == 0, up.stderr
        assert cli.ok(COMMAND) == "pong\n"
        [listed] = json.loads(cli.ok("plugin", "ls", "--output", "json"))
        assert (listed["name"], listed["state"], listed["health"]) == (PLUGIN, "Active", "SERVING")
    finally:
        cli.run("plugin", "down", PLUGIN)
    assert json.loads(cli.ok("plugin", "ls", "--output", "json")) == []


@contextlib.contextmanager
def port_forward(cluster: Cluster, log: Path) -> Iterator[int]:
    """`kubectl port-forward svc/sysops 0:7443` running; yields the local port kubectl chose (read from its output
    within 30 s), kills it afterwards."""
    with open(log, "w") as sink:
        process = subprocess.Popen(
            ["kubectl", "-n", cluster.namespace, "port-forward", "svc/sysops", "0:7443", "--address", "127.0.0.1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: FORWARDING.search(log.read_text()) is not None or process.poll() is not None,
            30,
            "kubectl port-forward to say which local port it forwards",
        )
        chosen = FORWARDING.search(log.read_text())
        assert chosen is not None, f"kubectl port-forward exited ({process.returncode}): {log.read_text()}"
        yield int(chosen.group(1))
    finally:
        process.kill()
        process.wait(timeout=10)


def test_the_cli_drives_a_plugin_through_the_service(cluster: Cluster, plugin_dir: Path, tmp_path: Path) -> None:
    service = json.loads(kubectl("-n", cluster.namespace, "get", "service", "sysops", "-o", "json"))
    assert service["spec"]["type"] == "ClusterIP"
    cli = cluster.cli(tmp_path / "home")
    assert cli.env["SYSOPS_SERVER"] == f"{service['spec']['clusterIP']}:7443"
    server_pods = json.loads(
        kubectl("-n", cluster.namespace, "get", "pods", "-l", "app.kubernetes.io/component=server", "-o", "json")
    )
    assert service["spec"]["clusterIP"] not in {pod["status"].get("podIP") for pod in server_pods["items"]}
    drive(cli, plugin_dir)


def test_the_cli_drives_a_plugin_through_kubectl_port_forward(
    cluster: Cluster, plugin_dir: Path, tmp_path: Path
) -> None:
    with port_forward(cluster, tmp_path / "port-forward.log") as port:
        env = {**cluster.cli(tmp_path / "home").env, "SYSOPS_SERVER": f"127.0.0.1:{port}"}
        ca = tls_ca(cluster, tmp_path)
        if ca is not None:  # the workstation verifies the server's certificate against the Service's name
            env |= {"SYSOPS_SERVER_CA": str(ca), "SYSOPS_SERVER_NAME": f"sysops.{cluster.namespace}.svc"}
            env.pop("SYSOPS_INSECURE", None)
            refused = Sysops(home=tmp_path / "home", env={**env, "SYSOPS_SERVER_NAME": "not-sysops.invalid"})
            wrong_name = refused.run("plugin", "ls")
            assert wrong_name.returncode != 0, "a certificate for another name was accepted"
        drive(Sysops(home=tmp_path / "home", env=env), plugin_dir)
