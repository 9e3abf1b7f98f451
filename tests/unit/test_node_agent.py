"""The node agent's pure parts: the annotations' contract, the connection-limit rules, the cgroup writes on a fake
cgroup tree, the agent's decisions per pod, and the driver's acceptance, refusal, wait and read-back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from sysops.errors import RuntimeOperationError, StartFailedError
from sysops.nodeagent import pod_netns
from sysops.nodeagent.agent import Enforcer, NodeAgent
from sysops.nodeagent.annotations import (
    APPLIED_CONDITION,
    LIMITS_ANNOTATION,
    AppliedLimits,
    NodeLimits,
    mismatches,
)
from sysops.nodeagent.cgroup_limits import CgroupError, CgroupLimiter
from sysops.nodeagent.connections import CHAIN, ConnectionLimiter, limit_in, limit_rules
from sysops.runtime.base import ResourceLimits
from sysops.runtime.docker import network as docker_network
from sysops.runtime.kubernetes import node_limits
from sysops.runtime.kubernetes.driver import KubernetesDriver
from sysops.runtime.netns_firewall import connection_limit_rules, held_namespace_prefix, nsenter_prefix

from tests.unit.test_kubernetes_pod_tokens import POD, RecordingApi, _spec, api, key_file  # noqa: F401

MIB = 1024 * 1024
CONTAINER = "docker://" + "ab" * 32
WANTED = NodeLimits(pids=40, io_bytes_per_sec=5 * MIB, network_connections=2)


def applied(**changes: Any) -> AppliedLimits:
    values: dict[str, Any] = {
        "container_id": CONTAINER,
        "pids": 40,
        "read_bps": {"254:0": 5 * MIB},
        "write_bps": {"254:0": 5 * MIB},
        "network_connections": 2,
    }
    return AppliedLimits(**{**values, **changes})


# annotations


def test_wanted_limits_round_trip_and_leave_out_what_is_not_limited() -> None:
    limits = ResourceLimits(nano_cpus=10**8, memory_bytes=64 * MIB, pids=40, io_bytes_per_sec=5 * MIB)
    text = NodeLimits.of(limits).to_json()
    assert json.loads(text) == {"pids": 40, "io_bytes_per_sec": 5 * MIB}
    assert NodeLimits.from_json(text) == NodeLimits(pids=40, io_bytes_per_sec=5 * MIB)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "is not JSON"),
        ("[1]", "is not a JSON object"),
        ('{"pids": -1}', "pids must be a whole number"),
        ('{"pids": true}', "pids must be a whole number"),
        ('{"cpu": 1}', "unknown keys: cpu"),
    ],
)
def test_a_bad_limits_annotation_is_named(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        NodeLimits.from_json(text)


def test_the_read_back_matches_only_what_was_asked_on_the_running_container() -> None:
    assert mismatches(WANTED, applied(), CONTAINER) == []
    assert mismatches(WANTED, AppliedLimits.from_json(applied().to_json()), CONTAINER) == []
    assert mismatches(WANTED, None, CONTAINER) == ["not applied by the node agent yet"]
    assert mismatches(WANTED, applied(error="no cgroup"), CONTAINER) == [
        "the node agent could not apply them: no cgroup"
    ]
    assert mismatches(WANTED, applied(), "docker://" + "cd" * 32) == [
        f"applied to container {'ab' * 6}, the pod now runs {'cd' * 6}"
    ]
    assert mismatches(WANTED, applied(pids=None), CONTAINER) == ["limits.pids: asked 40, applied None (pids.max)"]
    assert mismatches(WANTED, applied(network_connections=3), CONTAINER) == [
        "limits.network_connections: asked 2, applied 3 (iptables connlimit)"
    ]
    assert mismatches(WANTED, applied(read_bps={}, write_bps={}), CONTAINER)[-1] == (
        "limits.disk_io_mb_per_sec: no block device throttled"
    )
    assert mismatches(NodeLimits(pids=40), applied(network_connections=None), CONTAINER)[0].startswith(
        "limits.disk_io_mb_per_sec: asked set()"
    )


def test_the_throttle_is_shown_in_mib_per_second() -> None:
    assert applied().io_mb_per_sec() == 5
    assert applied(read_bps={"8:0": int(2.5 * MIB)}).io_mb_per_sec() == [2.5, 5]
    assert applied(read_bps={}, write_bps={}).io_mb_per_sec() is None


# connection limit


def test_both_runtimes_build_the_connection_limit_with_one_builder() -> None:
    docker_rules = docker_network.rules([("10.0.0.1/32", (80,))], 3)
    assert all(rule in docker_rules for rule in connection_limit_rules(docker_network.ALLOW_CHAIN, 3))
    pod_rules = limit_rules(3)
    assert pod_rules[0] == ["-N", CHAIN] and pod_rules[-1] == ["-A", "OUTPUT", "!", "-o", "lo", "-j", CHAIN]
    assert pod_rules[1:-1] == connection_limit_rules(CHAIN, 3)


def test_the_limit_is_read_back_only_when_output_jumps_to_it() -> None:
    chain = (
        f"-N {CHAIN}\n-A {CHAIN} -p tcp -m conntrack --ctstate NEW -m connlimit --connlimit-above 2 --connlimit-mask 0 "
        "--connlimit-saddr -j REJECT --reject-with tcp-reset\n"
    )
    assert limit_in("-P OUTPUT ACCEPT\n" + chain) is None
    assert limit_in(f"-P OUTPUT ACCEPT\n-A OUTPUT ! -o lo -j {CHAIN}\n" + chain) == 2


def test_the_agent_runs_the_nodes_iptables_in_the_held_namespace_never_by_pid() -> None:
    assert held_namespace_prefix(7, root="/host/root") == [
        "nsenter",
        "--net=/proc/self/fd/7",
        "--root=/host/root",
        "--",
    ]
    assert nsenter_prefix(42) == ["nsenter", "-t", "42", "-n"]  # the Docker runtime's own containers


# cgroups (a fake v1 tree)


@pytest.fixture
def node(tmp_path: Path) -> CgroupLimiter:
    bare = CONTAINER.rpartition("/")[2]
    for controller in ("pids", "blkio"):
        directory = tmp_path / "cgroup" / controller / "docker" / bare
        directory.mkdir(parents=True)
        (directory / "cgroup.procs").write_text("4242\n")
    (tmp_path / "cgroup" / "pids" / "docker" / bare / "pids.max").write_text("max\n")
    for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
        (tmp_path / "cgroup" / "blkio" / "docker" / bare / name).write_text("")
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"8:pids:/docker/{bare}\n7:blkio:/docker/{bare}\n")
    (proc / "mountinfo").write_text(
        "151 81 0:66 / / rw - overlay overlay rw\n"
        "160 151 254:1 /kubelet/pods/x/volumes/data /data rw - ext4 /dev/vda1 rw\n"
        "161 151 254:1 /kubelet/pods/x/etc-hosts /etc/hosts rw - ext4 /dev/vda1 rw\n"
    )
    disk = tmp_path / "sys" / "devices" / "vda"
    (disk / "vda1").mkdir(parents=True)
    (disk / "dev").write_text("254:0\n")
    (disk / "vda1" / "partition").write_text("1\n")
    (tmp_path / "sys" / "dev" / "block").mkdir(parents=True)
    (tmp_path / "sys" / "dev" / "block" / "254:1").symlink_to(disk / "vda1")
    return CgroupLimiter(root=tmp_path / "cgroup", proc=tmp_path / "proc", sys=tmp_path / "sys")


def test_the_container_cgroup_is_found_by_id_and_its_disk_by_its_mounts(node: CgroupLimiter) -> None:
    cgroup = node.find(CONTAINER)
    assert (cgroup.relative, cgroup.pid, cgroup.version) == (f"docker/{CONTAINER[-64:]}", 4242, 1)
    assert node.block_devices(cgroup) == ["254:0"]  # the partition's whole disk
    with pytest.raises(CgroupError, match="no cgroup of container cdcdcdcdcdcd"):
        node.find("docker://" + "cd" * 32)


def test_limits_are_written_to_the_cgroup_files_and_read_back(node: CgroupLimiter) -> None:
    cgroup = node.find(CONTAINER)
    node.apply(cgroup, 40, 5 * MIB)
    directory = node.root / "blkio" / cgroup.relative
    assert (directory / "blkio.throttle.write_bps_device").read_text() == f"254:0 {5 * MIB}"
    found = node.read(cgroup)
    assert (found.pids, found.read_bps, found.write_bps) == (40, {"254:0": 5 * MIB}, {"254:0": 5 * MIB})
    node.apply(cgroup, None, None)  # lifted: 0 removes a v1 device rule
    assert (directory / "blkio.throttle.read_bps_device").read_text() == "254:0 0"
    assert (node.root / "pids" / cgroup.relative / "pids.max").read_text() == "max"


# the agent's decisions


class FakeCore:
    """The API as the agent may use it: no `patch_namespaced_pod` (its Role has no pods patch)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def patch_namespaced_pod_status(
        self, name: str, namespace: str, body: dict[str, Any], _content_type: str = ""
    ) -> None:
        assert _content_type == "application/strategic-merge-patch+json"  # merged into conditions by type
        self.patches.append((name, body))


class FakeEnforcer(Enforcer):
    def __init__(self, result: AppliedLimits) -> None:
        self.result = result
        self.calls: list[tuple[str, NodeLimits]] = []

    def enforce(self, container_id: str, wanted: NodeLimits) -> AppliedLimits:
        self.calls.append((container_id, wanted))
        return self.result


def condition(read_back: AppliedLimits | str, status: str = "True") -> client.V1PodCondition:
    message = read_back if isinstance(read_back, str) else read_back.to_json()
    return client.V1PodCondition(type=APPLIED_CONDITION, status=status, message=message)


def pod(
    annotations: dict[str, str] | None,
    *,
    running: bool = True,
    namespace: str = "ns",
    node_name: str = "n1",
    conditions: list[client.V1PodCondition] | None = None,
) -> client.V1Pod:
    state = client.V1ContainerState(running=client.V1ContainerStateRunning() if running else None)
    status = client.V1ContainerStatus(
        name="plugin", image="i", image_id="i", ready=running, restart_count=0, container_id=CONTAINER, state=state
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p1", namespace=namespace, annotations=annotations),
        spec=client.V1PodSpec(node_name=node_name, containers=[client.V1Container(name="plugin")]),
        status=client.V1PodStatus(container_statuses=[status], conditions=conditions),
    )


def agent(result: AppliedLimits) -> tuple[NodeAgent, FakeCore, FakeEnforcer]:
    core, enforcer = FakeCore(), FakeEnforcer(result)
    return NodeAgent(core, "ns", "n1", "sysops.plugin", enforcer), core, enforcer


def written(core: FakeCore, index: int = -1) -> client.V1PodCondition:
    """The condition of the agent's `index`th pods/status patch, as the API server would store it."""
    [body] = core.patches[index][1]["status"]["conditions"]
    return client.V1PodCondition(type=body["type"], status=body["status"], message=body["message"])


def test_the_agent_never_touches_a_pod_without_the_annotation_or_elsewhere() -> None:
    node_agent, core, enforcer = agent(applied())
    node_agent.reconcile(pod(None))
    node_agent.reconcile(pod({"other": "x"}))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}, namespace="other"))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}, node_name="n2"))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}, running=False))
    assert core.patches == [] and enforcer.calls == []


def test_the_agent_writes_the_read_back_as_a_status_condition_and_then_leaves_the_pod_alone() -> None:
    node_agent, core, enforcer = agent(applied())
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}))
    assert enforcer.calls == [(CONTAINER, WANTED)]
    [(name, body)] = core.patches
    [written_condition] = body["status"]["conditions"]
    assert name == "p1" and set(body) == {"status"}  # the pod's status only, never its metadata or spec
    assert written_condition["type"] == APPLIED_CONDITION == "sysops.dev/limits-applied"
    assert written_condition["status"] == "True" and written_condition["reason"] == "LimitsApplied"
    assert AppliedLimits.from_json(written_condition["message"]) == applied()
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}, conditions=[written(core)]))  # its own patch
    assert len(enforcer.calls) == 1 and len(core.patches) == 1


def test_a_read_back_that_differs_or_fails_sets_the_condition_false() -> None:
    node_agent, core, _ = agent(applied(pids=None))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}))
    assert (written(core).status, core.patches[-1][1]["status"]["conditions"][0]["reason"]) == ("False", "LimitsDiffer")
    node_agent, core, _ = agent(applied(error="no cgroup"))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}))
    assert written(core).status == "False" and "no cgroup" in written(core).message


def test_a_restarted_container_is_limited_again_and_a_bad_annotation_is_reported() -> None:
    node_agent, core, enforcer = agent(applied())
    stale = condition(applied(container_id="docker://" + "ef" * 32))
    node_agent.reconcile(pod({LIMITS_ANNOTATION: WANTED.to_json()}, conditions=[stale]))
    assert len(enforcer.calls) == 1
    node_agent.reconcile(pod({LIMITS_ANNOTATION: "{"}))
    error = AppliedLimits.from_json(written(core).message).error
    assert error.startswith(f"{LIMITS_ANNOTATION} is not JSON") and len(enforcer.calls) == 1
    assert written(core).status == "False"


# the driver's side


def test_without_the_agent_the_limits_are_refused_naming_the_chart_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(node_limits.NODE_AGENT_ENV, raising=False)
    limits = ResourceLimits(nano_cpus=10**8, memory_bytes=64 * MIB, pids=40, network_connections=2)
    with pytest.raises(RuntimeOperationError, match=r"limits\.network_connections cannot be enforced") as refused:
        node_limits.wanted_node_limits("p", limits)
    assert "--set nodeAgent.enabled=true" in str(refused.value)
    plain = ResourceLimits(nano_cpus=10**8, memory_bytes=64 * MIB, pids=40)
    assert node_limits.wanted_node_limits("p", plain) is None  # pids alone: node-wide, as before
    monkeypatch.setenv(node_limits.NODE_AGENT_ENV, "1")
    assert node_limits.wanted_node_limits("p", limits) == NodeLimits(pids=40, network_connections=2)


class ReadOnlyCore:
    def __init__(self, answer: client.V1Pod) -> None:
        self.answer = answer

    def read_namespaced_pod(self, name: str, namespace: str) -> client.V1Pod:
        return self.answer


def test_a_roll_goes_on_once_the_read_back_matches_and_fails_on_the_agents_error() -> None:
    matched = pod({LIMITS_ANNOTATION: WANTED.to_json()}, conditions=[condition(applied())])
    node_limits.await_node_limits(ReadOnlyCore(matched), "ns", "p1", WANTED)
    failed = pod({LIMITS_ANNOTATION: WANTED.to_json()}, conditions=[condition(applied(error="no cgroup"), "False")])
    with pytest.raises(StartFailedError, match="the sysops node agent could not apply its limits: no cgroup"):
        node_limits.await_node_limits(ReadOnlyCore(failed), "ns", "p1", WANTED)


def test_status_reads_back_the_agents_condition_and_ignores_an_annotation() -> None:
    limits = ResourceLimits(nano_cpus=10**8, memory_bytes=64 * MIB, pids=40, io_bytes_per_sec=5 * MIB)
    values, problems = node_limits.node_agent_report(
        pod({LIMITS_ANNOTATION: WANTED.to_json()}, conditions=[condition(applied())]), limits
    )
    assert values == {"pids": 40, "disk_io_mb_per_sec": 5, "network_connections": 2}
    assert problems == ["limits.network_connections: asked None, applied 2 (iptables connlimit)"]
    assert node_limits.node_agent_report(pod(None), limits) == ({}, [])
    # The read-back lives in the pod's status only: an annotation of that name (anyone who may patch pods could
    # write one) does not count.
    forged = pod({LIMITS_ANNOTATION: WANTED.to_json(), APPLIED_CONDITION: applied().to_json()})
    assert node_limits.node_agent_report(forged, limits)[1] == ["not applied by the node agent yet"]


def test_a_pod_with_agent_limits_gets_the_readiness_gate(
    key_file: Path,  # noqa: F811
    api: RecordingApi,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[str] = []
    monkeypatch.setattr(KubernetesDriver, "_await_node_limits", lambda self, handle, wanted: waited.append(handle))
    monkeypatch.setenv(node_limits.NODE_AGENT_ENV, "1")
    KubernetesDriver(namespace="ns").start(_spec())
    [body] = api.pods.values()
    assert body["spec"]["readinessGates"] == [{"conditionType": "sysops.dev/limits-applied"}]
    assert waited == [POD]
    monkeypatch.delenv(node_limits.NODE_AGENT_ENV)
    api.pods.clear()
    KubernetesDriver(namespace="ns").start(_spec())  # no agent: nothing to wait for, no gate
    [body] = api.pods.values()
    assert "readinessGates" not in body["spec"] and waited == [POD]


# the network namespace is held, proven the container's, before iptables runs in it


class RecordingFirewall(ConnectionLimiter):
    def __init__(self) -> None:
        self.namespaces: list[int] = []

    def apply(self, namespace: int, connections: int | None) -> None:
        self.namespaces.append(namespace)

    def read(self, namespace: int) -> int | None:
        return 2


@pytest.fixture
def namespaces(node: CgroupLimiter) -> Path:
    """The fake /proc of `node` with network namespaces: the node's (pid 1) and the container process's."""
    for pid in ("1", "4242"):
        (node.proc / pid / "ns").mkdir(parents=True)
        (node.proc / pid / "ns" / "net").write_text(pid)
    return node.proc


def test_the_firewall_runs_in_the_container_processs_held_namespace(node: CgroupLimiter, namespaces: Path) -> None:
    firewall = RecordingFirewall()
    result = Enforcer(node, firewall).enforce(CONTAINER, WANTED)
    assert result.error == "" and result.network_connections == 2
    [held] = firewall.namespaces
    assert held > 2  # a descriptor, not a PID to look up again


def test_a_reused_pid_is_never_entered(node: CgroupLimiter, namespaces: Path) -> None:
    # Between finding PID 4242 in the container's cgroup and entering its namespace, it exited and another
    # process (another pod's, or the node's) got the PID.
    (namespaces / "4242" / "cgroup").write_text("8:pids:/docker/" + "ef" * 32 + "\n")
    firewall = RecordingFirewall()
    result = Enforcer(node, firewall).enforce(CONTAINER, WANTED)
    assert "is no longer in container abababababab" in result.error and firewall.namespaces == []


def test_the_nodes_own_namespace_is_never_programmed(node: CgroupLimiter, namespaces: Path) -> None:
    (namespaces / "4242" / "ns" / "net").unlink()
    (namespaces / "4242" / "ns" / "net").hardlink_to(namespaces / "1" / "ns" / "net")  # the same inode
    firewall = RecordingFirewall()
    result = Enforcer(node, firewall).enforce(CONTAINER, WANTED)
    assert "shares the node's network namespace" in result.error and firewall.namespaces == []


def test_where_pid_1s_namespace_cannot_be_opened_the_kubelets_is_the_nodes(
    node: CgroupLimiter, namespaces: Path
) -> None:
    (namespaces / "1" / "ns" / "net").unlink()  # a sandboxed init: EACCES on the test machine
    (namespaces / "77" / "ns").mkdir(parents=True)
    (namespaces / "77" / "comm").write_text("kubelet\n")
    (namespaces / "77" / "ns" / "net").write_text("node")
    (namespaces / "4242" / "ns" / "net").unlink()
    (namespaces / "4242" / "ns" / "net").hardlink_to(namespaces / "77" / "ns" / "net")
    result = Enforcer(node, RecordingFirewall()).enforce(CONTAINER, WANTED)
    assert "shares the node's network namespace" in result.error
    (namespaces / "77" / "comm").write_text("bash\n")  # neither: not provable, so not entered
    pod_netns.node_namespace.cache_clear()
    result = Enforcer(node, RecordingFirewall()).enforce(CONTAINER, WANTED)
    assert "cannot hold the network namespace" in result.error


def test_a_host_network_pod_is_refused_without_entering_anything() -> None:
    node_agent, core, enforcer = agent(applied())
    host = pod({LIMITS_ANNOTATION: WANTED.to_json()})
    host.spec.host_network = True
    node_agent.reconcile(host)
    assert enforcer.calls == [] and written(core).status == "False"
    assert "hostNetwork" in AppliedLimits.from_json(written(core).message).error
