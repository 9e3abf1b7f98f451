"""Streaming output and logs through the resident host, each beside a `docker` baseline measured in the same run.

Brings up bench/streamer (a plugin with a generator command and a command that fills its own log) in a private
SYSOPS_HOME, then measures, as a user runs them with stdout to /dev/null:
  (a) `sysops stream-lines --count N` (N = 200,000; CLI → host call socket → plugin): lines per second end to
      end and the CPU seconds of the CLI process (user + system, from wait4), against
      `docker exec CONTAINER python -c "print N lines"` (goal: >= 200,000 lines/s, CLI CPU < 1 s);
  (b) `sysops plugin logs streamer` of a log of LOG_MB megabytes (500 in the real run, 100-byte lines): lines
      per second, the CLI's CPU and its peak RSS, against `docker logs CONTAINER` (goal: >= 200,000 lines/s
      with memory bounded; the host's peak RSS growth is printed too).
Removes what it made: the plugin (down --purge), the host (`sysops host stop`), the temporary home.
`BENCH_SDK_BASE=1` first builds a base image overlaid with this tree's SDK (the plugin side of the change)
and removes it at the end; by default the plugin runs on the configured base image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure  # bench/ on sys.path: run as `python bench/bench_streaming.py` or by bench/run.py

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYSOPS = str(BIN / "sysops")
PLUGIN_DIR = ROOT / "bench" / "streamer"
PLUGIN_PYTHON = "/opt/sysops/bin/python"
LINE_GOAL = 200_000.0
LOG_LINE_BYTES = 100


@dataclass
class Run:
    """One process run: its wall time, its own CPU seconds and peak RSS (KiB), what it wrote to stdout."""

    seconds: float
    cpu: float
    max_rss_kib: int
    out_bytes: int


def run_counted(argv: list[str], env: dict[str, str]) -> Run:
    """Run `argv` with stdout into a counting pipe reader; CPU and peak RSS of that process only (wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    written = 0
    while chunk := process.stdout.read1(1 << 20):
        written += len(chunk)
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {process.returncode}: {errors.decode()[-400:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, written)


def _quiet(argv: list[str], env: dict[str, str]) -> str:
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def _container(env: dict[str, str], installation: str) -> str:
    names = _quiet(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            "label=sysops.plugin=streamer",
            "--filter",
            f"label=sysops.installation={installation}",
        ],
        env,
    ).split()
    if len(names) != 1:
        raise RuntimeError(f"expected one streamer container of installation {installation}, found {names}")
    return names[0]


def _host_rss_kib(env: dict[str, str]) -> int:
    """The resident host's current RSS (KiB), from its pid file; 0 if it cannot be read."""
    from sysops.host.paths import host_paths
    from sysops.settings import Settings

    try:
        record = json.loads(host_paths(Settings(home=Path(env["SYSOPS_HOME"]))).record.read_text())
        pid = int(record["pid"])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return 0


def _stream_figures(env: dict[str, str], container: str, count: int, smoke: bool) -> list[Figure]:
    argv = [SYSOPS, "stream-lines", "--count", str(count)]
    run_counted([SYSOPS, "stream-lines", "--count", "10"], env)  # warm: connection pool, bytecode
    ours = run_counted(argv, env)
    script = f"import sys\nsys.stdout.writelines(f'line {{n:07d}} of the stream\\n' for n in range({count}))"
    base = run_counted(["docker", "exec", container, PLUGIN_PYTHON, "-c", script], env)
    expected = sum(len(f"line {n:07d} of the stream\n") for n in range(count))
    if ours.out_bytes != expected:
        raise RuntimeError(f"stream-lines wrote {ours.out_bytes} bytes, expected {expected}")
    rate, base_rate = count / ours.seconds, count / base.seconds
    print(f"  sysops stream-lines --count {count}: {ours.seconds:.3f} s, {rate:,.0f} lines/s, CLI CPU {ours.cpu:.3f} s")
    print(f"  docker exec python print {count} lines: {base.seconds:.3f} s, {base_rate:,.0f} lines/s")
    return [
        Figure(
            metric=f"streamed lines/s ({count:,} lines, routed)",
            ours=rate,
            unit="lines/s",
            baseline=base_rate,
            baseline_name="docker exec python print lines",
            goal=">= 200,000 lines/s",
            passed=None if smoke else rate >= LINE_GOAL,
            detail={"seconds": ours.seconds, "baseline_seconds": base.seconds, "lines": count},
        ),
        Figure(
            metric=f"CLI CPU for {count:,} streamed lines",
            ours=ours.cpu,
            unit="s",
            baseline=base.cpu,
            baseline_name="docker CLI CPU (docker exec)",
            goal="< 1 s",
            passed=None if smoke else ours.cpu < 1.0,
            detail={"cli_max_rss_kib": ours.max_rss_kib},
        ),
    ]


def _log_figures(env: dict[str, str], container: str, megabytes: int, smoke: bool) -> list[Figure]:
    _quiet([SYSOPS, "fill-log", "--mb", str(megabytes)], env)
    host_before = _host_rss_kib(env)
    ours = run_counted([SYSOPS, "plugin", "logs", "streamer"], env)
    host_after = _host_rss_kib(env)
    base = run_counted(["docker", "logs", container], env)
    lines = ours.out_bytes // LOG_LINE_BYTES
    rate, base_rate = lines / ours.seconds, (base.out_bytes // LOG_LINE_BYTES) / base.seconds
    mib = ours.out_bytes / (1 << 20)
    print(
        f"  sysops plugin logs ({mib:.0f} MiB, {lines:,} lines): {ours.seconds:.2f} s, {rate:,.0f} lines/s, "
        f"CLI CPU {ours.cpu:.2f} s, CLI peak RSS {ours.max_rss_kib / 1024:.0f} MiB, "
        f"host RSS {host_before / 1024:.0f} -> {host_after / 1024:.0f} MiB"
    )
    print(f"  docker logs: {base.seconds:.2f} s, {base_rate:,.0f} lines/s")
    return [
        Figure(
            metric=f"plugin logs lines/s ({mib:.0f} MiB log)",
            ours=rate,
            unit="lines/s",
            baseline=base_rate,
            baseline_name="docker logs CONTAINER",
            goal=">= 200,000 lines/s",
            passed=None if smoke else rate >= LINE_GOAL,
            detail={"seconds": ours.seconds, "baseline_seconds": base.seconds, "cli_cpu_seconds": ours.cpu},
        ),
        Figure(
            metric=f"plugin logs CLI peak RSS ({mib:.0f} MiB log)",
            ours=ours.max_rss_kib / 1024,
            unit="MiB",
            baseline=base.max_rss_kib / 1024,
            baseline_name="docker logs peak RSS",
            goal="bounded (< 100 MiB)",
            passed=None if smoke else ours.max_rss_kib < 100 * 1024,
            detail={"host_rss_before_mib": host_before / 1024, "host_rss_after_mib": host_after / 1024},
        ),
    ]


def measure(smoke: bool) -> list[Figure]:
    """Bring up the streamer plugin privately, measure streaming and logs, remove everything."""
    count = 5_000 if smoke else int(os.environ.get("BENCH_LINES", "200000"))
    megabytes = 2 if smoke else int(os.environ.get("BENCH_LOG_MB", "500"))
    from sdk_overlay import overlay_base_image  # bench/sdk_overlay.py

    with tempfile.TemporaryDirectory(prefix="sysops-bench-stream-") as home, overlay_base_image() as base:
        env = {**os.environ, "SYSOPS_HOME": home}
        if base:
            env["SYSOPS_BASE_IMAGE"] = base
        try:
            _quiet([SYSOPS, "plugin", "up", str(PLUGIN_DIR)], env)
            from sysops.settings import Settings

            container = _container(env, Settings(home=Path(home)).installation_id)
            print(f"\nstreaming ({'smoke' if smoke else 'real'} run):")
            return _stream_figures(env, container, count, smoke) + _log_figures(env, container, megabytes, smoke)
        finally:
            subprocess.run([SYSOPS, "plugin", "down", "streamer", "--purge"], env=env, check=False, capture_output=True)
            subprocess.run([SYSOPS, "host", "stop"], env=env, check=False, capture_output=True)


def main() -> int:
    for figure in measure(smoke="--smoke" in sys.argv):
        print(figure.as_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
