"""The chart's Plugin CustomResourceDefinition (charts/sysops/crds/): the names the code uses, the printer
columns `kubectl get plugins` shows, the status subresource, and a valid CRD for Kubernetes 1.20 and now."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sysops.runtime.kubernetes.plugin_resource import GROUP, KIND, PLURAL, VERSION

from tests.unit.test_chart_kubernetes_versions import OLDEST_SCHEMAS, legacy_validator

CRD = Path(__file__).resolve().parents[2] / "charts" / "sysops" / "crds" / "plugins.sysops.dev.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


def test_names_are_the_ones_the_server_uses(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == (GROUP, "Namespaced")
    assert spec["names"] == {
        "kind": KIND,
        "listKind": f"{KIND}List",
        "plural": PLURAL,
        "singular": "plugin",
        "shortNames": ["spl"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_read_like_plugin_ls(crd: dict[str, Any]) -> None:
    [version] = crd["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Version", ".spec.manifest.version"),
        ("Phase", ".status.phase"),
        ("Ready", ".status.readyReplicas"),
        ("Revision", ".status.revision"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_schema_keeps_the_manifest_and_revisions_as_given(crd: dict[str, Any]) -> None:
    [version] = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["manifest"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["revisions"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["revisions"]["maxItems"] == 20
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) == {"phase", "readyReplicas", "revision", "observedGeneration", "lastFault", "conditions"}


def test_is_a_valid_crd_for_kubernetes_1_20(crd: dict[str, Any], tmp_path: Path) -> None:
    """The installed kubernetes-validate starts at 1.25: 1.20 is checked with the release that has its schemas."""
    document = tmp_path / "crd.yaml"
    document.write_text(yaml.safe_dump(crd))
    checked = subprocess.run(
        [str(legacy_validator()), "-m", "kubernetes_validate", "-k", OLDEST_SCHEMAS, "--strict", str(document)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and "against version 1.20" in checked.stdout, checked.stdout + checked.stderr


def test_is_a_valid_crd_for_kubernetes_1_32(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, "1.32.0", strict=True)
