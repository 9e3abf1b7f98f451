"""Cold start: a cached image to its first answered command, and `plugin up` of a new plugin, with breakdowns.

In a private SYSOPS_HOME, `sysops plugin up` of a new, small plugin (no third-party requirements; the base
image is cached, nothing else is): its wall time and breakdown from its progress lines as they arrive (host
and code checks, image build and signature, start, ready, switch). Goal (issue 15 item 2): <= 5 s.

Then, from that plugin's image (cached now), instances started as a roll starts them (the Docker driver:
hardened, limited, socket directory and data filesystem) until the first command answers: breakdown start
(the engine creates and starts the container), serving (its socket answers health SERVING), answer (the first
Invoke returns). Goal: <= 0.3 s. Baseline in the same run: `docker run` of the same image with
`python -c pass` (create, start, wait for its exit): the engine's and the interpreter's floor.
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
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sysops.runtime.docker.driver import DockerDriver

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure

SYSOPS = Path(sys.executable).parent / "sysops"
PLUGIN = "coldstart"
_MARKS = (
    ("checking the code", "host and checks"),
    ("building image", "build"),
    ("starting ", "start"),
    ("waiting for ", "ready"),
    ("switching ", "switch"),
)
_PLUGIN_YAML = f"""name: {PLUGIN}
version: 1.0.0
description: The cold start benchmark's plugin
entrypoint: coldstart_plugin.plugin:ColdStart
types: [command]
compatibility: {{sysops: ">=0.1,<1.0", python: ">=3.11"}}
limits: {{cpu_percent: 50, memory_mb: 128, pids: 64}}
network: none
"""
_PLUGIN_CODE = '''"""One command to answer."""

from sysops_sdk import Plugin, plugin_command


class ColdStart(Plugin):
    name = "coldstart"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("coldstart-ping")
    def ping(self) -> str:
        """Answer."""
        return "pong"
'''


def _write_plugin(directory: Path) -> None:
    (directory / "coldstart_plugin").mkdir(parents=True)
    (directory / "plugin.yaml").write_text(_PLUGIN_YAML)
    (directory / "coldstart_plugin" / "__init__.py").write_text("")
    (directory / "coldstart_plugin" / "plugin.py").write_text(_PLUGIN_CODE)


def plugin_up(plugin_dir: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """`sysops plugin up` of the new plugin: wall seconds and seconds per phase (from its progress lines)."""
    started = time.perf_counter()
    began: dict[str, float] = {}
    with subprocess.Popen(
        [SYSOPS, "plugin", "up", str(plugin_dir)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:
            message = line.removeprefix("• ")
            for prefix, phase in _MARKS:
                if message.startswith(prefix) and phase not in began:
                    began[phase] = time.perf_counter()
        code = process.wait()
    ended = time.perf_counter()
    if code != 0:
        raise RuntimeError(f"plugin up failed with exit code {code}")
    order = [("cli", started), *((phase, began[phase]) for _, phase in _MARKS if phase in began)]
    phases = {phase: (order[i + 1][1] if i + 1 < len(order) else ended) - at for i, (phase, at) in enumerate(order)}
    return ended - started, phases


def cold_start(driver: DockerDriver, image_id: str, plugin_dir: Path, data: tuple[Path, str]) -> dict[str, float]:
    """Start an instance of `image_id` as a roll does and call it once; seconds per phase and in all. `driver`
    is kept across starts, as the host's is; `data` is the plugin's data filesystem (directory, volume), made by
    the first start and kept, as a plugin's is (each start mounts it again: the last instance unmounted it)."""
    from sysops.core.client import InvocationResult, PluginClient
    from sysops.core.manifest import load_manifest
    from sysops.core.rollout import limits_for
    from sysops.runtime.base import InstanceSpec

    run_dir = Path(tempfile.mkdtemp(prefix="sysops-bench-cold-", dir="/tmp"))
    os.chmod(run_dir, 0o777)
    spec = InstanceSpec(
        name=f"sysops-bench-{uuid.uuid4().hex[:8]}",
        image=image_id,
        labels={"sysops.bench": "1"},
        environment={"SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock"},
        socket_dir=run_dir,
        data_volume=data[1],
        limits=limits_for(load_manifest(plugin_dir)),
        data_dir=data[0],
    )
    socket = run_dir / "plugin.sock"
    started = time.perf_counter()
    status = driver.start(spec)
    created = time.perf_counter()
    try:
        with PluginClient(f"unix://{socket}") as client:
            while not (socket.exists() and client.healthy(timeout=0.5)):
                time.sleep(0.002)
            serving = time.perf_counter()
            result = list(client.invoke("coldstart-ping", {}))[-1]
            answered = time.perf_counter()
        if not isinstance(result, InvocationResult) or result.text != "pong":
            raise RuntimeError(f"unexpected answer {result!r}")
        return {
            "start": created - started,
            "serving": serving - created,
            "answer": answered - serving,
            "total": answered - started,
        }
    finally:
        driver.remove(status.handle)
        shutil.rmtree(run_dir, ignore_errors=True)


def docker_run_floor(image_id: str) -> float:
    """`docker run IMAGE python -c pass` (create, start, wait for the exit), through the engine's API."""
    import docker

    client = docker.from_env()
    started = time.perf_counter()
    container = client.containers.run(
        image_id, entrypoint=["python", "-c", "pass"], detach=True, network_mode="none", labels={"sysops.bench": "1"}
    )
    container.wait()
    elapsed = time.perf_counter() - started
    container.remove(force=True)
    return elapsed


def measure(smoke: bool) -> list[Figure]:
    """The cold start figures (see the module docstring)."""
    runs = 2 if smoke else int(os.environ.get("BENCH_COLD_RUNS", "10"))
    with tempfile.TemporaryDirectory(prefix="sysops-bench-cold-") as scratch:
        home, plugin_dir = Path(scratch) / "home", Path(scratch) / PLUGIN
        _write_plugin(plugin_dir)
        env = {**os.environ, "SYSOPS_HOME": str(home)}
        data: tuple[Path, str] | None = None
        try:
            up_seconds, up_phases = plugin_up(plugin_dir, env)
            from sysops.settings import Settings
            from sysops.store import Store

            store = Store(Settings(home=home).store_path)
            image_id = store.active_instances(PLUGIN)[0].image_id
            store.close()
            from sysops.runtime.docker.driver import DockerDriver

            driver = DockerDriver()  # kept across the starts, as the host's is
            driver.ping()
            data = (Path(scratch) / "data", f"sysops-bench-{uuid.uuid4().hex[:8]}")
            cold_start(driver, image_id, plugin_dir, data)  # makes the data filesystem, as a first start does
            samples = [cold_start(driver, image_id, plugin_dir, data) for _ in range(runs)]
            floors = [docker_run_floor(image_id) for _ in range(runs)]
        finally:
            if data is not None:  # set once the driver is
                driver.remove_volume(data[1])
            subprocess.run([SYSOPS, "plugin", "down", PLUGIN, "--purge"], env=env, check=False, capture_output=True)
            subprocess.run([SYSOPS, "host", "stop"], env=env, check=False, capture_output=True)
    totals = [sample["total"] for sample in samples]
    cold = statistics.median(totals)
    breakdown = {phase: statistics.median(s[phase] for s in samples) for phase in ("start", "serving", "answer")}
    judged = not smoke
    return [
        Figure(
            "cold start: cached image -> first answered command, median",
            cold,
            "s",
            statistics.median(floors),
            "docker run IMAGE python -c pass",
            "<= 0.3 s",
            (cold <= 0.3) if judged else None,
            series=totals,
            detail={"breakdown": breakdown},
        ),
        Figure(
            "plugin up of a new plugin (base image cached)",
            up_seconds,
            "s",
            goal="<= 5 s",
            passed=(up_seconds <= 5) if judged else None,
            detail={"breakdown": up_phases},
        ),
    ]


def main() -> int:
    for figure in measure(smoke="--smoke" in sys.argv):
        ratio = f"  ratio {figure.ratio:5.2f}" if figure.ratio is not None else ""
        goal = f"  goal {figure.goal}: {figure.passed}" if figure.goal else ""
        print(f"{figure.metric:60} {figure.ours:8.3f} {figure.unit}{ratio}{goal}")
        shown = ", ".join(f"{phase} {seconds:.3f}s" for phase, seconds in figure.detail.get("breakdown", {}).items())
        print(f"  breakdown: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
