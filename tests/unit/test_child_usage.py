"""bench/child_usage.py and the streaming benchmark's `run_counted`: the peak RSS reported is the command's own.

Before, `run_counted` read the child's rusage from `os.wait4` of a `subprocess.Popen` child, which reports the
starting process's own peak RSS when that is larger (the benchmark runner's 229 MiB stood for `plugin logs`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_streaming  # noqa: E402  (bench/ on sys.path, as the runner itself does)
from child_usage import finish_measured, start_measured  # noqa: E402

MIB = 1 << 20


def _touched(megabytes: int) -> bytearray:
    """`megabytes` of memory, every page written, so that it counts in this process's RSS."""
    ballast = bytearray(megabytes * MIB)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    return ballast


def test_a_small_command_started_by_a_big_process_is_measured_small() -> None:
    ballast = _touched(300)
    run = bench_streaming.run_counted([sys.executable, "-S", "-c", "print('x' * 10)"], dict(os.environ))
    assert len(ballast) == 300 * MIB
    assert run.out_bytes == 11
    assert run.max_rss_kib < 100 * 1024, f"{run.max_rss_kib // 1024} MiB reported for a 'print' (ours is 300+)"


def test_a_big_command_is_measured_big_with_its_cpu_and_exit_code() -> None:
    script = "import sys\nb = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nsys.exit(3)"
    usage = finish_measured(start_measured([sys.executable, "-S", "-c", script], os.environ))
    assert usage.returncode == 3
    assert usage.max_rss_kib >= 200 * 1024
    assert usage.cpu > 0


def test_a_missing_command_exits_127() -> None:
    usage = finish_measured(start_measured(["/nonexistent/command"], os.environ))
    assert usage.returncode == 127
