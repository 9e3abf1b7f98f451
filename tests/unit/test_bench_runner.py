"""The benchmark runner (bench/run.py): one table, the JSON report, the reload chart, broken and missing modules.

Fake bench modules are written to a temporary directory put on sys.path, so the runner's own logic is tested
without running a real benchmark; tests/integration/test_bench_smoke.py runs real ones through `python -m bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402  (bench/ on sys.path, as the runner itself does)

MODULES = {
    "fake_reload": """
        from figures import Figure
        def measure(smoke):
            return [Figure("reload median", 0.2, "s", baseline=0.5, baseline_name="docker build+run",
                           goal="<= 0.25 s", passed=None if smoke else True,
                           series=[0.21, 0.19, 0.2], detail={"chart": "reload"})]
    """,
    "fake_plain": """
        from figures import Figure
        def measure(smoke):
            return [Figure("calls/s", 1000.0, "calls/s")]
    """,
    "fake_raises": """
        def measure(smoke):
            raise RuntimeError("engine went away")
    """,
    "fake_bad_import": """
        import no_such_dependency_anywhere
    """,
    "fake_wrong_type": """
        def measure(smoke):
            return {"not": "a list"}
    """,
    "fake_judges_in_smoke": """
        from figures import Figure
        def measure(smoke):
            return [Figure("x", 1.0, "s", goal="<= 2 s", passed=True)]
    """,
}


@pytest.fixture
def fake_modules(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "fakes"
    directory.mkdir()
    for name, code in MODULES.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(code))
    sys.path.insert(0, str(directory))
    yield directory
    sys.path.remove(str(directory))
    for name in MODULES:
        sys.modules.pop(name, None)


def _run(argv: list[str], benchmarks: tuple[str, ...], results: Path) -> int:
    return run.main(argv, benchmarks=benchmarks, results_dir=results)


def test_real_run_prints_one_table_writes_report_and_chart(
    fake_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    assert _run([], ("fake_reload", "fake_plain"), results) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["metric", "ours", "baseline", "ratio", "goal", "result"]
    reload_row = next(line for line in out.splitlines() if line.startswith("reload median"))
    assert "0.2 s" in reload_row and "0.5 s (docker build+run)" in reload_row
    assert "0.40x" in reload_row and "<= 0.25 s" in reload_row and reload_row.endswith("pass")
    assert "goals met: 1 of 1" in out
    document = json.loads((results / "latest.json").read_text())
    assert set(document) >= {"machine", "when", "figures"}
    assert document["machine"]["cpus"] >= 1
    assert [figure["metric"] for figure in document["figures"]] == ["reload median", "calls/s"]
    assert document["figures"][0]["ratio"] == pytest.approx(0.4)
    assert document["figures"][0]["module"] == "fake_reload"
    chart = results / "reload.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_and_missing_modules_are_reported_not_fatal(
    fake_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ("fake_raises", "fake_bad_import", "fake_wrong_type", "fake_not_written", "fake_plain")
    assert _run(["--smoke"], names, tmp_path) == 1
    out = capsys.readouterr().out
    assert "fake_raises: failed" in out and "RuntimeError: engine went away" in out
    assert "fake_bad_import: failed" in out and "no_such_dependency_anywhere" in out
    assert "fake_wrong_type: failed" in out and "not a list of Figure" in out
    assert "fake_not_written: missing" in out and "not written yet" in out
    assert "calls/s" in out  # the module after the broken ones still ran
    assert "BROKEN: fake_raises, fake_bad_import, fake_wrong_type" in out
    document = json.loads((tmp_path / "smoke.json").read_text())
    statuses = {item["module"]: item["status"] for item in document["runs"]}
    assert statuses == {
        "fake_raises": "failed",
        "fake_bad_import": "failed",
        "fake_wrong_type": "failed",
        "fake_not_written": "missing",
        "fake_plain": "ok",
    }
    assert not (tmp_path / "latest.json").exists()  # a smoke run never replaces the real figures


def test_only_missing_modules_is_not_a_failure(fake_modules: Path, tmp_path: Path) -> None:
    assert _run(["--smoke"], ("fake_not_written",), tmp_path) == 0


def test_smoke_run_refuses_a_judged_goal(
    fake_modules: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--smoke"], ("fake_judges_in_smoke",), tmp_path) == 1
    assert "judges a goal in a smoke run" in capsys.readouterr().out


def test_only_runs_the_named_module_and_merges_into_the_report(fake_modules: Path, tmp_path: Path) -> None:
    assert _run([], ("fake_reload", "fake_plain"), tmp_path) == 0
    extra = tmp_path / "copy.json"
    assert _run(["--only", "fake_plain", "--json", str(extra)], ("fake_reload", "fake_plain"), tmp_path) == 0
    document: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    assert sorted(figure["module"] for figure in document["figures"]) == ["fake_plain", "fake_reload"]
    assert json.loads(extra.read_text())["figures"] == document["figures"]


def test_unknown_only_name_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--only", "bench_nope"], ("fake_plain",), tmp_path) == 2
    err = capsys.readouterr().err
    assert err.strip() == "bench: unknown benchmark bench_nope; known: fake_plain"


def test_every_benchmark_the_issues_name_is_listed() -> None:
    named = {
        "bench_reload", "bench_cold_start", "bench_scale", "bench_throughput", "bench_streaming",
        "bench_cli_startup", "bench_invoke", "bench_events", "bench_host_services", "bench_build_context",
        "bench_k8s_call", "bench_k8s_scale",
    }  # fmt: skip
    assert set(run.BENCHMARKS) == named


def test_python_dash_m_bench_runs_from_the_repo_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "bench_nope"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "unknown benchmark bench_nope" in result.stderr
