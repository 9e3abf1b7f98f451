"""The chart against the oldest Kubernetes it supports (1.20, the test cluster's) and the current one: every object
it renders, the Plugin CRD of `crds/` included, passes kubernetes-validate's strict schemas of that version, and
a Plugin object of the documented shape passes the CRD's schema (its names, printer columns and status
subresource: test_chart_crd.py).

- current: the newest version the installed kubernetes-validate (a dev dependency) has schemas for, and 1.25.0,
  its oldest; rendered with `--kube-version` of it and `--api-versions policy/v1/PodDisruptionBudget` (what the
  discovery of such an API server tells `helm install`; `helm template` alone does not claim the kind);
- 1.20: rendered with `--kube-version 1.20.2` and checked with `kubernetes-validate -k 1.20.0 --strict` from
  kubernetes-validate 1.24.1, a release that still ships the 1.20 schemas (1.37 starts at 1.25). It is
  installed once into a venv of its own under the user's cache directory (from PyPI, about 2 minutes).
A kind without a schema for the version fails the test (the CLI only warns). Skipped only when helm cannot be
had (tests.unit.test_chart's `helm` fixture finds or fetches it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.unit.test_chart import CHART, OLDEST_KUBE, helm  # noqa: F401  (fixture)

CURRENT_KUBE = latest_version()
OLDEST_SCHEMAS = "1.20.0"
LEGACY_VALIDATOR = "kubernetes-validate==1.24.1"
#: Value sets that change which objects the chart renders or what is in them.
VARIANTS: list[tuple[str, ...]] = [
    (),
    ("--set", "persistence.enabled=true"),
    ("--set", "metrics.enabled=true"),
    ("--set", "nodeAgent.enabled=true"),
    ("--set", "tls.enabled=false"),
    ("--set", "tls.existingSecret=my-tls", "--set", "auth.existingSecret=my-token"),
]


def render(helm: str, kube: str, *values: str) -> list[dict[str, Any]]:  # noqa: F811  (the path, not the fixture)
    """Every object of the chart (CRDs too) as `helm install` would create them on an API server of `kube`."""
    discovered = [] if kube.startswith("1.20.") else ["--api-versions", "policy/v1/PodDisruptionBudget"]
    result = subprocess.run(
        [helm, "template", "sysops-test", str(CHART), "--namespace", "sysops-ns", "--include-crds",
         "--kube-version", kube, *discovered, *values],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def crd(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [obj for obj in objects if obj["kind"] == "CustomResourceDefinition"]
    return found


def legacy_validator() -> Path:
    """The Python of a venv with kubernetes-validate 1.24.1 (the 1.20 schemas), made on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sysops" / "kubernetes-validate-1.24.1"
    python = cache / "bin" / "python"
    if python.exists():
        return python
    building = cache.with_name(f"{cache.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=120)
    installed = subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         LEGACY_VALIDATOR],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        pytest.fail(f"could not install {LEGACY_VALIDATOR} (the Kubernetes 1.20 schemas): {installed.stderr[-2000:]}")
    try:
        building.rename(cache)  # a venv runs from where it is moved to: bin/python finds its pyvenv.cfg
    except OSError:  # another run made it first
        shutil.rmtree(building, ignore_errors=True)
    return python


@pytest.mark.parametrize("values", VARIANTS, ids=lambda values: " ".join(values) or "defaults")
def test_every_object_passes_the_1_20_schemas(helm: str, values: tuple[str, ...], tmp_path: Path) -> None:  # noqa: F811
    objects = render(helm, OLDEST_KUBE, *values)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    checked = subprocess.run(
        [str(legacy_validator()), "-m", "kubernetes_validate", "-k", OLDEST_SCHEMAS, "--strict", str(rendered)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = checked.stdout.splitlines()
    assert checked.returncode == 0 and not [line for line in lines if not line.startswith("INFO")], checked.stdout
    assert sum("passed" in line and "against version 1.20" in line for line in lines) == len(objects), checked.stdout


@pytest.mark.parametrize("kube", ["1.25.0", CURRENT_KUBE])
@pytest.mark.parametrize("values", VARIANTS, ids=lambda values: " ".join(values) or "defaults")
def test_every_object_passes_the_current_schemas(helm: str, kube: str, values: tuple[str, ...]) -> None:  # noqa: F811
    for obj in render(helm, kube, *values):
        assert kubernetes_validate.validate(obj, kube, strict=True) == ".".join(kube.split(".")[:2])


def test_the_1_20_render_asks_for_no_api_that_1_20_lacks(helm: str) -> None:  # noqa: F811
    for obj in render(helm, OLDEST_KUBE):
        assert obj["apiVersion"] not in ("policy/v1", "batch/v1beta1", "networking.k8s.io/v1beta1"), obj["kind"]
        assert obj["kind"] != "PodDisruptionBudget", "policy/v1 does not exist in 1.20; policy/v1beta1 is not wanted"


def test_the_crd_is_installed_with_the_chart_and_is_the_only_one(helm: str) -> None:  # noqa: F811
    files = sorted(path.name for path in (CHART / "crds").iterdir())
    assert files == ["plugins.sysops.dev.yaml"]
    for kube in (OLDEST_KUBE, CURRENT_KUBE):
        definition = crd(render(helm, kube))
        assert definition["apiVersion"] == "apiextensions.k8s.io/v1"
        assert "namespace" not in definition["metadata"]  # cluster-scoped, installed once per cluster


def plugin_object(**status: Any) -> dict[str, Any]:
    """A Plugin object of the documented shape (docs/kubernetes.md)."""
    return {
        "apiVersion": "sysops.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": "hello"},
        "spec": {
            "manifest": {"name": "hello", "version": "1.0.0", "limits": {"cpu_percent": 10}},
            "image": "sysops/plugin-hello@sha256:" + "ab" * 32,
            "imageDigest": "sha256:" + "ab" * 32,
            "revision": 3,
            "replicas": 1,
            "source": "/src/hello",
            "revisions": [{"revision": 3, "version": "1.0.0", "image": "sysops/plugin-hello:1"}],
        },
        "status": {
            "phase": "Active",
            "readyReplicas": 1,
            "revision": 3,
            "observedGeneration": 7,
            "lastFault": "",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Serving",
                    "message": "",
                    "lastTransitionTime": "2026-12-03T12:00:00Z",
                },
            ],
            **status,
        },
    }


def test_the_crd_schema_takes_a_plugin_object_and_refuses_a_bad_status(helm: str) -> None:  # noqa: F811
    [version] = crd(render(helm, CURRENT_KUBE))["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI v3 schemas are (close to) draft 4; x-* keys ignored
    assert not list(validator.iter_errors(plugin_object()))
    assert list(validator.iter_errors(plugin_object(phase="Exploded")))
    assert list(validator.iter_errors(plugin_object(readyReplicas="one")))
