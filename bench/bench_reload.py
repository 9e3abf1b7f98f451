"""Hot reload: save -> new version answering, per reload, under a steady load of calls, with its breakdown.

Runs `sysops plugin up examples/hello --watch --dev` (development mode, docs/hot-loading.md; a copy, in a
private SYSOPS_HOME; BENCH_RELOAD_DEV=0 for production mode) and, while a thread calls
`greet` at a steady rate through the router (core/router.py: the path a routed `sysops greet` takes, re-sends
included), saves a code-only change RELOADS times (20; the smoke run 2). For each save it measures the time
until a call answers with the new text, and reads the watch's one-line breakdown of that reload (detect,
build, start, ready, switch: core/reload_timing.py). Then a few saves whose initialize() raises: the time
until the watch reports the rollback, the old version answering throughout. Last, a few saves in
production mode (an image built per save), for comparison.

Baseline, in the same run: a `docker build` of the same context that hits the layer cache plus a start of
the image (the driver's, hardened) until its gRPC health answers SERVING. Goals (issue 15 item 1): median
<= 0.25 s, p95 <= 0.4 s, 0 failed calls of >= 2,000 sent at a steady rate.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
SYSOPS = Path(sys.executable).parent / "sysops"
#: Calls per second of the steady load.
RATE = float(os.environ.get("BENCH_RELOAD_RATE", "60"))
#: The issue's floor of calls sent across the reloads.
MIN_CALLS = 2000
_BREAKDOWN = re.compile(r"reload: (.*?) -> serving ([0-9.]+)s")


def _wait(condition: Callable[[], bool], timeout: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if condition():
            return time.perf_counter() - started
        time.sleep(0.002)
    raise TimeoutError("condition not met")


@dataclass
class Load:
    """A steady stream of routed `greet` calls, counting failures and noting when each answer came."""

    home: Path
    rate: float = RATE
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    answers: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from sysops.core import router
        from sysops.core.client import InvocationResult
        from sysops.settings import Settings
        from sysops.store import Store

        store = Store(Settings(home=self.home).store_path)
        period, next_at = 1 / self.rate, time.perf_counter()
        try:
            while not self.stop.is_set():
                next_at += period
                route = store.route("greet")
                self.sent += 1
                try:
                    if route is None:
                        raise RuntimeError("no route for greet")
                    items = list(router.call(route, {"name": "x"}, "text", store.route))
                    result = items[-1]
                    if not isinstance(result, InvocationResult) or result.exit_code != 0:
                        raise RuntimeError(f"bad result {result!r}")
                    self.answers.append((time.perf_counter(), result.text))
                except Exception as exc:  # every failure is counted and reported, none ends the load
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            store.close()


def _greet(home: Path) -> str:
    """One routed call (re-sends included), its text ("" if it failed)."""
    from sysops.core import router
    from sysops.core.client import InvocationResult
    from sysops.settings import Settings
    from sysops.store import Store

    store = Store(Settings(home=home).store_path)
    try:
        route = store.route("greet")
        if route is None:
            return ""
        result = list(router.call(route, {"name": "x"}, "text", store.route))[-1]
        return result.text if isinstance(result, InvocationResult) else ""
    except Exception:
        return ""
    finally:
        store.close()


def _set_greeting(plugin_dir: Path, text: str) -> None:
    source = plugin_dir / "hello_plugin" / "plugin.py"
    code = source.read_text()
    start = code.index('text = " ".join([') + len('text = " ".join([')
    end = code.index("] * times)", start)
    source.write_text(code[:start] + f'f"{text}, {{name}}!"' + code[end:])


def baseline(plugin_dir: Path, home: Path) -> float:
    """`docker build` (cache hit) + a hardened start of the image until gRPC health is SERVING."""
    from sysops.core.client import PluginClient
    from sysops.core.manifest import load_manifest
    from sysops.core.rollout import limits_for
    from sysops.imaging.image import make_context
    from sysops.runtime.base import BuildRequest, InstanceSpec
    from sysops.runtime.docker.driver import DockerDriver
    from sysops.settings import Settings

    settings = Settings(home=home)
    driver = DockerDriver()
    manifest = load_manifest(plugin_dir)
    base = driver.image_id(settings.base_image) or ""
    scratch = Path(tempfile.mkdtemp(prefix="sysops-bench-run-", dir="/tmp"))
    run_dir, data_dir = scratch / "run", scratch / "data"
    run_dir.mkdir()
    os.chmod(run_dir, 0o777)
    volume = f"sysops-bench-{uuid.uuid4().hex[:8]}"
    with make_context(plugin_dir, manifest, base, settings.cache_dir, {"sysops.bench": "1"}) as context:
        started = time.perf_counter()
        built = driver.build_image(BuildRequest(context.tar_path, "sysops-bench/baseline:latest"), lambda _: None)
    spec = InstanceSpec(
        name=f"sysops-bench-{uuid.uuid4().hex[:8]}",
        image=built.id,
        labels={"sysops.bench": "1"},
        environment={"SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock", "SYSOPS_ENTRYPOINT": manifest.entrypoint},
        socket_dir=run_dir,
        data_volume=volume,
        limits=limits_for(manifest),
        data_dir=data_dir,
    )
    status = driver.start(spec)
    try:
        with PluginClient(f"unix://{run_dir}/plugin.sock") as client:
            _wait(lambda: (run_dir / "plugin.sock").exists() and client.healthy(timeout=0.5))
        return time.perf_counter() - started
    finally:
        driver.remove(status.handle)
        driver.remove_volume(volume)
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def watching(scratch: Path, *, dev: bool) -> Iterator[tuple[Path, Path, Path]]:
    """`plugin up --watch` (with `--dev`: development mode) of a copy of examples/hello in a private home;
    yield (home, plugin dir, log)."""
    home, plugin_dir, log = scratch / "home", scratch / "hello", scratch / "watch.log"
    shutil.copytree(ROOT / "examples" / "hello", plugin_dir)
    env = {**os.environ, "SYSOPS_HOME": str(home)}
    command = [str(SYSOPS), "plugin", "up", str(plugin_dir), "--watch", *(["--dev"] if dev else [])]
    with open(log, "w") as sink:
        watch = subprocess.Popen(command, env=env, stderr=sink, stdout=sink)
    try:
        _wait(lambda: "watching" in log.read_text() or watch.poll() is not None, 300)
        if watch.poll() is not None:
            raise RuntimeError(f"plugin up --watch ended: {log.read_text()[-2000:]}")
        yield home, plugin_dir, log
    finally:
        watch.terminate()
        watch.wait(timeout=30)
        subprocess.run([SYSOPS, "plugin", "down", "hello", "--purge"], env=env, check=False, capture_output=True)
        subprocess.run([SYSOPS, "host", "stop"], env=env, check=False, capture_output=True)
        subprocess.run(["docker", "rmi", "-f", "sysops-bench/baseline:latest"], check=False, capture_output=True)


def _breakdowns(log: Path) -> list[dict[str, float]]:
    """The watch's per-reload breakdown lines, parsed."""
    parsed = []
    for match in _BREAKDOWN.finditer(log.read_text()):
        phases = {name: float(value.rstrip("s")) for name, value in (p.split() for p in match.group(1).split(", "))}
        parsed.append({**phases, "serving": float(match.group(2))})
    return parsed


def _rolls(log: Path) -> int:
    """Rolls the watch finished (its "serving (revision N)" lines)."""
    return log.read_text().count(" serving (revision ")


def _reloads(home: Path, plugin_dir: Path, log: Path, rounds: int) -> list[float]:
    """Save a code-only change `rounds` times; the seconds from each save to a call answering with it."""
    latencies = []
    for round_number in range(rounds):
        done = _rolls(log)
        text = f"Round {round_number}"
        saved = time.perf_counter()
        _set_greeting(plugin_dir, text)
        _wait(lambda text=text: _greet(home).startswith(text))
        latencies.append(time.perf_counter() - saved)
        _wait(lambda done=done: _rolls(log) > done)  # the roll ended (old one drained): the next save
        time.sleep(0.2)
    return latencies


def _rollbacks(plugin_dir: Path, log: Path, rounds: int) -> list[float]:
    """Saves whose initialize() raises: seconds until the watch reports the rollback; then the good code again."""
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    decided = []
    for _ in range(rounds):
        failures = log.read_text().count("reload failed")
        saved = time.perf_counter()
        source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('broken')"))
        _wait(lambda failures=failures: log.read_text().count("reload failed") > failures)
        decided.append(time.perf_counter() - saved)
        source.write_text(good)  # the version serving: the watch finds it up to date
        _wait(lambda: "up to date" in log.read_text().rsplit("reload failed", 1)[-1])
        time.sleep(0.2)
    return decided


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(smoke: bool) -> list[Figure]:
    """The reload figures (see the module docstring)."""
    rounds = 2 if smoke else int(os.environ.get("BENCH_RELOADS", "20"))
    dev = os.environ.get("BENCH_RELOAD_DEV", "1") != "0"
    mode = "development mode" if dev else "production mode"
    with (
        tempfile.TemporaryDirectory(prefix="sysops-bench-reload-") as scratch,
        watching(Path(scratch), dev=dev) as watched,
    ):
        home, plugin_dir, log = watched
        baselines = [baseline(plugin_dir, home) for _ in range(1 if smoke else 3)]
        load = Load(home)
        loader = threading.Thread(target=load.run, daemon=True)
        loader.start()
        try:
            latencies = _reloads(home, plugin_dir, log, rounds)
            if not smoke:  # the floor of calls sent at the steady rate
                _wait(lambda: load.sent >= MIN_CALLS, 3600)
        finally:
            load.stop.set()
            loader.join(timeout=30)
        breakdowns = _breakdowns(log)
        rollbacks = _rollbacks(plugin_dir, log, 1 if smoke else 3)
    base = statistics.median(baselines)
    median, p95 = statistics.median(latencies), _p95(latencies)
    phases = (
        {
            p: statistics.median(b.get(p, 0.0) for b in breakdowns)
            for p in ("detect", "build", "start", "ready", "switch")
        }
        if breakdowns
        else {}
    )
    detail = {"chart": "reload", "breakdown": breakdowns, "median_breakdown": phases, "calls": load.sent}
    judged = not smoke
    return [
        Figure(
            f"save -> new version answering ({mode}), median",
            median,
            "s",
            base,
            "docker build (cache hit) + start to SERVING",
            "<= 0.25 s",
            (median <= 0.25) if judged else None,
            series=latencies,
            detail=detail,
        ),
        Figure(
            f"save -> new version answering ({mode}), p95",
            p95,
            "s",
            base,
            "docker build (cache hit) + start to SERVING",
            "<= 0.4 s",
            (p95 <= 0.4) if judged else None,
        ),
        Figure(
            "failed calls during the reloads",
            len(load.failures),
            "calls",
            goal=f"0 of >= {MIN_CALLS} at {RATE:g}/s",
            passed=(not load.failures and load.sent >= MIN_CALLS) if judged else None,
            detail={"sent": load.sent, "failures": load.failures[:10]},
        ),
        Figure(
            "save -> rollback decided (initialize() raises)",
            statistics.median(rollbacks),
            "s",
            base,
            "docker build (cache hit) + start to SERVING",
            series=rollbacks,
        ),
        *([] if smoke or not dev else [_production_median()]),
    ]


def _production_median() -> Figure:
    """The same saves in production mode (an image built per save), a few of them, for comparison: no goal."""
    with (
        tempfile.TemporaryDirectory(prefix="sysops-bench-reload-") as scratch,
        watching(Path(scratch), dev=False) as (home, plugin_dir, log),
    ):
        base = baseline(plugin_dir, home)
        latencies = _reloads(home, plugin_dir, log, int(os.environ.get("BENCH_RELOADS_PRODUCTION", "5")))
    return Figure(
        "save -> new version answering (production mode), median",
        statistics.median(latencies),
        "s",
        base,
        "docker build (cache hit) + start to SERVING",
        series=latencies,
    )


def main() -> int:
    for figure in measure(smoke="--smoke" in sys.argv):
        ratio = f"  ratio {figure.ratio:5.2f}" if figure.ratio is not None else ""
        goal = f"  goal {figure.goal}: {figure.passed}" if figure.goal else ""
        print(f"{figure.metric:50} {figure.ours:8.3f} {figure.unit}{ratio}{goal}")
        if figure.detail.get("median_breakdown"):
            shown = ", ".join(f"{k} {v:.3f}s" for k, v in figure.detail["median_breakdown"].items())
            print(f"  median breakdown: {shown}; calls sent {figure.detail['calls']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
