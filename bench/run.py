"""The one benchmark runner: every module in BENCHMARKS, one table, one JSON report, one reload chart.

Each bench module exposes `measure(smoke: bool) -> list[Figure]` (bench/figures.py). This runs them in order,
prints one table (metric, ours, baseline, ratio, goal, pass/fail), writes the report as JSON
(`{"machine": {...}, "when": ISO, "figures": [Figure.as_json() + "module"], "runs": [...]}`) and a PNG of the
reload latency of every reload (the `series` of figures whose `detail` has `"chart": "reload"`).

    .venv/bin/python -m bench                  # the real run: bench/results/latest.json + reload.png
    .venv/bin/python -m bench --smoke          # CI: a few iterations each, checks the benchmarks work
    .venv/bin/python -m bench --only bench_events --only bench_host_services --json /tmp/r.json

Benchmarks are never timed tests: a smoke run judges no goal; it fails (exit 1) only when a benchmark breaks
(raises, or returns something that is not a list of figures). A module not written yet (its file missing) is
reported and skipped, not fatal. A real run with --only merges its figures into the existing latest.json
(replacing those of the modules it ran), so the report keeps one figure set per module.

Bench modules are imported by their bare name with bench/ first on sys.path, exactly as when run as
`python bench/bench_x.py`: a module imports `from figures import Figure`.
Exit codes: 0 every benchmark ran, 1 one or more broke, 2 bad command line (an unknown --only name).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from figures import Figure  # noqa: E402  (bench/ is put on sys.path just above, as for `python bench/x.py`)

RESULTS_DIR = BENCH_DIR / "results"
#: scripts/bootstrap.sh installs helm and kubectl beside the venv's Python: the Kubernetes benchmarks use those.
PROJECT_TOOLS = Path(sys.executable).parent

#: Every benchmark, in the order they run (the cheap in-process ones first).
BENCHMARKS: tuple[str, ...] = (
    "bench_cli_startup",
    "bench_events",
    "bench_host_services",
    "bench_invoke",
    "bench_reload",
    "bench_cold_start",
    "bench_scale",
    "bench_throughput",
    "bench_streaming",
    "bench_build_context",
    "bench_k8s_call",
    "bench_k8s_scale",
)

COLUMNS = ("metric", "ours", "baseline", "ratio", "goal", "result")
#: Why a module broke, as long as the table shows it.
REASON_WIDTH = 100


@dataclass
class ModuleRun:
    """What became of one bench module: ran (with its figures), not written yet, or broke."""

    module: str
    status: str  # "ok" | "missing" | "failed"
    seconds: float = 0.0
    reason: str = ""
    figures: list[Figure] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The run without its figures (they are listed apart in the report)."""
        return {"module": self.module, "status": self.status, "seconds": round(self.seconds, 3), "reason": self.reason}


def _is_module_itself_missing(error: ModuleNotFoundError, module: str) -> bool:
    """True when the bench module's own file is absent (not when something it imports is)."""
    return error.name == module


def run_module(module: str, smoke: bool, importer: Callable[[str], Any] = importlib.import_module) -> ModuleRun:
    """Import one bench module and run its measure(); never raises (a broken module is a failed run)."""
    started = time.perf_counter()
    try:
        loaded = importer(module)
    except ModuleNotFoundError as error:
        if _is_module_itself_missing(error, module):
            return ModuleRun(module, "missing", reason=f"bench/{module}.py is not written yet")
        return ModuleRun(module, "failed", reason=f"import failed: {error}")
    except Exception as error:  # a module that exists but cannot be imported is broken
        return ModuleRun(module, "failed", reason=f"import failed: {type(error).__name__}: {error}")
    measure = getattr(loaded, "measure", None)
    if not callable(measure):
        return ModuleRun(module, "failed", reason="has no measure(smoke) function")
    try:
        result = measure(smoke)
    except BaseException as error:  # SystemExit/KeyboardInterrupt from a benchmark: report it, keep going
        if isinstance(error, KeyboardInterrupt):
            raise
        traceback.print_exc(file=sys.stderr)
        reason = f"measure raised {type(error).__name__}: {error}"
        return ModuleRun(module, "failed", time.perf_counter() - started, reason)
    seconds = time.perf_counter() - started
    problem = _figures_problem(result, smoke)
    if problem:
        return ModuleRun(module, "failed", seconds, problem)
    return ModuleRun(module, "ok", seconds, figures=list(result))


def _figures_problem(result: object, smoke: bool) -> str:
    """Why measure()'s result is not a usable list of figures, or "" when it is."""
    if not isinstance(result, list):
        return f"measure returned {type(result).__name__}, not a list of Figure"
    for item in result:
        if not isinstance(item, Figure):
            return f"measure returned a {type(item).__name__} among its figures"
        if not math.isfinite(item.ours):
            return f"figure {item.metric!r} has no finite value ({item.ours})"
        if smoke and item.passed is not None:
            return f"figure {item.metric!r} judges a goal in a smoke run (passed must be None)"
    return ""


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _result_word(passed: bool | None) -> str:
    return "-" if passed is None else ("pass" if passed else "FAIL")


def table_rows(runs: Iterable[ModuleRun]) -> list[tuple[str, ...]]:
    """The rows of the one table: a row per figure, and a row per module that gave none (with why)."""
    rows: list[tuple[str, ...]] = []
    for run in runs:
        if run.status != "ok":
            reason = run.reason if len(run.reason) <= REASON_WIDTH else f"{run.reason[: REASON_WIDTH - 3]}..."
            rows.append((f"{run.module}: {run.status}", "-", "-", "-", "-", reason))  # whole in the JSON report
            continue
        if not run.figures:
            rows.append((f"{run.module}: no figures", "-", "-", "-", "-", "(see its output)"))
        for figure in run.figures:
            ratio = figure.ratio
            baseline = "-" if figure.baseline is None else f"{_number(figure.baseline)} {figure.unit}"
            if figure.baseline is not None and figure.baseline_name:
                baseline += f" ({figure.baseline_name})"
            rows.append(
                (
                    figure.metric,
                    f"{_number(figure.ours)} {figure.unit}",
                    baseline,
                    "-" if ratio is None else f"{ratio:.2f}x",
                    figure.goal or "-",
                    _result_word(figure.passed),
                )
            )
    return rows


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Plain aligned text (readable in a CI log and when piped)."""
    widths = [max(len(row[index]) for row in (COLUMNS, *rows)) for index in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (COLUMNS, *rows)]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on (they mean little without it)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as meminfo:
            total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
        info["memory_gib"] = round(total_kib / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        docker = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=10
        )
        if docker.returncode == 0:
            info["docker"] = docker.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def report(runs: Sequence[ModuleRun], smoke: bool, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report; figures of modules not run this time are kept from `previous` (a merge for --only)."""
    ran = {run.module for run in runs}
    figures: list[dict[str, Any]] = []
    kept_runs: list[dict[str, Any]] = []
    if previous:
        figures = [item for item in previous.get("figures", []) if item.get("module") not in ran]
        kept_runs = [item for item in previous.get("runs", []) if item.get("module") not in ran]
    for run in runs:
        figures.extend({**figure.as_json(), "module": run.module} for figure in run.figures)
    return {
        "machine": machine(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": smoke,
        "figures": figures,
        "runs": kept_runs + [run.as_json() for run in runs],
    }


def reload_series(figures: Iterable[dict[str, Any]]) -> list[tuple[str, list[float]]]:
    """(metric, latency of every reload) of each figure marked for the reload chart."""
    return [
        (str(item["metric"]), [float(value) for value in item.get("series") or []])
        for item in figures
        if (item.get("detail") or {}).get("chart") == "reload" and item.get("series")
    ]


def write_reload_chart(series: Sequence[tuple[str, list[float]]], path: Path) -> str:
    """Draw the reload latency per reload as a PNG; returns why not ("" when written)."""
    if not series:
        return "no figure carries a reload series (detail 'chart': 'reload')"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (it is a dev extra: scripts/bootstrap.sh installs it)"
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for metric, values in series:
        axes.plot(range(1, len(values) + 1), values, marker="o", label=metric)
    axes.set_xlabel("reload")
    axes.set_ylabel("seconds")
    axes.set_title("save -> new version answering, per reload")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return ""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run every benchmark; one table.")
    parser.add_argument("--smoke", action="store_true", help="a few iterations each: checks they work, no goals")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this module (repeatable)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")
    parser.add_argument("--chart", type=Path, metavar="PATH", help="reload chart (default bench/results/reload.png)")
    return parser.parse_args(argv)


def _selected(only: list[str] | None, known: Sequence[str]) -> list[str]:
    if not only:
        return list(known)
    names = [name.removesuffix(".py").removeprefix("bench/") for name in only]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _read_previous(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def main(
    argv: Sequence[str] | None = None, benchmarks: Sequence[str] = BENCHMARKS, results_dir: Path = RESULTS_DIR
) -> int:
    """Run the benchmarks, print the table, write the report and the chart; the exit code (see above)."""
    try:
        args = _parse(argv)
        names = _selected(args.only, benchmarks)
    except SystemExit as error:
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)
        return 2 if error.code else 0
    if (PROJECT_TOOLS / "kubectl").is_file():
        os.environ["PATH"] = f"{PROJECT_TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"
    runs: list[ModuleRun] = []
    for name in names:
        print(f"==> {name}{' (smoke)' if args.smoke else ''}", file=sys.stderr, flush=True)
        run = run_module(name, args.smoke)
        print(f"    {run.status} in {run.seconds:.1f} s {run.reason}".rstrip(), file=sys.stderr, flush=True)
        runs.append(run)
    print(format_table(table_rows(runs)))
    # A smoke run never replaces the real figures the docs show; it writes its own file.
    default_path = results_dir / ("smoke.json" if args.smoke else "latest.json")
    previous = _read_previous(default_path) if args.only and not args.smoke else None
    document = report(runs, args.smoke, previous)
    for path in {default_path, *([args.json] if args.json else [])}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"report: {path}")
    chart = args.chart or results_dir / ("reload-smoke.png" if args.smoke else "reload.png")
    why_not = write_reload_chart(reload_series(document["figures"]), chart)
    print(f"reload chart: {why_not or chart}")
    judged = [figure.passed for run in runs for figure in run.figures if figure.passed is not None]
    failed = [run.module for run in runs if run.status == "failed"]
    missing = [run.module for run in runs if run.status == "missing"]
    summary = f"{sum(len(run.figures) for run in runs)} figures from {len(runs) - len(failed) - len(missing)} modules"
    if judged:
        summary += f"; goals met: {sum(judged)} of {len(judged)}"
    if missing:
        summary += f"; not written yet: {', '.join(missing)}"
    if failed:
        summary += f"; BROKEN: {', '.join(failed)}"
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
