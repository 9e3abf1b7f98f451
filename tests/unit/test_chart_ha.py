"""The chart's HA server: replicas, leader election env and probes, the Lease RBAC, the PodDisruptionBudget."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate

from tests.unit.test_chart import CURRENT_KUBE, OLDEST_KUBE, Render, _env, _one, helm, render  # noqa: F401  (fixtures)

PDB_API = "policy/v1/PodDisruptionBudget"


def _pdbs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == "PodDisruptionBudget"]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_two_replicas_elect_a_leader_and_roll_one_at_a_time(render: Render) -> None:  # noqa: F811
    objects = render()
    spec = _one(objects, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    container = _container(objects)
    env = _env(container)
    assert env["SYSOPS_LEADER_ELECT"]["value"] == "1"
    assert env["SYSOPS_LEADER_LEASE"]["value"] == "sysops-test-leader"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SYSOPS_LIVENESS_PORT"]["value"] == "7444"
    assert {"name": "liveness", "containerPort": 7444, "protocol": "TCP"} in container["ports"]
    # The standby does not listen on grpc, yet it is alive and Ready (on its liveness port): a rolling update goes
    # on while a new pod waits on standby (with readiness on grpc, `helm upgrade --wait` never finished).
    assert container["readinessProbe"]["tcpSocket"] == {"port": "liveness"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "liveness"}
    selector = spec["selector"]["matchLabels"]
    [term] = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }


def test_the_service_routes_to_the_leader_label_which_the_deployment_does_not_select(render: Render) -> None:  # noqa: F811
    objects = render()
    deployment = _one(objects, "Deployment")["spec"]
    service_selector = _one(objects, "Service")["spec"]["selector"]
    assert service_selector == {**deployment["selector"]["matchLabels"], "sysops.dev/leader": "true"}
    template_labels = deployment["template"]["metadata"]["labels"]
    assert "sysops.dev/leader" not in template_labels  # set on its own pod by the leader only
    assert template_labels["sysops.dev/leader-elect"] == "true"  # what a new leader tells pre-HA pods apart by
    pods_rule = next(rule for rule in _one(objects, "Role")["rules"] if rule["resources"] == ["pods"])
    assert "patch" in pods_rule["verbs"]
    single = render("--set", "server.replicas=1")
    assert "sysops.dev/leader" not in _one(single, "Service")["spec"]["selector"]
    assert "sysops.dev/leader-elect" not in _one(single, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_one_replica_is_a_singleton_without_election(render: Render) -> None:  # noqa: F811
    objects = render("--set", "server.replicas=1")
    spec = _one(objects, "Deployment")["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    container = _container(objects)
    assert not {"SYSOPS_LEADER_ELECT", "SYSOPS_LEADER_LEASE", "SYSOPS_LIVENESS_PORT"} & set(_env(container))
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert "affinity" not in spec["template"]["spec"]
    role = _one(objects, "Role")
    assert not [rule for rule in role["rules"] if "leases" in rule["resources"]]
    assert not _pdbs(render("--set", "server.replicas=1", "--api-versions", PDB_API))


def test_lease_rbac_names_the_lease_except_for_create(render: Render) -> None:  # noqa: F811
    rules = [rule for rule in _one(render(), "Role")["rules"] if rule["apiGroups"] == ["coordination.k8s.io"]]
    assert rules == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "update"],
            "resourceNames": ["sysops-test-leader"],
        },
    ]


def test_pdb_only_where_the_cluster_has_policy_v1(render: Render) -> None:  # noqa: F811
    assert not _pdbs(render(kube=OLDEST_KUBE))  # 1.20: no policy/v1
    assert not _pdbs(render())  # helm template without a cluster does not claim the kind
    objects = render("--api-versions", PDB_API)
    [pdb] = _pdbs(objects)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == "sysops-test" and pdb["metadata"]["namespace"] == "sysops-ns"
    selector = _one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {
        # Not minAvailable 1: evicting the leader is fine (SIGTERM releases the Lease), one replica at a time.
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": selector},
    }
    kubernetes_validate.validate(pdb, CURRENT_KUBE, strict=True)
    [old] = _pdbs(render("--api-versions", PDB_API, kube="1.21.0"))  # policy/v1, before the eviction policy field
    assert "unhealthyPodEvictionPolicy" not in old["spec"]


def test_an_affinity_value_replaces_the_default_anti_affinity(render: Render) -> None:  # noqa: F811
    node = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}
    ]}}}  # fmt: skip
    objects = render("--set-json", f"affinity={json.dumps(node)}")
    assert _one(objects, "Deployment")["spec"]["template"]["spec"]["affinity"] == node


def test_ha_objects_pass_strict_schema_validation(render: Render) -> None:  # noqa: F811
    kinds = {"Deployment", "Role", "PodDisruptionBudget"}
    validated = [obj for obj in render("--api-versions", PDB_API) if obj["kind"] in kinds]
    for obj in validated:
        kubernetes_validate.validate(obj, CURRENT_KUBE, strict=True)
    assert {obj["kind"] for obj in validated} == kinds
