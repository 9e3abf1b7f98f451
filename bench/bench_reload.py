"""Hot reload: time from saving a file to the new version answering, and time to decide a rollback.

Runs `sysops plugin up examples/hello --watch` (a copy, in a private SYSOPS_HOME) and, in the same run,
a baseline: a `docker build` of the same context that hits the layer cache plus a `docker run` of the
image until its gRPC health answers SERVING. Prints each figure and the ratio to the baseline.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wait(condition: Callable[[], bool], timeout: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if condition():
            return time.perf_counter() - started
        time.sleep(0.01)
    raise TimeoutError("condition not met")


def _greet(env: dict[str, str]) -> str:
    from sysops.core.client import InvocationResult, PluginClient
    from sysops.settings import Settings
    from sysops.store import Store

    store = Store(Settings(home=Path(env["SYSOPS_HOME"])).store_path)
    try:
        route = store.route("greet")
        if route is None or not route.endpoints:
            return ""
        endpoint = route.endpoint
        with PluginClient(endpoint, token=route.token_for(endpoint)) as client:
            for item in client.invoke("greet", {"name": "x"}):
                if isinstance(item, InvocationResult):
                    return item.text
    except Exception:
        return ""
    finally:
        store.close()
    return ""


def _set_greeting(plugin_dir: Path, text: str) -> None:
    source = plugin_dir / "hello_plugin" / "plugin.py"
    code = source.read_text()
    start = code.index('text = " ".join([') + len('text = " ".join([')
    end = code.index("] * times)", start)
    source.write_text(code[:start] + f'f"{text}, {{name}}!"' + code[end:])


def baseline(plugin_dir: Path, home: Path) -> float:
    """`docker build` (cache hit) + `docker run` until gRPC health is SERVING."""
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
    context = make_context(plugin_dir, manifest, base, settings.cache_dir)
    run_dir = Path(tempfile.mkdtemp(prefix="sysops-bench-run-", dir="/tmp"))
    os.chmod(run_dir, 0o777)
    started = time.perf_counter()
    built = driver.build_image(BuildRequest(context.tar, "sysops-bench/baseline:latest"), lambda _: None)
    spec = InstanceSpec(
        name=f"sysops-bench-{uuid.uuid4().hex[:8]}",
        image=built.id,
        labels={"sysops.bench": "1"},
        environment={"SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock"},
        socket_dir=run_dir,
        data_volume=f"sysops-bench-{uuid.uuid4().hex[:8]}",
        limits=limits_for(manifest),
    )
    status = driver.start(spec)
    with PluginClient(f"unix://{run_dir}/plugin.sock") as client:
        _wait(lambda: (run_dir / "plugin.sock").exists() and client.healthy(timeout=0.5))
    elapsed = time.perf_counter() - started
    driver.remove(status.handle)
    driver.remove_volume(spec.data_volume)
    shutil.rmtree(run_dir, ignore_errors=True)
    return elapsed


def main() -> int:
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    with tempfile.TemporaryDirectory(prefix="sysops-bench-") as scratch:
        home = Path(scratch) / "home"
        plugin_dir = Path(scratch) / "hello"
        shutil.copytree(ROOT / "examples" / "hello", plugin_dir)
        env = {**os.environ, "SYSOPS_HOME": str(home)}
        log = Path(scratch) / "watch.log"
        with open(log, "w") as sink:
            watch = subprocess.Popen(
                [BIN / "sysops", "plugin", "up", str(plugin_dir), "--watch"], env=env, stderr=sink, stdout=sink
            )
        try:
            _wait(lambda: "watching" in log.read_text(), 180)
            reloads, baselines, rollbacks = [], [], []
            for round_number in range(rounds):
                baselines.append(baseline(plugin_dir, home))
                text = f"Round {round_number}"
                saved = time.perf_counter()
                _set_greeting(plugin_dir, text)
                _wait(lambda text=text: _greet(env).startswith(text))
                reloads.append(time.perf_counter() - saved)
            source = plugin_dir / "hello_plugin" / "plugin.py"
            good = source.read_text()
            for _ in range(min(3, rounds)):
                failures = log.read_text().count("reload failed")
                saved = time.perf_counter()
                source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('broken')"))
                _wait(lambda failures=failures: log.read_text().count("reload failed") > failures)
                rollbacks.append(time.perf_counter() - saved)
                source.write_text(good)
                _wait(lambda: "up to date" in log.read_text().rsplit("reload failed", 1)[-1])
        finally:
            watch.terminate()
            watch.wait(timeout=30)
            subprocess.run([BIN / "sysops", "plugin", "down", "hello", "--purge"], env=env, check=False)
            subprocess.run(["docker", "rmi", "-f", "sysops-bench/baseline:latest"], check=False, capture_output=True)
    base = statistics.median(baselines)
    reload = statistics.median(reloads)
    print(f"{rounds} rounds, medians:")
    print(f"  baseline: docker build (cache hit) + docker run to SERVING  {base:6.2f} s")
    print(f"  save -> new version answering (code-only change)       {reload:6.2f} s  ratio {reload / base:5.2f}")
    decided = statistics.median(rollbacks)
    print(f"  save -> rollback decided (initialize() raises)          {decided:6.2f} s  ratio {decided / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
