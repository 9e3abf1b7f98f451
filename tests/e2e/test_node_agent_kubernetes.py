"""Kubernetes end to end: the chart's node agent enforces the limits Kubernetes cannot express, measured from
inside a plugin pod as the Docker tests measure them (tests/integration/test_limits.py).

The chart is installed with `--set nodeAgent.enabled=true`; the hostile test plugin (tests/integration/plugins/
hostile) comes up with `disk_io_mb_per_sec`, `network_connections` and `pids`. Its O_DIRECT writes and reads on
/data are held at the throttle, its third connection to a server this test holds open on the Docker bridge's
gateway is refused, its fork bomb stops at pids.max, and `plugin status` shows the agent's read-back (the pod
condition sysops.dev/limits-applied in the pod's status). The pod's readiness gate on that condition holds it
unready while the condition is not True (v1.20 honours readiness gates), a custom condition written through
pods/status survives the kubelet's own status updates, and the agent may not patch a pod (only its status). A
container the kubelet restarts gets its limits again. Upgraded with the agent off, the server refuses the same
limits and names the chart value. One chart install; the limited plugin gets 20 % CPU (its O_DIRECT loop must
not wait for CPU), the refused one 10 % (the test node has 2 CPUs for everybody).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from sysops.nodeagent.annotations import APPLIED_CONDITION, LIMITS_ANNOTATION

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
from tests.integration.conftest import SYSOPS, Sysops, bridge_gateway, wait_for
from tests.integration.test_limits import HoldingServer, hostile

pytestmark = kubernetes_marks

MIB = 1024 * 1024
IO_MB = 5
CONNECTIONS = 2
PIDS = 40
#: Tasks the kubelet's exec probes (readiness, liveness: a Python with gRPC's threads) may add to a pod's cgroup.
EXEC_PROBE_TASKS = 12


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # One server replica: the agent does not need HA, the node's CPU is shared, and the upgrade below then
    # replaces the server by Recreate (a rolling update of two leader-electing replicas does not finish:
    # the new standby is never Ready while the old leader lives).
    with installed_chart("--set", "nodeAgent.enabled=true", "--set", "server.replicas=1") as installed:
        yield installed


@pytest.fixture(scope="module")
def gateway() -> str:
    """The Docker bridge's address on this machine, which the test cluster's pods reach."""
    return bridge_gateway()


@pytest.fixture(scope="module")
def holding(gateway: str) -> Iterator[HoldingServer]:
    server = HoldingServer(gateway)
    yield server
    server.close()


@pytest.fixture(scope="module")
def limited(
    cluster: Cluster, holding: HoldingServer, gateway: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sysops]:
    """The hostile plugin up with the three limits only the node agent enforces."""
    workdir = tmp_path_factory.mktemp("agent")
    cli = cluster.cli(workdir / "home")
    engine = docker.from_env()
    existing = installation_images(engine, SERVER_INSTALLATION, ["hostile", "hostile-b"])
    extra = (
        f"limits: {{cpu_percent: 20, memory_mb: 96, disk_io_mb_per_sec: {IO_MB}, "
        f"network_connections: {CONNECTIONS}, pids: {PIDS}}}\n"
        f"network:\n  - host: {gateway}\n    ports: [{holding.port}]\n"
    )
    started = time.monotonic()
    up = cli.run("plugin", "up", str(hostile(workdir, extra)), "--runtime", "kubernetes", timeout=400)
    print(f"plugin up with the node agent's limits: {time.monotonic() - started:.1f}s")
    assert up.returncode == 0, up.stderr
    yield cli
    cli.run("plugin", "down", "hostile")
    built = installation_images(engine, SERVER_INSTALLATION, ["hostile", "hostile-b"]) - existing
    wait_for(lambda: remove_images(engine, built), 90, "the hostile images the tests built to go")


def plugin_pod(cluster: Cluster, plugin: str = "hostile") -> dict[str, Any]:
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", f"sysops.plugin={plugin}", "-o", "json"))
    [pod] = [pod for pod in pods["items"] if pod["metadata"].get("deletionTimestamp") is None]
    return dict(pod)


def cgroup_file(container_id: str, controller: str, name: str) -> Path:
    """A file of a pod container's cgroup on this node (the test cluster: cgroupfs driver, /docker/<id>)."""
    bare = container_id.rpartition("://")[2]
    [found] = list(Path("/sys/fs/cgroup", controller).glob(f"**/{bare}"))
    return found / name


def conditions(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {condition["type"]: condition for condition in pod["status"].get("conditions", [])}


def read_back(pod: dict[str, Any]) -> dict[str, Any]:
    """The agent's read-back: the message of the pod condition sysops.dev/limits-applied ({} when none)."""
    condition = conditions(pod).get(APPLIED_CONDITION)
    return dict(json.loads(condition["message"])) if condition else {}


def patch_status(cluster: Cluster, pod: str, condition: dict[str, str]) -> None:
    """Set one pod condition through pods/status (a strategic merge by type), as the agent does."""
    body = json.dumps({"status": {"conditions": [{**condition, "lastTransitionTime": None}]}})
    kubectl("-n", cluster.namespace, "patch", "pod", pod, "--subresource=status", "--type=strategic", "-p", body)


def test_limits_are_applied_and_read_back_on_the_pod(cluster: Cluster, limited: Sysops) -> None:
    pod = plugin_pod(cluster)
    annotations = pod["metadata"]["annotations"]
    assert json.loads(annotations[LIMITS_ANNOTATION]) == {
        "io_bytes_per_sec": IO_MB * MIB,
        "network_connections": CONNECTIONS,
        "pids": PIDS,
    }
    assert pod["spec"]["readinessGates"] == [{"conditionType": APPLIED_CONDITION}]
    assert conditions(pod)[APPLIED_CONDITION]["status"] == "True"
    wait_for(lambda: conditions(plugin_pod(cluster))["Ready"]["status"] == "True", 30, "the pod Ready (probe, gate)")
    assert APPLIED_CONDITION not in annotations  # the read-back is in the status only
    applied = read_back(pod)
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    print(f"read-back on {pod['metadata']['name']}: {applied}")
    assert applied["container_id"] == container_id and applied["error"] == ""
    assert applied["pids"] == PIDS and applied["network_connections"] == CONNECTIONS
    assert set(applied["read_bps"].values()) == set(applied["write_bps"].values()) == {IO_MB * MIB}
    # The kernel's own files on this node say the same.
    assert int(cgroup_file(container_id, "pids", "pids.max").read_text()) == PIDS
    throttle = cgroup_file(container_id, "blkio", "blkio.throttle.write_bps_device").read_text().split()
    assert throttle[1::2] == [str(IO_MB * MIB)] * len(applied["write_bps"])
    limits = json.loads(limited.ok("plugin", "status", "hostile", "--output", "json"))["limits"]
    print(f"plugin status limits: {limits}")
    assert limits["applied"]["disk_io_mb_per_sec"] == IO_MB
    assert limits["applied"]["network_connections"] == CONNECTIONS
    assert limits["applied"]["pids"] == PIDS
    assert not limits["mismatches"]


def test_disk_io_is_held_at_the_throttle_inside_the_pod(limited: Sysops) -> None:
    measured = json.loads(limited.ok("disk", "--mb", "12", "--output", "json", timeout=120))
    print(f"disk_io_mb_per_sec {IO_MB}: measured {measured}")
    # O_DIRECT + fsync, MiB/s. At most the throttle (unthrottled, this disk does hundreds); the lower bound only
    # says it was measured near it: the disk is shared with every other test on this machine.
    assert IO_MB * 0.5 <= measured["write_mb_per_sec"] <= IO_MB * 1.2, measured
    assert IO_MB * 0.5 <= measured["read_mb_per_sec"] <= IO_MB * 1.2, measured


def test_the_connection_over_the_limit_is_refused(limited: Sysops, holding: HoldingServer, gateway: str) -> None:
    count = CONNECTIONS + 2
    outcomes = json.loads(limited.ok("connect", gateway, str(holding.port), "--count", str(count), "--output", "json"))
    print(f"network_connections {CONNECTIONS}: {count} connects at once -> {outcomes}")
    assert outcomes == ["connected"] * CONNECTIONS + ["refused: ECONNREFUSED"] * 2
    # Once they are closed, connections are allowed again.
    assert limited.ok("connect", gateway, str(holding.port)) == "connected\n"


def test_the_fork_bomb_stops_at_the_pods_pids_limit(cluster: Cluster, limited: Sysops) -> None:
    container_id = plugin_pod(cluster)["status"]["containerStatuses"][0]["containerID"]
    current, events = (
        cgroup_file(container_id, "pids", "pids.current"),
        cgroup_file(container_id, "pids", "pids.events"),
    )
    bomb = subprocess.Popen([SYSOPS, "bomb", "--seconds", "3"], env=limited.env, stdout=subprocess.DEVNULL)
    peak = 0
    while bomb.poll() is None:
        peak = max(peak, int(current.read_text()))
        time.sleep(0.05)
    refused = int(events.read_text().split()[1])
    print(f"pids {PIDS}: peak {peak} processes, {refused} forks refused")
    assert bomb.returncode == 0
    # The kernel refused forks at the limit. pids.current may pass pids.max by the kubelet's exec probes: `docker
    # exec` moves their processes (and threads) into the cgroup, which pids.max does not stop (only a fork in it).
    assert refused > 0 and peak <= PIDS + EXEC_PROBE_TASKS, (peak, refused)
    assert limited.ok("ping") == "pong\n"


def test_the_readiness_gate_holds_the_pod_unready_until_the_agent_says_true(cluster: Cluster, limited: Sysops) -> None:
    name = plugin_pod(cluster)["metadata"]["name"]
    [account] = kubectl(
        "-n", cluster.namespace, "get", "daemonsets", "-o", "jsonpath={.items[*].spec.template.spec.serviceAccountName}"
    ).split()  # fmt: skip
    agent = f"system:serviceaccount:{cluster.namespace}:{account}"
    asked = (("patch", "pods"), ("update", "pods"), ("patch", "pods", "--subresource=status"), ("watch", "pods"))
    can_i = [
        kubectl("auth", "can-i", *question, "-n", cluster.namespace, "--as", agent, check=False) for question in asked
    ]
    assert [answer.strip() for answer in can_i] == ["no", "no", "yes", "yes"], (account, can_i)
    # Read-back withdrawn (status False, no container): the kubelet keeps the pod unready though its container is
    # ready, until the agent, seeing it does not match the running container, applies and says True again.
    patch_status(cluster, name, {"type": APPLIED_CONDITION, "status": "False", "message": "{}"})
    pod = plugin_pod(cluster)
    print(f"condition False: Ready {conditions(pod)['Ready']}, ContainersReady {conditions(pod)['ContainersReady']}")
    started = time.monotonic()
    wait_for(lambda: conditions(plugin_pod(cluster))[APPLIED_CONDITION]["status"] == "True", 30, "the agent")
    wait_for(lambda: conditions(plugin_pod(cluster))["Ready"]["status"] == "True", 30, "the pod Ready again")
    print(f"the agent said True again and the pod is Ready {time.monotonic() - started:.1f}s later")
    # Held False with a matching read-back (the agent leaves it): the gate alone keeps the pod unready.
    matching = json.dumps(read_back(plugin_pod(cluster)))
    patch_status(cluster, name, {"type": APPLIED_CONDITION, "status": "False", "message": matching})

    def gated() -> bool:
        pod = plugin_pod(cluster)
        return conditions(pod)["ContainersReady"]["status"] == "True" and conditions(pod)["Ready"]["status"] == "False"

    wait_for(gated, 30, "the kubelet to hold the pod unready on its readiness gate")
    time.sleep(5)  # the kubelet's status updates (probes every 2 s) do not undo it
    assert gated() and conditions(plugin_pod(cluster))[APPLIED_CONDITION]["status"] == "False"
    patch_status(cluster, name, {"type": APPLIED_CONDITION, "status": "True", "message": matching})
    wait_for(lambda: conditions(plugin_pod(cluster))["Ready"]["status"] == "True", 30, "the pod Ready again")


def test_a_restarted_container_gets_its_limits_again(cluster: Cluster, limited: Sysops) -> None:
    before = plugin_pod(cluster)["status"]["containerStatuses"][0]
    # A condition nobody but this test writes: the kubelet's status updates of the restart must keep it.
    probe = {"type": "sysops.dev/e2e-probe", "status": "True", "message": "kept"}
    patch_status(cluster, plugin_pod(cluster)["metadata"]["name"], probe)
    docker.from_env().containers.get(before["containerID"].rpartition("://")[2]).kill()

    def reapplied() -> bool:
        pod = plugin_pod(cluster)
        status = pod["status"]["containerStatuses"][0]
        running = status.get("state", {}).get("running") is not None
        return (
            running
            and status["containerID"] != before["containerID"]
            and read_back(pod).get("container_id") == status["containerID"]
        )

    started = time.monotonic()
    wait_for(reapplied, 120, "the node agent to apply the limits to the restarted container")
    pod = plugin_pod(cluster)
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    print(
        f"restart {before['containerID'][-12:]} -> {container_id[-12:]}: "
        f"limits again after {time.monotonic() - started:.1f}s"
    )
    assert int(cgroup_file(container_id, "pids", "pids.max").read_text()) == PIDS
    assert str(IO_MB * MIB) in cgroup_file(container_id, "blkio", "blkio.throttle.read_bps_device").read_text()
    wait_for(lambda: limited.run("ping").stdout == "pong\n", 60, "the restarted plugin to answer")
    kept = conditions(plugin_pod(cluster)).get("sysops.dev/e2e-probe", {})
    assert (kept.get("status"), kept.get("message")) == ("True", "kept"), kept
    assert not json.loads(limited.ok("plugin", "status", "hostile", "--output", "json"))["limits"]["mismatches"]


def test_without_the_agent_the_limits_are_refused_naming_the_chart_value(
    cluster: Cluster, limited: Sysops, gateway: str, holding: HoldingServer
) -> None:
    old_server, _ = cluster.server_pod()
    subprocess.run(
        ["helm", "upgrade", "sysops", str(ROOT / "charts" / "sysops"), "-n", cluster.namespace, "--reuse-values",
         "--set", "nodeAgent.enabled=false", "--wait", "--timeout", "180s"],
        check=True, timeout=300,
    )  # fmt: skip
    wait_for(lambda: cluster.server_pod()[0] not in ("", old_server), 120, "the server without the agent")
    assert kubectl("-n", cluster.namespace, "get", "daemonsets", "-o", "name").strip() == ""
    cli = cluster.cli(limited.home)
    wait_for(lambda: cli.run("plugin", "ls").returncode == 0, 60, "the new server to answer")
    extra = (
        f"limits: {{cpu_percent: 10, memory_mb: 96, disk_io_mb_per_sec: {IO_MB}, network_connections: {CONNECTIONS}}}\n"
        f"network:\n  - host: {gateway}\n    ports: [{holding.port}]\n"
    )
    refused = cli.run("plugin", "up", str(hostile(limited.home.parent, extra, "hostile-b")), "--runtime", "kubernetes")
    print(f"without the agent: exit {refused.returncode}: {refused.stderr.strip()}")
    assert refused.returncode == 6, refused.stderr
    assert "limits.disk_io_mb_per_sec and limits.network_connections" in refused.stderr
    assert "--set nodeAgent.enabled=true" in refused.stderr
    assert kubectl("-n", cluster.namespace, "get", "pods", "-l", "sysops.plugin=hostile-b", "-o", "name") == ""
