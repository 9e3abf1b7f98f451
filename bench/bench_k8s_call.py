"""Routed-call latency on the Kubernetes test cluster: a call through the chart's `sysops serve` against a direct
gRPC call to the plugin pod, measured in the same run.

Builds the orchestrator image (scripts/build-orchestrator-image.sh), installs the chart in a namespace of its own
(`sysops-bench-<hex>`, image.pullPolicy=Never), and brings up examples/hello (renamed `k8s-bench`, its own
cpu_percent 50 unless BENCH_CPU_PERCENT says otherwise, 128 MB, a lenient liveness probe) with the CLI through
the Service. Below 50 the figures measure CFS throttling more than routing: at 20 the direct call's p99 was
~150 ms and the kubelet's exec probes (a Python start inside the same quota) made the pod unready. The test node
has 2 CPUs shared by everyone: run it once, not in a loop. Then, paired and interleaved so both sides see the
same load (bench_invoke's pairing, after a few warm-up calls):
  (a) in process, BENCH_CALLS pairs (default 500): the server's control API `Invoke("greet")` through the
      Service's ClusterIP on one kept TLS channel (what the CLI's RemoteClient sends; the server forwards the
      call to a ready pod over its pooled channel) against the plugin's own `Invoke` on the pod's IP:50051 with
      the pod's token (read from its Secret `<pod>-token`, as the server derives it), on one kept channel;
  (c) in process, BENCH_CALLS pairs: the same direct call on a new channel per call (TCP connect and HTTP/2
      setup to the pod each time) against the kept channel: what the server pays per routed call when it does
      not keep its connection to the pod (server/service.py's Invoke calls the router without a ClientPool);
  (b) as processes, BENCH_PAIRS pairs (default 20): `sysops greet World` through the Service (CLI start, TLS
      handshake, routed call) against the same direct in-process call; the venv's `python -c pass` beside them.
Prints p50 and p99 of each and their ratios, and asserts nothing (figures vary with the machine and its load).
Removes what it made: the plugin, the images the CLI built for it, the release and the namespace.
Needs KUBECONFIG (`eval "$(../shared/k8s/up.sh)"`) and helm/kubectl (scripts/bootstrap.sh puts them in .venv/bin).
measure(smoke) returns the figures to the runner (bench/run.py; [] without a cluster; a smoke run only with
BENCH_K8S_SMOKE=1, as the chart install takes minutes: then 20 pairs, 3 CLI pairs).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_invoke import _paired  # the same interleaving as the Docker figures (run as bench/...py)
from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYSOPS = str(BIN / "sysops")
PLUGIN = "k8s-bench"
RELEASE = "sysops"
#: The port plugin pods serve on (runtime/kubernetes/driver.py).
PLUGIN_PORT = 50051


def _percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99, in seconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _report(label: str, samples: list[float], baseline_label: str, baseline: list[float]) -> list[Figure]:
    """Print p50 and p99 of both sides and return them as figures (ms)."""
    p50, p99 = _percentiles(samples)
    base_p50, base_p99 = _percentiles(baseline)
    print(f"  {label:<52} p50 {p50 * 1000:8.3f} ms  p99 {p99 * 1000:8.3f} ms")
    print(f"  {baseline_label:<52} p50 {base_p50 * 1000:8.3f} ms  p99 {base_p99 * 1000:8.3f} ms")
    print(f"  ratio: p50 {p50 / base_p50:5.2f}x  p99 {p99 / base_p99:5.2f}x", flush=True)
    detail = {"samples": len(samples)}
    return [
        Figure(f"k8s: {label}, p50", p50 * 1000, "ms", base_p50 * 1000, baseline_label, detail=detail),
        Figure(f"k8s: {label}, p99", p99 * 1000, "ms", base_p99 * 1000, baseline_label, detail=detail),
    ]


def _kubectl(*args: str) -> str:
    return subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True, timeout=120).stdout


@dataclass
class Installed:
    """The chart's server in `namespace`: how the CLI and a client in this process reach it."""

    namespace: str
    address: str
    token: str
    ca: str
    server_name: str

    def cli_env(self, home: Path) -> dict[str, str]:
        tls = {"SYSOPS_SERVER_CA": self.ca, "SYSOPS_SERVER_NAME": self.server_name} if self.ca else {}
        insecure = {} if self.ca else {"SYSOPS_INSECURE": "1"}
        return {
            **os.environ, "SYSOPS_HOME": str(home), "SYSOPS_SERVER": self.address, "SYSOPS_TOKEN": self.token,
            **tls, **insecure,
        }  # fmt: skip


def _secret(namespace: str, name: str, key: str) -> bytes | None:
    found = subprocess.run(
        ["kubectl", "-n", namespace, "get", "secret", name, "-o", "json"], capture_output=True, text=True, timeout=60
    )
    return base64.b64decode(json.loads(found.stdout)["data"][key]) if found.returncode == 0 else None


@contextlib.contextmanager
def _installed_chart(workdir: Path) -> Iterator[Installed]:
    """The chart installed in a namespace of its own, removed with everything in it afterwards."""
    subprocess.run([str(ROOT / "scripts" / "build-orchestrator-image.sh")], check=True, timeout=900)
    namespace = f"sysops-bench-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(
            ["helm", "install", RELEASE, str(ROOT / "charts" / "sysops"), "-n", namespace, "--create-namespace",
             "--wait", "--timeout", "180s", "--set", "image.pullPolicy=Never"],
            check=True, timeout=300, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        service = json.loads(_kubectl("-n", namespace, "get", "service", RELEASE, "-o", "json"))
        [port] = [port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc"]
        token = _secret(namespace, f"{RELEASE}-auth", "token")
        assert token is not None, "the chart made no auth Secret"
        ca = _secret(namespace, f"{RELEASE}-tls", "ca.crt")
        ca_file = workdir / "ca.crt"
        if ca is not None:
            ca_file.write_bytes(ca)
        yield Installed(
            namespace,
            f"{service['spec']['clusterIP']}:{port}",
            token.decode(),
            str(ca_file) if ca is not None else "",
            f"{RELEASE}.{namespace}.svc",
        )
    finally:
        subprocess.run(["helm", "uninstall", RELEASE, "-n", namespace, "--wait"], check=False, timeout=180)
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace, "--wait=true", "--timeout=100s"], check=False, timeout=150
        )


def _plugin_dir(workdir: Path) -> Path:
    """examples/hello as `k8s-bench`, with small limits."""
    directory = workdir / PLUGIN
    shutil.copytree(ROOT / "examples" / "hello", directory, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = directory / "plugin.yaml"
    cpu = int(os.environ.get("BENCH_CPU_PERCENT", "50"))
    text = re.sub(r"(?m)^name: hello$", f"name: {PLUGIN}", manifest.read_text())
    small = f"limits: {{cpu_percent: {cpu}, memory_mb: 128}}\nliveness: {{interval_s: 10, timeout_s: 15, failures: 6}}"
    manifest.write_text(re.sub(r"(?m)^limits: .*$", small, text))
    return directory


def _built_images() -> set[str]:
    listed = subprocess.run(
        ["docker", "images", "-q", "--no-trunc", "--filter", f"label=sysops.plugin={PLUGIN}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return set(listed.stdout.split())


def _plugin_pod(namespace: str) -> tuple[str, str]:
    """Name and IP of the plugin's ready pod (waited for up to 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        pods = json.loads(_kubectl("-n", namespace, "get", "pods", "-l", f"sysops.plugin={PLUGIN}", "-o", "json"))
        ready = [
            pod for pod in pods["items"]
            if pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        ]  # fmt: skip
        if len(ready) == 1:
            return ready[0]["metadata"]["name"], ready[0]["status"]["podIP"]
        if time.monotonic() > deadline:
            listed = _kubectl("-n", namespace, "get", "pods,plugins", "-o", "wide")
            raise SystemExit(f"expected one ready {PLUGIN} pod, found {len(ready)}:\n{listed}")
        time.sleep(1)


def _restarts(namespace: str) -> str:
    """Each pod of the namespace with its containers' restart count and the last termination's reason."""
    pods = json.loads(_kubectl("-n", namespace, "get", "pods", "-o", "json"))["items"]
    return ", ".join(
        f"{pod['metadata']['name']} {status['restartCount']}"
        + (f" ({status['lastState']['terminated']['reason']})" if "terminated" in status.get("lastState", {}) else "")
        for pod in pods
        for status in pod["status"].get("containerStatuses", [])
    )


def measure(smoke: bool) -> list[Figure]:
    """The routed and direct call figures on the test cluster; [] without one (smoke: 20 pairs, 3 CLI pairs)."""
    if not os.environ.get("KUBECONFIG") or not shutil.which("helm") or not shutil.which("kubectl"):
        print('bench_k8s_call: needs a cluster: set KUBECONFIG (eval "$(../shared/k8s/up.sh)"); not run')
        return []
    if smoke and not os.environ.get("BENCH_K8S_SMOKE"):
        # Installing the chart and a plugin pod takes minutes (7 on a loaded node), not the seconds of a smoke run.
        print("bench_k8s_call: smoke run skipped (a chart install takes minutes); BENCH_K8S_SMOKE=1 runs it")
        return []
    calls = 20 if smoke else int(os.environ.get("BENCH_CALLS", "500"))
    pairs = 3 if smoke else int(os.environ.get("BENCH_PAIRS", "20"))
    images_before = _built_images()
    with tempfile.TemporaryDirectory(prefix="sysops-bench-k8s-") as work:
        workdir = Path(work)
        try:
            with _installed_chart(workdir) as installed:
                env = installed.cli_env(workdir / "home")
                try:
                    subprocess.run(
                        [SYSOPS, "plugin", "up", str(_plugin_dir(workdir)), "--runtime", "kubernetes"],
                        env=env, check=True, timeout=600,
                    )  # fmt: skip
                    return _measure(installed, env, calls, pairs)
                finally:
                    subprocess.run([SYSOPS, "plugin", "down", PLUGIN], env=env, check=False, timeout=300)
        finally:
            for image in _built_images() - images_before:
                subprocess.run(["docker", "rmi", "-f", image], check=False, stdout=subprocess.DEVNULL)


def main() -> int:
    return 0 if measure(smoke=False) else 2


def _measure(installed: Installed, env: dict[str, str], calls: int, pairs: int) -> list[Figure]:
    import grpc
    from sysops.cli.contexts import ServerContext
    from sysops.cli.remote import open_channel
    from sysops.core.client import PROTOCOL_METADATA
    from sysops.server.protocol.v1 import control_pb2 as control
    from sysops.server.protocol.v1 import control_pb2_grpc as control_grpc
    from sysops_sdk.protocol.v1 import plugin_pb2 as plugin
    from sysops_sdk.protocol.v1 import plugin_pb2_grpc as plugin_grpc

    pod, pod_ip = _plugin_pod(installed.namespace)
    pod_token = _secret(installed.namespace, f"{pod}-token", "token")
    assert pod_token is not None, f"no Secret {pod}-token"
    arguments = json.dumps({"name": "bench"})
    server_channel = open_channel(
        ServerContext(
            "bench", installed.address, installed.token, installed.ca, installed.server_name, not installed.ca
        )
    )
    server = control_grpc.ControlStub(server_channel)
    server_metadata = (("authorization", f"Bearer {installed.token}"), *PROTOCOL_METADATA)
    routed_request = control.InvokeRequest(command="greet", arguments_json=arguments, output_format="text")
    pod_channel = grpc.insecure_channel(f"{pod_ip}:{PLUGIN_PORT}")
    direct = plugin_grpc.PluginServiceStub(pod_channel)
    pod_metadata = (("authorization", f"Bearer {pod_token.decode()}"), *PROTOCOL_METADATA)
    direct_request = plugin.InvokeRequest(command="greet", arguments_json=arguments)

    def routed() -> None:
        for _chunk in server.Invoke(routed_request, metadata=server_metadata, timeout=30):
            pass

    def direct_call() -> None:
        for _event in direct.Invoke(direct_request, metadata=pod_metadata, timeout=30):
            pass

    def direct_on_a_new_channel() -> None:
        with grpc.insecure_channel(f"{pod_ip}:{PLUGIN_PORT}") as channel:
            stub = plugin_grpc.PluginServiceStub(channel)
            for _event in stub.Invoke(direct_request, metadata=pod_metadata, timeout=30):
                pass

    failed: list[str] = []

    def cli() -> None:
        ran = subprocess.run([SYSOPS, "greet", "World"], env=env, capture_output=True, text=True, timeout=60)
        if ran.returncode != 0:
            failed.append(ran.stderr.strip())

    answer = subprocess.run([SYSOPS, "greet", "World"], env=env, capture_output=True, text=True, timeout=60)
    assert answer.stdout == "Hello, World!\n", f"the plugin does not answer through the server: {answer.stderr}"
    try:
        print(f"\n(a) in process, {calls} interleaved pairs, plugin pod {pod} ({pod_ip}), server {installed.address}:")
        through_server, straight = _paired(routed, direct_call, calls)
        figures = _report(
            "server Invoke through the Service (kept TLS channel)",
            through_server,
            "plugin pod Invoke, direct (kept channel)",
            straight,
        )
        print(f"\n(c) in process, {calls} interleaved pairs: what a connection to the pod costs")
        fresh, kept = _paired(direct_on_a_new_channel, direct_call, calls)
        figures += _report(
            "plugin pod Invoke, direct, a new channel per call", fresh, "plugin pod Invoke, direct (kept channel)", kept
        )
        print(f"\n(b) as processes, {pairs} interleaved pairs:")
        cli_samples, straight_b = _paired(cli, direct_call, pairs)
        figures += _report(
            "sysops greet World through the Service", cli_samples, "plugin pod Invoke, direct (in process)", straight_b
        )
        floor, _ = _paired(lambda: subprocess.run([str(BIN / "python"), "-c", "pass"], check=True), lambda: None, pairs)
        print(f"  {'(floor: the venv python -c pass)':<52} p50 {_percentiles(floor)[0] * 1000:8.3f} ms", flush=True)
        print(f"  CLI calls that failed: {len(failed)} of {pairs + 5}" + "".join(f"\n    {line}" for line in failed))
        for figure in figures[-2:]:  # the CLI's: how many of its calls failed is part of the figure
            figure.detail["cli_calls_failed"] = len(failed)
        return figures
    finally:
        print(f"\nrestarts: {_restarts(installed.namespace)}", flush=True)
        server_channel.close()
        pod_channel.close()


if __name__ == "__main__":
    sys.exit(main())
