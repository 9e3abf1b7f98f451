"""Wall time of the CLI's start: the routed `sysops greet World` and `sysops plugin ls`, before and after rich.

rich draws tables and progress only on a terminal and is imported lazily (cli/output.py, cli/progress.py),
so the routed fast path (cli/main.py) never pays for it. This measures what that saves. Built-in commands
(`plugin ls`) go through typer, whose `import typer` already imports rich's console and table (typer.core
uses rich for help when it is installed): for them "rich imported" adds only what typer does not load. examples/hello is
brought up in a private SYSOPS_HOME (the first command starts that installation's host); then, interleaved
so every variant sees the same machine load, ROUNDS times each:
  `python -c pass`                          the interpreter's start: the floor of any CLI (baseline);
  `sysops greet World`                      the routed command as a user runs it (console script);
  `python -c "main(['greet', 'World'])"`    the same call without rich ("before rich")...
  ... the same with rich's console, table and progress imported first ("after rich": what an eager import
      would cost every routed call);
  `sysops plugin ls` (to a pipe: the plain table) and the same in-process call with rich imported first.
Figures: each median beside its baseline, with the ratio; `detail` keeps every sample and whether the routed
call imported rich, typer or click (it must import none). smoke: 2 rounds; full: 20 (BENCH_ROUNDS) after a
warm-up round. No goal is judged (the issue asks for the figures). Removes what it made: the plugin (down
--purge), the host, the home.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SYSOPS = str(Path(sys.executable).parent / "sysops")
RICH_IMPORT = "import rich.console, rich.table, rich.progress; "
ROUTED = "import sys; from sysops.cli.main import main; sys.exit(main(['greet', 'World']))"
LISTED = "import sys; from sysops.cli.main import main; sys.exit(main(['plugin', 'ls']))"
#: Which of the heavy modules a routed call imported (printed as a Python set).
IMPORTS_PROBE = (
    "import sys; from sysops.cli.main import main; main(['greet', 'World']); "
    "print(sorted({'rich', 'typer', 'click', 'yaml'} & set(sys.modules)), file=sys.stderr)"
)
VARIANTS: dict[str, list[str]] = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "sysops greet World": [SYSOPS, "greet", "World"],
    "routed, rich not imported": [PYTHON, "-c", ROUTED],
    "routed, rich imported": [PYTHON, "-c", RICH_IMPORT + ROUTED],
    "sysops plugin ls": [SYSOPS, "plugin", "ls"],
    "plugin ls, rich not imported": [PYTHON, "-c", LISTED],
    "plugin ls, rich imported": [PYTHON, "-c", RICH_IMPORT + LISTED],
}


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _samples(env: dict[str, str], rounds: int, warm_up: bool) -> dict[str, list[float]]:
    """Every variant once per round, in turn (after a warm-up round, not counted, when `warm_up`)."""
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_number in range(rounds + 1 if warm_up else rounds):
        for name, argv in VARIANTS.items():
            seconds = _seconds(argv, env)
            if round_number or not warm_up:
                samples[name].append(seconds)
    return samples


def _figure(metric: str, ours: list[float], baseline_name: str, baseline: list[float]) -> Figure:
    return Figure(
        metric,
        statistics.median(ours),
        "s",
        baseline=statistics.median(baseline),
        baseline_name=baseline_name,
        series=ours,
        detail={"baseline_series": baseline},
    )


def _heavy_imports(env: dict[str, str]) -> str:
    probe = subprocess.run([PYTHON, "-c", IMPORTS_PROBE], env=env, capture_output=True, text=True, check=True)
    return probe.stderr.strip().splitlines()[-1]


def measure(smoke: bool) -> list[Figure]:
    """The figures of the module docstring; smoke: 2 rounds, no warm-up."""
    rounds = 2 if smoke else int(os.environ.get("BENCH_ROUNDS", "20"))
    with tempfile.TemporaryDirectory(prefix="sysops-bench-cli-") as home:
        env = {**os.environ, "SYSOPS_HOME": home}
        env.pop("NO_COLOR", None)
        try:
            up = subprocess.run(
                [SYSOPS, "plugin", "up", str(ROOT / "examples" / "hello")], env=env, capture_output=True, text=True
            )
            if up.returncode != 0:
                raise RuntimeError(f"plugin up examples/hello failed ({up.returncode}): {up.stderr[-400:]}")
            samples = _samples(env, rounds, warm_up=not smoke)
            imported = _heavy_imports(env)
        finally:
            subprocess.run([SYSOPS, "plugin", "down", "hello", "--purge"], env=env, capture_output=True, check=False)
            subprocess.run([SYSOPS, "host", "stop"], env=env, capture_output=True, check=False)
    floor = samples["python -c pass"]
    figures = [
        _figure("cli startup: sysops greet World (routed)", samples["sysops greet World"], "python -c pass", floor),
        _figure(
            "cli startup: routed call with rich imported",
            samples["routed, rich imported"],
            "the same call, rich not imported",
            samples["routed, rich not imported"],
        ),
        _figure("cli startup: sysops plugin ls", samples["sysops plugin ls"], "python -c pass", floor),
        _figure(
            "cli startup: plugin ls with rich imported",
            samples["plugin ls, rich imported"],
            "the same call, rich not imported",
            samples["plugin ls, rich not imported"],
        ),
    ]
    figures[0].detail["heavy modules the routed call imported"] = imported
    return figures


def main() -> int:
    for figure in measure(smoke=os.environ.get("BENCH_SMOKE") == "1"):
        ratio = f"  ratio {figure.ratio:.2f}" if figure.ratio is not None else ""
        print(
            f"{figure.metric:<48} {figure.ours * 1000:8.1f} ms   {figure.baseline_name}: "
            f"{(figure.baseline or 0) * 1000:.1f} ms{ratio}"
        )
        if "heavy modules the routed call imported" in figure.detail:
            print(f"{'':<48} heavy modules imported: {figure.detail['heavy modules the routed call imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
