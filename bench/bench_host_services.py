"""A host service call against a raw gRPC call on the same socket, measured in the same run.

In one process, over a temporary SYSOPS_HOME: the host services (services/dispatch.py) behind the local
transport (services/transport.py: a listener on an instance's host.sock, the instance token checked, the
permission checked against the policy, JSON both ways), called through the SDK's client
(`sysops_sdk.services.StateClient.get` over `HostClient`: a kept channel, as a plugin has it), against the
standard gRPC health Check on a prebuilt stub to the same listener (the cheapest call that server answers:
the floor of a call on that socket). BENCH_CALLS interleaved pairs (default 2000) after a warm-up; prints
median, p95 and calls/s of each and the ratio of the medians (goal: <= 1.2x). Asserts nothing (figures vary
with the machine). measure(smoke) returns the figures to the runner (bench/run.py);
main() prints them. Removes what it made.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from figures import Figure
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sysops.services.dispatch import HostServices
from sysops.services.transport import HOST_SOCKET, InstanceListeners
from sysops.settings import Settings
from sysops.store import InstanceRecord, Store
from sysops_sdk._host_client import HostClient
from sysops_sdk.services import StateClient

TOKEN = "bench-instance-token"
PLUGIN = "bench"
GOAL = 1.2


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _report(label: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(f"  {label:<52} median {median * 1e6:8.1f} us  p95 {p95 * 1e6:8.1f} us  {1 / median:9.0f} calls/s")
    return median


def _samples(calls: int, warmup: int) -> tuple[list[float], list[float]]:
    """Seconds of each state.get through the SDK and of each raw health Check, interleaved."""
    with tempfile.TemporaryDirectory(prefix="sysops-bench-host-") as temporary:
        home = Path(temporary) / "home"
        settings = Settings(home=home)
        settings.ensure_home()
        (home / "policy.yaml").write_text(json.dumps({"plugins": {PLUGIN: {"grants": ["state.*"]}}}))
        store = Store(settings.store_path)
        store.save_plugin(PLUGIN, "/bench", "docker", {"name": PLUGIN, "permissions": ["state.read", "state.write"]})
        socket_dir = Path(temporary) / "instance"
        socket_dir.mkdir(mode=0o700)
        instance = InstanceRecord(
            id="bench1",
            plugin=PLUGIN,
            revision=1,
            version="1.0.0",
            handle="bench",
            image="bench",
            image_id="bench",
            endpoint=f"unix://{socket_dir}/plugin.sock",
            socket_dir=str(socket_dir),
            created=time.time(),
            active=True,
            token=TOKEN,
        )
        store.add_instance(instance)
        store.close()
        services = HostServices(settings, settings.store_path)
        listeners = InstanceListeners(services)
        listeners.attach(instance)
        endpoint = f"unix://{socket_dir / HOST_SOCKET}"
        host = HostClient(endpoint=endpoint, token=TOKEN)
        state = StateClient(host)
        state.set("key", {"value": 42})
        channel = grpc.insecure_channel(endpoint)
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest(service="")
        try:
            for _ in range(warmup):  # warm-up: connections, caches, the policy read
                state.get("key")
                check(request, timeout=5)
            service_samples: list[float] = []
            raw_samples: list[float] = []
            for _ in range(calls):
                service_samples.append(_timed(lambda: state.get("key")))
                raw_samples.append(_timed(lambda: check(request, timeout=5)))
        finally:
            channel.close()
            host.close()
            listeners.stop()
            services.close()
    return service_samples, raw_samples


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(int(len(ordered) * 0.95) - 1, 0)]


def measure(smoke: bool) -> list[Figure]:
    """Median and p95 of a host service call beside a raw gRPC call on the same socket (smoke: 50 pairs)."""
    calls = 50 if smoke else int(os.environ.get("BENCH_CALLS", "2000"))
    service, raw = _samples(calls, warmup=10 if smoke else 200)
    service_median, raw_median = statistics.median(service), statistics.median(raw)
    baseline_name = "raw gRPC health Check, same host.sock"
    return [
        Figure(
            metric="host service call (state.get) median",
            ours=service_median * 1e6,
            unit="us",
            baseline=raw_median * 1e6,
            baseline_name=baseline_name,
            goal=f"<= {GOAL}x baseline",
            passed=None if smoke else service_median / raw_median <= GOAL,
            detail={"calls": calls},
        ),
        Figure(
            metric="host service call (state.get) p95",
            ours=_p95(service) * 1e6,
            unit="us",
            baseline=_p95(raw) * 1e6,
            baseline_name=baseline_name,
            detail={"calls": calls},
        ),
    ]


def main() -> int:
    calls = int(os.environ.get("BENCH_CALLS", "2000"))
    service_samples, raw_samples = _samples(calls, warmup=200)
    print(f"host service call vs raw gRPC on the same host.sock, {calls} interleaved pairs (goal: <= {GOAL}x):")
    service_median = _report("state.get via the SDK (token, permission, state)", service_samples)
    raw_median = _report("raw gRPC health Check on the same listener", raw_samples)
    ratio = service_median / raw_median
    print(f"  ratio: median {ratio:5.2f}x ({'meets' if ratio <= GOAL else 'misses'} the goal of {GOAL}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
