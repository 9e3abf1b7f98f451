"""Invocation latency: sysops routing vs a raw gRPC call, and the routed CLI vs `python -c "import grpc"`.

Brings up examples/hello in a private SYSOPS_HOME, then measures in one run, on the same socket:
  1. raw:    a sequential Invoke on a prebuilt stub (the baseline);
  2. routed: the same call through sysops' route lookup (store) and PluginClient;
and, as processes, `sysops greet World` against `python -c "import grpc"`. Prints p50, p99, calls/s
and the ratios. Figures vary with the machine; the ratios are what to compare.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _measure(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(50, count)):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _report(label: str, samples: list[float], baseline: list[float] | None = None) -> None:
    p50, p99 = _percentiles(samples)
    rate = len(samples) / sum(samples)
    line = f"{label:<28} p50 {p50 * 1000:8.3f} ms  p99 {p99 * 1000:8.3f} ms  {rate:9.0f} calls/s"
    if baseline is not None:
        base50, base99 = _percentiles(baseline)
        line += f"  ratio p50 {p50 / base50:5.2f}  p99 {p99 / base99:5.2f}"
    print(line, flush=True)


def main() -> int:
    count = int(os.environ.get("BENCH_CALLS", "2000"))
    processes = int(os.environ.get("BENCH_PROCESSES", "15"))
    with tempfile.TemporaryDirectory(prefix="sysops-bench-") as home:
        env = {**os.environ, "SYSOPS_HOME": home}
        os.environ["SYSOPS_HOME"] = home
        subprocess.run([BIN / "sysops", "plugin", "up", str(ROOT / "examples" / "hello")], env=env, check=True)
        try:
            return _run(env, count, processes)
        finally:
            subprocess.run([BIN / "sysops", "plugin", "down", "hello", "--purge"], env=env, check=False)


def _run(env: dict[str, str], count: int, processes: int) -> int:
    import grpc
    from sysops.core.client import PluginClient
    from sysops.settings import Settings
    from sysops.store import Store
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb
    from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc

    store = Store(Settings().store_path)
    route = store.route("greet")
    assert route is not None
    arguments = json.dumps({"name": "bench"})

    endpoint = route.endpoints[0]
    auth = (("authorization", f"Bearer {route.token_for(endpoint)}"),)  # every plugin call carries it
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.PluginServiceStub(channel)

    def raw() -> None:
        for _event in stub.Invoke(pb.InvokeRequest(command="greet", arguments_json=arguments), metadata=auth):
            pass

    clients: dict[str, PluginClient] = {}

    def routed() -> None:
        current = store.route("greet")
        assert current is not None
        client = clients.get(current.endpoint) or clients.setdefault(
            current.endpoint, PluginClient(current.endpoint, current.plugin, current.token_for(current.endpoint))
        )
        for _item in client.invoke("greet", {"name": "bench"}):
            pass

    print(f"in-process, {count} sequential calls to the hello container over its Unix socket:")
    baseline = _measure(raw, count)
    through_sysops = _measure(routed, count)
    _report("raw gRPC Invoke", baseline)
    _report("routed through sysops", through_sysops, baseline)

    print(f"\nas processes, {processes} runs each:")
    import_grpc = _measure(
        lambda: subprocess.run([sys.executable, "-c", "import grpc"], env=env, check=True), processes
    )
    cli = _measure(
        lambda: subprocess.run([BIN / "sysops", "greet", "World"], env=env, check=True, capture_output=True),
        processes,
    )
    _report('python -c "import grpc"', import_grpc)
    _report("sysops greet World", cli, import_grpc)
    channel.close()
    for client in clients.values():
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
