"""Scale run of the server's Plugin controller: does the reconcile time per change grow with the number of plugins?

In the test cluster's real API server (its own namespace, deleted at the end), it creates Plugin objects, and
runs the server's controller (server/plugin_controller.py: the Plugin informer, the work queue, real
Orchestrators and a real store, the Plugin objects read and written through the API) with the fake driver
(runtime/fake.py) for pods: the plugins' "pods" are threads, so 1,000 plugins fit on the test node.

One plugin, `probe`, really runs (two revisions, rolled by the fake driver); the others (`filler-NNNN`) are
Plugin objects with a spec, a status, and a store record with a serving instance, as a served plugin has. At
10, 100 and 1,000 objects, it applies `CHANGES` changes to probe's spec (another revision, as `kubectl apply`
would) and measures, for each, the controller's handling time of that plugin (the roll included, and the
handling of its own status writes that follow), and the time from the apply to the new revision serving. It
prints the medians and their ratio to the 10-object figure. Bounded: every wait has a timeout, and the
namespace is deleted whatever happens.

Run: `eval "$(../shared/k8s/up.sh)"; .venv/bin/python bench/bench_k8s_scale.py` (about 2-4 minutes). measure(smoke)
returns the figures to the runner (bench/run.py; smoke: 2 and 5 objects, 2 changes each; [] without KUBECONFIG).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from figures import Figure
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.runtime.fake import FakeDriver
from sysops.runtime.kubernetes.plugin_resource import PluginApi, PluginResourceMirror, empty_plugin, spec_of
from sysops.server.plugin_controller import start_controller
from sysops.settings import Settings
from sysops.store import InstanceRecord, RevisionRecord, Store
from sysops_sdk import Plugin, plugin_command

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10, 100, 1000)
CHANGES = 15
CREATE_THREADS = 16
TIMEOUT = 120.0


class ProbeV1(Plugin):
    name = "probe"
    version = "1.0.0"
    description = "the bench's probe"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("probe-version")
    def which(self) -> str:
        return self.version


class ProbeV2(ProbeV1):
    version = "2.0.0"


def manifest(name: str, version: str) -> dict[str, Any]:
    data = {"name": name, "version": version, "entrypoint": "x:Y", "limits": {"cpu_percent": 10, "memory_mb": 64}}
    return parse_manifest(data, "bench").model_dump(mode="json")


def kubectl(*args: str) -> str:
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=400, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def wait(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


class Bench:
    def __init__(self, namespace: str, home: Path) -> None:
        self.namespace = namespace
        self.settings = Settings(home=home, ready_timeout=10.0, drain_timeout=1.0)
        self.driver = FakeDriver()
        self.driver.add_image("probe-v1", ProbeV1)
        self.driver.add_image("probe-v2", ProbeV2)
        self.api = PluginApi(namespace, installation_id=self.settings.installation_id)
        self.mirror = PluginResourceMirror(namespace, api=self.api)
        self.store = Store(self.settings.store_path)
        self.fillers = 0
        self.handled: list[tuple[str, float, float]] = []

    def orchestrator(self) -> Orchestrator:
        return Orchestrator(self.settings, self.driver, mirror=self.mirror)

    def serving(self, name: str = "probe") -> int:
        active = self.store.active_instances(name)
        return active[0].revision if active else 0

    # plugins
    def up_probe(self) -> None:
        orchestrator = self.orchestrator()
        try:
            for version, image in (("1.0.0", "probe-v1"), ("2.0.0", "probe-v2")):
                parsed = parse_manifest(manifest("probe", version), "bench")
                orchestrator.up_image(parsed, image, f"fp-{image}", "/bench/probe")
        finally:
            orchestrator.close()

    def add_fillers(self, count: int) -> None:
        names = [f"filler-{n:04d}" for n in range(self.fillers, self.fillers + count)]
        for name in names:  # the store's record of a served plugin (no pod: nothing looks at it but a full pass)
            data = manifest(name, "1.0.0")
            self.store.save_plugin(name, "/bench/filler", "kubernetes", data)
            self.store.add_revision(RevisionRecord(name, 1, "1.0.0", "filler", "filler", "fp", data, time.time()))
            record = InstanceRecord(name, name, 1, "1.0.0", f"gone-{name}", "filler", "filler", "unix:///x", "/x", 0)
            self.store.add_instance(record)
            self.store.switch(name, add=[record], remove=[], routes={})

        def create(name: str) -> None:
            revision = {"revision": 1, "version": "1.0.0", "image": "filler", "image_id": "filler"}
            spec = spec_of(
                "/bench/filler", manifest(name, "1.0.0"), [{**revision, "manifest": manifest(name, "1.0.0")}]
            )
            created = self.api.create(empty_plugin(name, spec))
            self.api.patch_status(name, {"observedGeneration": created["metadata"]["generation"], "phase": "Active"})

        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, names))
        self.fillers += count

    # measuring
    def on_handled(self, name: str, seconds: float) -> None:
        self.handled.append((name, seconds, time.monotonic()))

    def change(self) -> tuple[float, float]:
        """Apply another revision of probe; return (its handling time, apply-to-serving latency)."""
        target = 1 if self.serving() == 2 else 2
        start = time.monotonic()
        self.api.custom.patch_namespaced_custom_object(
            "sysops.dev", "v1alpha1", self.namespace, "plugins", "probe", {"spec": {"revision": target}}
        )
        wait(lambda: self.serving() == target, f"probe revision {target} to serve")
        served = time.monotonic() - start
        time.sleep(0.5)  # the handling of its own spec and status writes, which follows
        handling = sum(seconds for name, seconds, end in self.handled if name == "probe" and end > start)
        return handling, served


def _run(sizes: tuple[int, ...], changes: int) -> tuple[dict[int, tuple[float, float]], float]:
    """(handling, apply-to-serving) medians per object count, and one full reconcile pass over the largest."""
    kubectl("apply", "-f", str(ROOT / "charts" / "sysops" / "crds"))
    namespace = f"sysops-bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    stop = threading.Event()
    try:
        with tempfile.TemporaryDirectory() as home:
            bench = Bench(namespace, Path(home))
            bench.up_probe()
            controller, informers = start_controller(
                bench.orchestrator, namespace, bench.settings.installation_id, stop, watch_pods=False
            )
            controller.on_handled = bench.on_handled
            wait(lambda: all(i.synced.is_set() for i in informers), "the informer's first list")
            figures: dict[int, tuple[float, float]] = {}
            for size in sizes:
                started = time.monotonic()
                bench.add_fillers(size - 1 - bench.fillers)
                wait(lambda n=size: len(informers[0].cache) == n, f"{size} Plugin objects in the informer", 600)  # type: ignore[misc]
                wait(lambda: not controller._pending and not controller._busy, "the controller to settle", 600)
                print(f"{size} Plugin objects in namespace {namespace} ({time.monotonic() - started:.1f}s to create)")
                samples = [bench.change() for _ in range(changes)]
                figures[size] = (
                    statistics.median(s[0] for s in samples),
                    statistics.median(s[1] for s in samples),
                )
                print(
                    f"  per change: controller handling {figures[size][0] * 1000:.0f} ms, "
                    f"apply to serving {figures[size][1] * 1000:.0f} ms (median of {changes})"
                )
            orchestrator = bench.orchestrator()
            try:
                started = time.monotonic()
                orchestrator.reconcile()  # what polling did every 5 s: one pass over every plugin
                full = time.monotonic() - started
            finally:
                orchestrator.close()
            stop.set()
            for informer in informers:
                informer.close()
            for handle in list(bench.driver.instances):
                bench.driver.remove(handle)
            bench.store.close()
            return figures, full
    finally:
        stop.set()
        kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=300s")


def measure(smoke: bool) -> list[Figure]:
    """Handling and apply-to-serving per change at each object count, beside the smallest count (smoke: 2, 5)."""
    if not os.environ.get("KUBECONFIG") or not shutil.which("kubectl"):
        print('bench_k8s_scale: needs a cluster: set KUBECONFIG (eval "$(../shared/k8s/up.sh)"); not run')
        return []
    sizes, changes = ((2, 5), 2) if smoke else (SIZES, CHANGES)
    figures, full = _run(sizes, changes)
    base_handling, base_serving = figures[sizes[0]]
    baseline = f"the same at {sizes[0]} objects"
    result: list[Figure] = []
    for size, (handling, served) in figures.items():
        result.append(
            Figure(
                f"Plugin controller: handling per change, {size} objects",
                handling * 1000,
                "ms",
                base_handling * 1000,
                baseline,
                detail={"changes": changes},
            )
        )
        result.append(
            Figure(
                f"Plugin controller: apply to serving, {size} objects",
                served * 1000,
                "ms",
                base_serving * 1000,
                baseline,
                detail={"changes": changes},
            )
        )
    result.append(Figure(f"one full reconcile pass (the old 5 s poll) over {sizes[-1]} plugins", full * 1000, "ms"))
    return result  # fmt: skip


def main() -> None:
    figures = measure(smoke=False)
    print("\nmetric                                                     ours        ratio to the smallest")
    for figure in figures:
        ratio = f"{figure.ratio:5.2f}" if figure.ratio is not None else ""
        print(f"{figure.metric:<58} {figure.ours:8.0f} {figure.unit}  {ratio}")
    print(json.dumps([figure.as_json() for figure in figures]))


if __name__ == "__main__":
    main()
