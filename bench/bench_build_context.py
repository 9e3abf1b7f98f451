"""Memory and time of `sysops plugin up` for a plugin holding a large (sparse) data file.

The build context used to be assembled in memory: a 1 GB sparse file took 2.1 GB of RSS and 19.5 s.
It is now streamed through a temporary tar file. This runs `sysops plugin up` on a copy of
examples/hello with a sparse file of SIZE_MB (default 1024) in a private SYSOPS_HOME, and in the same run the
same `plugin up` without the file (the baseline); measures the wall time and the peak RSS (VmHWM) of the host
that builds (smoke: a 16 MiB file, no baseline run), then removes the plugin (`down --purge`) and the home.
measure(smoke) returns the figures to the runner (bench/run.py); main() prints them.

    .venv/bin/python bench/bench_build_context.py [SIZE_MB]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
SYSOPS = str(Path(sys.executable).with_name("sysops"))


def _plugin_up(work: Path, name: str, size_mb: int) -> tuple[float, float]:
    """Wall seconds of `sysops plugin up` of a hello copy with a sparse file of size_mb, and the peak RSS (MiB)
    of the host that built it (the CLI only asks; the resident host of the private SYSOPS_HOME builds)."""
    plugin_dir = work / name
    shutil.copytree(ROOT / "examples" / "hello", plugin_dir, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    if size_mb:
        with open(plugin_dir / "data.bin", "wb") as sparse:
            sparse.truncate(size_mb << 20)
    home = work / f"home-{name}"
    env = {**os.environ, "SYSOPS_HOME": str(home)}
    try:
        started = time.perf_counter()
        result = subprocess.run([SYSOPS, "plugin", "up", str(plugin_dir)], env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"plugin up exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return elapsed, _peak_rss_mib(int(json.loads((home / "host.json").read_text())["pid"]))
    finally:
        subprocess.run([SYSOPS, "plugin", "down", "hello", "--purge"], env=env, capture_output=True, check=False)
        subprocess.run([SYSOPS, "host", "stop"], env=env, capture_output=True, check=False)


def _peak_rss_mib(pid: int) -> float:
    """The high-water mark of a running process's resident memory (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    return int(kib) / 1024


def measure(smoke: bool, size_mb: int | None = None) -> list[Figure]:
    """Peak RSS and wall time of plugin up with a large sparse file, beside the same up without it."""
    size = size_mb if size_mb is not None else (16 if smoke else 1024)
    work = Path(tempfile.mkdtemp(prefix="sysops-bench-build-"))
    try:
        plain_seconds, plain_rss = (None, None) if smoke else _plugin_up(work, "plain", 0)
        big_seconds, big_rss = _plugin_up(work, "big", size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = "plugin up without the file"
    detail = {"sparse_file_mib": size}
    return [
        Figure(f"plugin up with a {size} MiB sparse file: host peak RSS", big_rss, "MiB", plain_rss, baseline,
               detail=detail),
        Figure(f"plugin up with a {size} MiB sparse file: wall time", big_seconds, "s", plain_seconds, baseline,
               detail=detail),
    ]  # fmt: skip


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    for figure in measure(smoke=False, size_mb=size_mb):
        print(f"{figure.metric}: {figure.ours:.1f} {figure.unit} ({figure.baseline_name}: {figure.baseline:.1f})")


if __name__ == "__main__":
    main()
