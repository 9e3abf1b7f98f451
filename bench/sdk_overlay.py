"""A plugin base image carrying this tree's SDK, for benchmarks and tests of an SDK change before the base is rebuilt.

The plugin server (sysops_sdk) runs inside every plugin container, installed in the base image
(plugin-base-image/build.sh). `overlay_base_image()` builds, on top of the configured base image, one whose
installed sysops_sdk is replaced by sdk/sysops_sdk of this tree (no network, a few seconds), yields its tag and
removes it afterwards: when `BENCH_SDK_BASE=1`, or when the base image's `sysops.protocol` label is not this tree's
protocol version (a base built before an SDK change: the figures would measure the old plugin side). Otherwise it
yields "" (use the base as is).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sysops_sdk.wire import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[1]
SDK_PACKAGE = ROOT / "sdk" / "sysops_sdk"
SITE_PACKAGES = "/opt/sysops/lib/python3.11/site-packages"


def _base_protocol(base: str) -> str:
    """The protocol version the base image says its SDK speaks ("" if it cannot be read)."""
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", '{{index .Config.Labels "sysops.protocol"}}', base],
        capture_output=True,
        text=True,
    )
    return inspected.stdout.strip() if inspected.returncode == 0 else ""


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(SDK_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(SDK_PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def overlay_base_image(*, force: bool = False) -> Iterator[str]:
    """Yield the tag of a base image with this tree's SDK (removed afterwards), or "" when not asked for."""
    base = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")
    if not force and os.environ.get("BENCH_SDK_BASE") != "1" and _base_protocol(base) == PROTOCOL_VERSION:
        yield ""
        return
    print(f"  (plugins run on {base} overlaid with this tree's SDK, protocol {PROTOCOL_VERSION})", flush=True)
    tag = f"sysops-bench/plugin-base-sdk:{_fingerprint()}-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="sysops-sdk-overlay-") as context:
        shutil.copytree(SDK_PACKAGE, Path(context) / "sysops_sdk", ignore=shutil.ignore_patterns("__pycache__"))
        (Path(context) / "Dockerfile").write_text(
            f"FROM {base}\nUSER 0:0\nRUN rm -rf {SITE_PACKAGES}/sysops_sdk\n"
            f"COPY sysops_sdk {SITE_PACKAGES}/sysops_sdk\nRUN /opt/sysops/bin/python -m compileall -q "
            f"{SITE_PACKAGES}/sysops_sdk\nUSER 10001:10001\n"
        )
        subprocess.run(
            ["docker", "build", "--network", "none", "-q", "-t", tag, context], check=True, capture_output=True
        )
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)
