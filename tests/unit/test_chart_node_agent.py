"""The chart's `nodeAgent` values: off by default (no DaemonSet, the server not told); on, a DaemonSet running
`sysops node-agent` with what it needs on the node, namespaced RBAC for pods only, and SYSOPS_NODE_AGENT=1 on the
server. Rendered for Kubernetes 1.20 and the current version."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_chart import CURRENT_KUBE, OLDEST_KUBE, Render, _template, helm, render  # noqa: F401


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _server_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
    return {item["name"]: item for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_node_agent_is_off_by_default(render: Render) -> None:  # noqa: F811
    docs = render()
    assert not [doc for doc in docs if doc["kind"] == "DaemonSet"]
    assert not [doc for doc in docs if doc["metadata"]["name"].endswith("-node-agent")]
    assert "SYSOPS_NODE_AGENT" not in _server_env(docs)


@pytest.mark.parametrize("kube", [OLDEST_KUBE, CURRENT_KUBE])
def test_the_node_agent_daemonset_when_enabled(render: Render, kube: str) -> None:  # noqa: F811
    docs = render("--set", "nodeAgent.enabled=true", kube=kube)
    daemonset = _named(docs, "DaemonSet", "sysops-test-node-agent")
    template = daemonset["spec"]["template"]
    spec = template["spec"]
    [container] = spec["containers"]
    assert container["args"] == ["node-agent"] and container["image"] == "sysops/orchestrator:0.1.0"
    assert spec["hostPID"] is True and spec["serviceAccountName"] == "sysops-test-node-agent"
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["SYSOPS_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    cgroup = mounts[env["SYSOPS_CGROUP_ROOT"]["value"]]
    assert volumes[cgroup["name"]]["hostPath"]["path"] == "/sys/fs/cgroup" and not cgroup.get("readOnly")
    root = mounts[env["SYSOPS_HOST_ROOT"]["value"]]
    assert volumes[root["name"]]["hostPath"]["path"] == "/" and root["readOnly"] is True
    security = container["securityContext"]
    assert security["runAsUser"] == 0 and security["privileged"] is False
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_CHROOT", "DAC_OVERRIDE"],
    }
    # Its pods are not the server's: no Service endpoint, no way into plugin pods through their policies.
    labels = template["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "node-agent" and labels["app.kubernetes.io/name"] != "sysops"
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _server_env(docs)["SYSOPS_NODE_AGENT"]["value"] == "1"


def test_the_node_agent_may_only_read_pods_and_write_their_status(render: Render) -> None:  # noqa: F811
    docs = render("--set", "nodeAgent.enabled=true")
    role = _named(docs, "Role", "sysops-test-node-agent")
    assert role["metadata"]["namespace"] == "sysops-ns"
    # No `pods` patch: it could swap a pod's image (the server's, which mounts the TLS and token keys).
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    ]
    binding = _named(docs, "RoleBinding", "sysops-test-node-agent")
    assert binding["roleRef"]["name"] == "sysops-test-node-agent"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sysops-test-node-agent", "namespace": "sysops-ns"}
    ]
    assert not [doc for doc in docs if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_node_agent_values_are_checked(helm: str) -> None:  # noqa: F811
    for bad in ("nodeAgent.enabled=maybe", "nodeAgent.bogus=1", "nodeAgent.resources.cpu=1"):
        result = _template(helm, "--set", bad)
        assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr, bad


def test_the_node_agent_never_runs_under_the_servers_service_account(render: Render) -> None:  # noqa: F811
    docs = render(
        "--set", "nodeAgent.enabled=true", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops"
    )  # fmt: skip
    daemonset = _named(docs, "DaemonSet", "sysops-test-node-agent")
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == "sysops-test-node-agent"
    assert _named(docs, "ServiceAccount", "sysops-test-node-agent")["metadata"]["namespace"] == "sysops-ns"
    binding = _named(docs, "RoleBinding", "sysops-test-node-agent")
    assert [subject["name"] for subject in binding["subjects"]] == ["sysops-test-node-agent"]


def test_the_policy_may_cap_the_agents_limits_only_with_the_agent(render: Render, helm: str) -> None:  # noqa: F811
    limits = ("--set", "policy.caps.disk_io_mb_per_sec=50", "--set", "policy.defaults.network_connections=10")
    docs = render("--set", "nodeAgent.enabled=true", *limits)
    [policy] = [doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-policy")]
    assert "disk_io_mb_per_sec: 50" in policy["data"]["policy.yaml"]
    assert "network_connections: 10" in policy["data"]["policy.yaml"]
    for key in ("caps.disk_io_mb_per_sec=50", "defaults.network_connections=10"):
        refused = _template(helm, "--set", f"policy.{key}")
        assert refused.returncode != 0, key
        assert f"policy.{key.partition('=')[0]} needs nodeAgent.enabled=true" in refused.stderr, refused.stderr
