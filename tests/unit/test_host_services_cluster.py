"""Host services on Kubernetes without a cluster: the endpoint plugin pods are given (services/hosting.py
cluster_endpoint) and the NetworkPolicy egress rule that lets them reach the server pods, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from sysops.runtime.base import LABEL_INSTANCE, EgressAllowance, InstanceSpec, ResourceLimits
from sysops.runtime.kubernetes import driver as kubernetes_driver
from sysops.runtime.kubernetes.driver import ORCHESTRATOR_SELECTOR, PLUGIN_PORT, KubernetesDriver
from sysops.services import hosting
from sysops.services.hosting import cluster_endpoint


def test_an_explicit_endpoint_wins_then_the_service_variables() -> None:
    assert cluster_endpoint({"SYSOPS_HOST_ENDPOINT": "10.0.0.9:7443", "SYSOPS_SERVER_SERVICE": "x"}) == "10.0.0.9:7443"
    env = {
        "SYSOPS_SERVER_SERVICE": "rel-sysops",
        "REL_SYSOPS_SERVICE_HOST": "10.96.0.7",
        "REL_SYSOPS_SERVICE_PORT": "7443",
    }
    assert cluster_endpoint(env) == "10.96.0.7:7443"
    assert cluster_endpoint({}) == ""


def test_without_service_variables_the_service_is_read_from_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def service_endpoint(name: str, namespace: str | None = None) -> str:
        asked.append(name)
        return "10.96.1.2:7443"

    monkeypatch.setattr(kubernetes_driver, "service_endpoint", service_endpoint)
    assert cluster_endpoint({"SYSOPS_SERVER_SERVICE": "rel-sysops"}) == "10.96.1.2:7443"
    assert asked == ["rel-sysops"]


def test_an_unreadable_service_gives_no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(name: str, namespace: str | None = None) -> str:
        raise kubernetes_driver.RuntimeOperationError("cannot read Service rel-sysops in ns: Forbidden")

    monkeypatch.setattr(kubernetes_driver, "service_endpoint", refused)
    assert hosting.cluster_endpoint({"SYSOPS_SERVER_SERVICE": "rel-sysops"}) == ""


def _policy(monkeypatch: pytest.MonkeyPatch, egress: tuple[EgressAllowance, ...], port: str | None) -> dict:  # type: ignore[type-arg]
    if port is None:
        monkeypatch.delenv("SYSOPS_SERVER_PORT", raising=False)
    else:
        monkeypatch.setenv("SYSOPS_SERVER_PORT", port)
    spec = InstanceSpec(
        name="sysops-x-demo-1",
        image="img",
        labels={LABEL_INSTANCE: "i1"},
        environment={},
        socket_dir=Path("/nonexistent"),
        data_volume="v",
        limits=ResourceLimits(nano_cpus=100_000_000, memory_bytes=64 << 20, pids=64),
        egress=egress,
    )
    return KubernetesDriver(namespace="ns")._policy_body(spec, spec.labels, {"kind": "ConfigMap"})


def test_a_network_none_plugin_may_reach_only_the_server_pods_grpc_port(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _policy(monkeypatch, (), "9000")
    assert body["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": ORCHESTRATOR_SELECTOR}}], "ports": [{"protocol": "TCP", "port": 9000}]}
    ]
    assert body["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": PLUGIN_PORT}]
    assert _policy(monkeypatch, (), None)["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 7443}]


def test_an_allow_list_keeps_its_rules_beside_the_server_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _policy(monkeypatch, (EgressAllowance("10.1.2.3", (443,)),), "7443")
    assert body["spec"]["egress"][0] == {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    assert len(body["spec"]["egress"]) == 2


def test_a_host_that_found_no_endpoint_at_start_looks_again_for_the_next_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sysops.settings import Settings

    answers = iter(["", "10.96.3.4:7443"])
    monkeypatch.setattr(hosting, "cluster_endpoint", lambda: next(answers))
    host = hosting.Hosting(Settings(home=tmp_path / "home"), cluster=True, server=None)
    try:
        assert host.host_endpoint() == "10.96.3.4:7443"
        assert host.host_endpoint() == "10.96.3.4:7443"  # kept once known
    finally:
        host.close()
