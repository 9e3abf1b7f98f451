"""Memory and time of `sysops plugin up` for a plugin holding a large (sparse) data file.

The build context used to be assembled in memory: a 1 GB sparse file took 2.1 GB of RSS and 19.5 s.
It is now streamed through a temporary tar file. This runs `sysops plugin up` on a copy of
examples/hello with a sparse file of SIZE_MB (default 1024) in a private SYSOPS_HOME, prints the CLI's
peak RSS and wall time, then removes the plugin (`down --purge`) and the home.

    .venv/bin/python bench/bench_build_context.py [SIZE_MB]
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSOPS = str(Path(sys.executable).with_name("sysops"))


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    work = Path(tempfile.mkdtemp(prefix="sysops-bench-build-"))
    try:
        plugin_dir = work / "hello"
        shutil.copytree(ROOT / "examples" / "hello", plugin_dir, ignore=shutil.ignore_patterns("__pycache__"))
        with open(plugin_dir / "data.bin", "wb") as sparse:
            sparse.truncate(size_mb << 20)
        env = {**os.environ, "SYSOPS_HOME": str(work / "home")}
        started = time.perf_counter()
        result = subprocess.run([SYSOPS, "plugin", "up", str(plugin_dir)], env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"plugin up with a {size_mb} MiB sparse file: exit {result.returncode}, {elapsed:.1f} s, "
              f"peak RSS {peak_mib:.0f} MiB")  # fmt: skip
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
        subprocess.run([SYSOPS, "plugin", "down", "hello", "--purge"], env=env, capture_output=True, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
