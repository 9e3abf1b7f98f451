"""Routed-call latency through the resident host, each figure beside a baseline measured in the same run.

Brings up examples/hello in a private SYSOPS_HOME (the first command starts that installation's host),
then measures, paired and interleaved so both sides see the same machine load:
  (a) as processes: `sysops greet World` (CLI → host call socket → plugin) against
      `docker exec CONTAINER /opt/sysops/bin/python -c pass` on the same plugin container
      (BENCH_PAIRS pairs, default 20; goal: ratio <= 1.0). The CLI runs with its modules' bytecode cached
      (in a temporary PYTHONPYCACHEPREFIX), as pip leaves a regular install; when the environment sets
      PYTHONDONTWRITEBYTECODE (every module compiled on every run) that figure is printed as well. The
      venv's own `python -c pass` is printed beside them: the interpreter's start, the editable
      install's .pth finders included, is the floor of any CLI;
  (b) in process: a call through the host's call socket (a connection per call, as the CLI makes, and one
      kept connection) against a raw gRPC Invoke on a prebuilt stub to the same plugin socket
      (BENCH_CALLS pairs, default 2000; goal: ratio <= 1.05);
  (c) in process: the host's own routing of a call (core/router.py with the host's client pool: route
      checks, deadline, re-send logic, pooled channel) against the same raw gRPC Invoke (goal: <= 1.05).
Prints median and p95 of each and their ratios; asserts nothing (figures vary with the machine).
`measure(smoke)` returns the medians as Figures for the runner (bench/run.py); the smoke run makes 3 pairs
and 50 calls and judges nothing. Removes what it made: the plugin (down --purge), the host (`sysops host
stop`), the temporary home.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYSOPS = str(BIN / "sysops")
#: The base image's interpreter (plugin-base-image/Dockerfile).
PLUGIN_PYTHON = "/opt/sysops/bin/python"


def _summary(samples: list[float]) -> tuple[float, float]:
    """Median and 95th percentile, in seconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _paired(
    measured: Callable[[], object], baseline: Callable[[], object], pairs: int
) -> tuple[list[float], list[float]]:
    """Time `pairs` runs of each, interleaved, alternating which goes first (after a few warm-up runs)."""
    for _ in range(3):
        measured()
        baseline()
    ours: list[float] = []
    theirs: list[float] = []
    for index in range(pairs):
        order = ((measured, ours), (baseline, theirs)) if index % 2 == 0 else ((baseline, theirs), (measured, ours))
        for call, samples in order:
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
    return ours, theirs


#: Figures of the run in progress (`measure` collects them), and whether it is a smoke run (no goal judged).
_FIGURES: list[Figure] = []
_SMOKE = [False]


def _report(
    label: str, samples: list[float], baseline_label: str, baseline: list[float], goal: float | None = None
) -> None:
    """Print median and p95 of both and their ratios; keep the medians as a Figure (judged by `goal`, a ratio)."""
    median, p95 = _summary(samples)
    base_median, base_p95 = _summary(baseline)
    print(f"  {label:<44} median {median * 1000:8.3f} ms  p95 {p95 * 1000:8.3f} ms")
    print(f"  {baseline_label:<44} median {base_median * 1000:8.3f} ms  p95 {base_p95 * 1000:8.3f} ms")
    print(f"  ratio: median {median / base_median:5.2f}x  p95 {p95 / base_p95:5.2f}x", flush=True)
    _FIGURES.append(
        Figure(
            f"invoke: {label}",
            round(median * 1000, 3),
            "ms",
            baseline=round(base_median * 1000, 3),
            baseline_name=baseline_label,
            goal=f"<= {goal:g}x" if goal is not None else "",
            passed=None if goal is None or _SMOKE[0] else median / base_median <= goal,
            detail={"p95_ms": round(p95 * 1000, 3), "baseline_p95_ms": round(base_p95 * 1000, 3)},
        )
    )


def measure(smoke: bool) -> list[Figure]:
    """The figures of `main` (the smoke run: 3 pairs of processes, 50 in-process calls)."""
    _FIGURES.clear()
    _SMOKE[0] = smoke
    if smoke:
        os.environ.setdefault("BENCH_PAIRS", "3")
        os.environ.setdefault("BENCH_CALLS", "50")
    home_before = os.environ.get("SYSOPS_HOME")
    try:
        main()
    finally:
        if home_before is None:
            os.environ.pop("SYSOPS_HOME", None)
        else:
            os.environ["SYSOPS_HOME"] = home_before
    return list(_FIGURES)


def _run_quietly(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    pairs = int(os.environ.get("BENCH_PAIRS", "20"))
    calls = int(os.environ.get("BENCH_CALLS", "2000"))
    with tempfile.TemporaryDirectory(prefix="sysops-bench-") as home:
        env = {**os.environ, "SYSOPS_HOME": home}
        os.environ["SYSOPS_HOME"] = home
        try:
            subprocess.run([SYSOPS, "plugin", "up", str(ROOT / "examples" / "hello")], env=env, check=True)
            _processes(env, pairs)
            _in_process(calls)
        finally:
            subprocess.run([SYSOPS, "plugin", "down", "hello", "--purge"], env=env, check=False)
            subprocess.run([SYSOPS, "host", "stop"], env=env, check=False)
    return 0


def _container(env: dict[str, str]) -> str:
    from sysops.settings import Settings

    installation = Settings().installation_id
    names = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            "label=sysops.plugin=hello",
            "--filter",
            f"label=sysops.installation={installation}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(names) != 1:
        raise SystemExit(f"expected one hello container of installation {installation}, found {names}")
    return names[0]


def _processes(env: dict[str, str], pairs: int) -> None:
    container = _container(env)
    exec_pass = ["docker", "exec", container, PLUGIN_PYTHON, "-c", "pass"]
    print(f"\n(a) as processes, {pairs} interleaved pairs (goal: ratio <= 1.0):")
    with tempfile.TemporaryDirectory(prefix="sysops-bench-pyc-") as bytecode:
        compiled = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
        compiled["PYTHONPYCACHEPREFIX"] = bytecode
        _run_quietly([SYSOPS, "greet", "World"], compiled)  # compiles what the call imports, once
        cli, docker_exec = _paired(
            lambda: _run_quietly([SYSOPS, "greet", "World"], compiled),
            lambda: _run_quietly(exec_pass, env),
            pairs,
        )
        _report(
            "sysops greet World (bytecode cached)",
            cli,
            "docker exec CONTAINER python -c pass",
            docker_exec,
            goal=1.0,
        )
        startup, _ = _paired(lambda: _run_quietly([str(BIN / "python"), "-c", "pass"], compiled), lambda: None, pairs)
        print(f"  {'(floor: the venv python -c pass)':<44} median {_summary(startup)[0] * 1000:8.3f} ms")
    if env.get("PYTHONDONTWRITEBYTECODE"):
        uncompiled, docker_exec = _paired(
            lambda: _run_quietly([SYSOPS, "greet", "World"], env), lambda: _run_quietly(exec_pass, env), pairs
        )
        print("  with PYTHONDONTWRITEBYTECODE as set here (every module compiled on every run):")
        _report(
            "sysops greet World (no bytecode)", uncompiled, f"docker exec {container[:12]} python -c pass", docker_exec
        )


def _in_process(calls: int) -> None:
    import grpc
    from sysops.cli.host_call import HostCall
    from sysops.core import router
    from sysops.core.client_pool import ClientPool
    from sysops.settings import Settings
    from sysops.store import Store
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb
    from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc

    settings = Settings()
    store = Store(settings.store_path)
    route = store.route("greet")
    store.close()
    assert route is not None
    endpoint = route.endpoints[0]
    auth = (("authorization", f"Bearer {route.token_for(endpoint)}"),)  # every plugin call carries it
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.PluginServiceStub(channel)
    request = pb.InvokeRequest(command="greet", arguments_json=json.dumps({"name": "bench"}))
    kept = HostCall(settings)
    (shape,) = kept.routes("greet")

    def raw() -> None:
        for _event in stub.Invoke(request, metadata=auth):
            pass

    def through_host() -> None:
        with HostCall(settings) as call:
            call.invoke(shape, {"name": "bench"}, "text")

    def through_kept_connection() -> None:
        kept.invoke(shape, {"name": "bench"}, "text")

    pool = ClientPool()

    def routed_in_host() -> None:
        for _item in router.call(route, {"name": "bench"}, "text", lambda command: route, pool=pool):
            pass

    print(f"\n(b) in process, {calls} interleaved pairs on the hello plugin's socket (goal: ratio <= 1.05):")
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            per_call, raw_a = _paired(through_host, raw, calls)
            kept_samples, raw_b = _paired(through_kept_connection, raw, calls)
            routed_samples, raw_c = _paired(routed_in_host, raw, calls)
        assert printed.getvalue().startswith("Hello, bench!"), printed.getvalue()[:100]
    finally:
        kept.close()
        pool.close()
        channel.close()
    _report("call socket, a connection per call (as the CLI)", per_call, "raw gRPC Invoke", raw_a, goal=1.05)
    _report("call socket, one kept connection", kept_samples, "raw gRPC Invoke", raw_b, goal=1.05)
    print(f"\n(c) in process, the host's routing of a call (router + client pool), {calls} pairs (goal: <= 1.05):")
    _report("routed by the host's router", routed_samples, "raw gRPC Invoke", raw_c, goal=1.05)


if __name__ == "__main__":
    sys.exit(main())
