"""The benchmarks page, generated from the runner's last full report `bench/results/latest.json`.

The report's shape is fixed (bench/run.py writes it): `{"machine": {...}, "when": ISO time, "figures":
[Figure.as_json(), ...]}` (bench/figures.py). Each figure is shown with the baseline measured in the same
run and the ratio, because absolute times on shared machines say little; and with its goal and whether the
run met it. Without a report the page says how to make one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gen_docs.markdown import cell, code, generated_from, table

REPORT = Path("bench") / "results" / "latest.json"
#: The runner's chart of the reload latency of each reload in that run, and its name in the site.
CHART = Path("bench") / "results" / "reload.png"
CHART_IN_DOCS = "bench-reload.png"


class ReportError(ValueError):
    """bench/results/latest.json is not a report of the runner's shape."""


def _number(value: Any) -> str:
    """A figure's value with a sensible number of digits."""
    if value is None:
        return "-"
    number = float(value)
    return f"{number:.3g}" if abs(number) < 1000 else f"{number:,.0f}"


def _verdict(passed: Any) -> str:
    return {True: "pass", False: "**FAIL**"}.get(passed, "-")


def _figure_row(figure: dict[str, Any]) -> list[str]:
    unit = figure.get("unit", "")
    baseline = figure.get("baseline")
    baseline_text = f"{_number(baseline)} {unit} ({figure.get('baseline_name', '')})" if baseline is not None else "-"
    ratio = figure.get("ratio")
    return [
        cell(figure["metric"]),
        cell(f"{_number(figure['ours'])} {unit}"),
        cell(baseline_text),
        f"{ratio:.2f}x" if isinstance(ratio, int | float) else "-",
        cell(figure.get("goal", "")),
        _verdict(figure.get("passed")),
        code(figure.get("module", "")),
    ]


def render(report: dict[str, Any], *, with_chart: bool = False) -> str:
    """The page for one runner report (and the reload chart beside it, when the run made one)."""
    try:
        figures = report["figures"]
        machine = report.get("machine", {})
        rows = [_figure_row(figure) for figure in figures]
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{REPORT}: not a report of bench/run.py's shape ({error!r})") from None
    machine_rows = [[code(key), cell(value)] for key, value in machine.items()]
    return "\n".join(
        [
            "# Benchmarks\n",
            generated_from(f"`{REPORT}` (the last full run of `python -m bench`)"),
            f"Measured {report.get('when', 'at an unknown time')}. Each figure sits beside a baseline measured in "
            "the same run; the ratio is ours over the baseline. Run `.venv/bin/python -m bench` from the "
            "repository's root to measure again, `--only NAME` for one benchmark, `--smoke` for the quick check "
            "CI makes (no goal judged).\n",
            "## Machine\n",
            table(["what", "value"], machine_rows) if machine_rows else "Not recorded.\n",
            "## Figures\n",
            table(["metric", "ours", "baseline", "ratio", "goal", "result", "module"], rows),
            f"## Reload latency\n\n![Latency of each reload in the run]({CHART_IN_DOCS})\n" if with_chart else "",
        ]
    )


def no_report() -> str:
    """The page when no full run has been recorded yet."""
    return "\n".join(
        [
            "# Benchmarks\n",
            generated_from(f"`{REPORT}`"),
            f"No benchmark report (`{REPORT}`) was present when this site was built. Run the benchmarks from "
            "the repository's root with `.venv/bin/python -m bench` (`--only NAME` "
            "runs one, `--smoke` the quick check CI makes) and build the docs again: this page then shows every "
            "figure beside its baseline, the ratio, the goal and whether it was met.\n",
        ]
    )


def generate(root: Path) -> str:
    """The page from `root/bench/results/latest.json`, or the note when there is none."""
    path = root / REPORT
    if not path.is_file():
        return no_report()
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ReportError(f"{REPORT}: not JSON ({error})") from None
    if not isinstance(report, dict):
        raise ReportError(f"{REPORT}: not a JSON object")
    return render(report, with_chart=(root / CHART).is_file())


def assets(root: Path) -> dict[str, Path]:
    """Files the page shows, by their path in the site: the reload chart of the reported run, if any."""
    chart = root / CHART
    return {CHART_IN_DOCS: chart} if chart.is_file() and (root / REPORT).is_file() else {}
