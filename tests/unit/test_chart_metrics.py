"""The chart's `metrics` values: off by default; on, `serve --metrics-port` with a container and Service port."""

from __future__ import annotations

from typing import Any

from tests.unit.test_chart import Render, helm, render  # noqa: F401  (fixtures)


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in docs if doc["kind"] == kind]
    return found


def test_metrics_endpoint_is_off_by_default(render: Render) -> None:  # noqa: F811
    docs = render()
    container = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port" not in container["args"]
    assert [port["name"] for port in container["ports"]] == ["grpc", "liveness"]  # liveness: HA replicas
    assert [port["name"] for port in _kind(docs, "Service")["spec"]["ports"]] == ["grpc"]


def test_metrics_endpoint_when_enabled(render: Render) -> None:  # noqa: F811
    docs = render("--set", "metrics.enabled=true", "--set", "metrics.port=9500")
    container = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--metrics-port") + 1] == "9500"
    assert {"name": "metrics", "containerPort": 9500, "protocol": "TCP"} in container["ports"]
    service_ports = _kind(docs, "Service")["spec"]["ports"]
    assert {"name": "metrics", "port": 9500, "targetPort": "metrics", "protocol": "TCP"} in service_ports
