"""Fifty plugins on one small host (issue 15 item 3), each figure beside a baseline measured in the same run.

In a private SYSOPS_HOME (bench/plugin_fleet.py), brings up one plugin and measures the baselines with one:
`sysops plugin ls` and a routed `sysops <plugin>-ping` (BENCH_SCALE_PAIRS runs each, median), and the host's
idle CPU (its process's utime+stime over BENCH_SCALE_IDLE seconds, in % of one core). Then it brings up the
rest (BENCH_SCALE_PLUGINS in all, default 50; distinct names, the same small code) and measures:
  - idle memory per plugin, from each container's cgroup (memory.usage_in_bytes on v1, memory.current on v2;
    the largest and the median; goal <= 40 MiB each), after the fleet settled;
  - `plugin ls` with all of them (goal <= 0.3 s), and against the one-plugin baseline;
  - a routed command with all of them against the same with one (goal: no slower, <= 1.1x for noise): the
    one-plugin side is a second private installation with one plugin, up beside the fifty, and the two are
    called in turn (BENCH_SCALE_PAIRS pairs, median of each side). Both sides then run on a machine with the
    same load at every moment: measured one after the other, minutes apart, this machine's speed drifted by as
    much as the goal (medians 1.01-1.14x apart in five full runs, while the same script run twice by hand gave
    0.98-1.04x). What fifty idle plugins cost the machine is its own figures (memory, host CPU); the ratio is
    what the routing path does with fifty. The first installation's own one-plugin runs, made before the others
    came up, are in the figure's detail;
  - the host's idle CPU with all of them (goal < 2 % of a core; supervision probes every instance);
  - `plugin down --purge` of all: containers, volumes and images of the installation left (goal 0).
The smoke run uses 2 plugins, 3 runs and a 2 s idle window and judges nothing. Everything it made is removed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure
from plugin_fleet import SYSOPS, Fleet, fleet

_MIB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def measure(smoke: bool) -> list[Figure]:
    """The scale figures (see the module docstring)."""
    count = 2 if smoke else int(os.environ.get("BENCH_SCALE_PLUGINS", "50"))
    runs = 2 if smoke else int(os.environ.get("BENCH_SCALE_PAIRS", "15"))
    idle = 2.0 if smoke else float(os.environ.get("BENCH_SCALE_IDLE", "20"))
    figures: list[Figure] = []
    with fleet() as made, fleet() as alone:
        names = [f"scale-{index:02d}" for index in range(count)]
        made.up(names[0])
        ls_one = _timed(made, ["plugin", "ls"], runs)
        call_before = _timed(made, [f"{names[0]}-ping"], runs)
        cpu_one = _idle_cpu(made, idle)
        for name in names[1:]:
            made.up(name)
        alone.up("single")
        time.sleep(0 if smoke else 5.0)  # let the last ones finish starting before memory is read
        memory = _memory_per_container(made)
        ls_all = _timed(made, ["plugin", "ls"], runs)
        call_all, call_one = _in_turn((made, [f"{names[0]}-ping"]), (alone, ["single-ping"]), runs)
        cpu_all = _idle_cpu(made, idle)
    left = sum(made.leftovers.values()) + sum(alone.leftovers.values())
    judged = not smoke
    mib = [value / _MIB for value in memory.values()]
    figures += [
        Figure(
            f"scale: idle memory per plugin, largest of {len(mib)} (cgroup)",
            round(max(mib), 1),
            "MiB",
            goal="<= 40 MiB",
            passed=max(mib) <= 40 if judged else None,
            series=[round(value, 1) for value in mib],
            detail={"median_mib": round(statistics.median(mib), 1), "containers": len(mib)},
        ),
        Figure(
            f"scale: plugin ls with {count} plugins",
            _median(ls_all),
            "s",
            baseline=_median(ls_one),
            baseline_name="plugin ls with 1 plugin",
            goal="<= 0.3 s",
            passed=_median(ls_all) <= 0.3 if judged else None,
            series=ls_all,
        ),
        Figure(
            f"scale: routed command with {count} plugins",
            _median(call_all),
            "s",
            baseline=_median(call_one),
            baseline_name="the same with 1 plugin (another installation, called in turn)",
            goal="<= 1.1x (no slower, within noise)",
            passed=_median(call_all) <= 1.1 * _median(call_one) if judged else None,
            series=call_all,
            detail={"one_plugin_series": call_one, "same_installation_before_the_others_came_up": call_before},
        ),
        Figure(
            f"scale: host idle CPU with {count} plugins",
            round(cpu_all, 2),
            "% of a core",
            baseline=round(cpu_one, 2),
            baseline_name="with 1 plugin",
            goal="< 2 %",
            passed=cpu_all < 2.0 if judged else None,
            detail={"window_s": idle},
        ),
        Figure(
            f"scale: left after plugin down of {count}",
            float(left),
            "objects",
            goal="0",
            passed=left == 0 if judged else None,
            detail={
                **made.leftovers,
                "one_plugin_installation": alone.leftovers,
                "up_seconds_median": _median(made.up_seconds),
            },
        ),
    ]
    return figures


def _timed(made: Fleet, argv: list[str], runs: int) -> list[float]:
    """Wall seconds of `runs` runs of the CLI (after one warm-up run)."""
    made.sysops(*argv)
    return [_run_seconds(made, argv) for _ in range(runs)]


def _run_seconds(made: Fleet, argv: list[str]) -> float:
    """Wall seconds of one run of the CLI in `made`'s installation (its output thrown away)."""
    started = time.perf_counter()
    subprocess.run([SYSOPS, *argv], env=made.env, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 4)


def _in_turn(
    first: tuple[Fleet, list[str]], second: tuple[Fleet, list[str]], runs: int
) -> tuple[list[float], list[float]]:
    """`runs` runs of each installation's CLI command, one of each in turn (after a warm-up run of each), the
    first side first in even turns and second in odd ones (a run after the other may find caches warmer)."""
    sides = (first, second)
    for made, argv in sides:
        made.sysops(*argv)
    samples: tuple[list[float], list[float]] = ([], [])
    for turn in range(runs):
        for side in (0, 1) if turn % 2 == 0 else (1, 0):
            samples[side].append(_run_seconds(*sides[side]))
    return samples


def _median(samples: list[float]) -> float:
    return round(statistics.median(samples), 4) if samples else 0.0


def _idle_cpu(made: Fleet, seconds: float) -> float:
    """The host process's CPU over `seconds` of no calls, in % of one core."""
    stat = Path(f"/proc/{made.host_pid()}/stat")

    def ticks() -> int:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))

    before, started = ticks(), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (ticks() - before) / _TICKS / (time.monotonic() - started)


def _memory_per_container(made: Fleet) -> dict[str, int]:
    """Each running container's memory use as its cgroup counts it, in bytes."""
    used: dict[str, int] = {}
    for container in made.containers():
        for path in (
            Path(f"/sys/fs/cgroup/memory/docker/{container}/memory.usage_in_bytes"),
            Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/memory.current"),
        ):
            if path.exists():
                used[container] = int(path.read_text())
                break
    if not used:
        raise RuntimeError("no container's memory cgroup found")
    return used


def main() -> int:
    smoke = "--smoke" in sys.argv
    for figure in measure(smoke):
        ratio = f"  ({figure.ratio:.2f}x {figure.baseline_name})" if figure.ratio is not None else ""
        verdict = "" if figure.passed is None else ("  pass" if figure.passed else "  FAIL")
        print(f"{figure.metric:<52} {figure.ours:>10} {figure.unit}{ratio}  goal {figure.goal}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
