"""Kubernetes read-back compares resource quantities as numbers, not as the strings the API server stores.

The API server canonicalizes quantities (`1000m` becomes `1`, `1024Mi` becomes `1Gi`), so a string
comparison failed every rollout of a plugin with the default `cpu_percent: 100` or `memory_mb: 1024`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sysops.runtime.base import LivenessCheck, ResourceLimits
from sysops.runtime.kubernetes.driver import KubernetesDriver, quantities_equal

# What a v1.20 API server stores for the quantities the driver asks for (canonical form).
CANONICAL_CPU = {100: "1", 200: "2", 50: "500m", 20: "200m"}
CANONICAL_MEMORY = {1024: "1Gi", 1536: "1536Mi", 256: "256Mi", 2048: "2Gi"}


class _StoredPod:
    """Stands in for the CoreV1Api: `read_namespaced_pod` returns a pod with the given limits."""

    def __init__(self, cpu: str, memory: str, data: str) -> None:
        self.limits = {"cpu": cpu, "memory": memory, "ephemeral-storage": "320Mi"}
        self.data = data

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        container = SimpleNamespace(resources=SimpleNamespace(limits=self.limits))
        data = SimpleNamespace(name="data", empty_dir=SimpleNamespace(size_limit=self.data))
        tmp = SimpleNamespace(name="tmp", empty_dir=SimpleNamespace(size_limit="16Mi"))
        return SimpleNamespace(spec=SimpleNamespace(containers=[container], volumes=[tmp, data]), status=None)


def _limits(cpu_percent: int, memory_mb: int, data_mb: int = 256) -> ResourceLimits:
    return ResourceLimits(
        nano_cpus=cpu_percent * 10_000_000, memory_bytes=memory_mb << 20, pids=64, data_bytes=data_mb << 20
    )


def _read_back(
    cpu_percent: int, memory_mb: int, stored_cpu: str, stored_memory: str, stored_data: str = "256Mi"
) -> tuple[str, ...]:
    driver = KubernetesDriver(namespace="unit")
    driver._core = _StoredPod(stored_cpu, stored_memory, stored_data)
    return driver.resources("pod", _limits(cpu_percent, memory_mb)).mismatches


@pytest.mark.parametrize("cpu_percent", [100, 200, 50, 20])
@pytest.mark.parametrize("memory_mb", [1024, 1536, 256, 2048])
def test_canonical_quantities_match_what_was_asked(cpu_percent: int, memory_mb: int) -> None:
    stored_cpu, stored_memory = CANONICAL_CPU[cpu_percent], CANONICAL_MEMORY[memory_mb]
    assert _read_back(cpu_percent, memory_mb, stored_cpu, stored_memory) == ()


def test_a_different_quantity_is_still_a_mismatch() -> None:
    mismatches = _read_back(200, 1536, "1", "1Gi")
    assert mismatches == ("cpu: asked 2000m, applied 1", "memory: asked 1536Mi, applied 1Gi")


def test_the_data_size_is_read_back_too() -> None:
    assert _read_back(100, 1024, "1", "1Gi", stored_data="64Mi") == ("data: asked 256Mi, applied 64Mi",)


def test_ephemeral_storage_leaves_room_for_a_full_data_volume() -> None:
    """The /data emptyDir counts against the pod's ephemeral storage: a 64Mi limit evicted a plugin at 64 MiB."""
    driver = KubernetesDriver(namespace="unit")
    spec = SimpleNamespace(
        name="p", image="i", uid=0x10000001, limits=_limits(100, 128, data_mb=1024), liveness=LivenessCheck()
    )
    pod = driver._pod_body(spec, {}, {}, {}, {})  # type: ignore[arg-type]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["ephemeral-storage"] == "1088Mi"
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["data"]["emptyDir"]["sizeLimit"] == "1024Mi"


def test_a_missing_or_garbled_quantity_is_a_mismatch() -> None:
    assert _read_back(100, 1024, "", "lots") == ("cpu: asked 1000m, applied ", "memory: asked 1024Mi, applied lots")


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [("1000m", "1", True), ("1024Mi", "1Gi", True), ("1.5", "1500m", True), ("1Gi", "1G", False), (None, "1", False)],
)
def test_quantities_equal(left: str | None, right: str | None, equal: bool) -> None:
    assert quantities_equal(left, right) is equal
