"""Kubernetes end to end: the chart's two server replicas elect a leader, and the standby takes over.

The chart (default values: 2 replicas) runs `sysops serve --leader-elect` twice. Only the holder of the Lease
`sysops-leader` listens and labels its pod `sysops.dev/leader=true`, which the Service selects; both replicas are
Ready (their liveness port), the standby without serving. `helm upgrade --wait` of the two replicas (one pod at a
time) completes and the plugin keeps serving. Under a bounded load loop of routed calls through the Service's
ClusterIP, and of direct calls to the plugin pod, the leader pod is deleted: the standby must be labelled leader
and answering within 15 s (the deleted leader releases the Lease, so the takeover does not wait out its 10 s),
the plugin pod must be the same pod (UID, restartCount) and answer direct calls throughout, and calls through the
Service may fail only within that window. A leader whose Lease is taken from it exits (code 5) and is restarted
by the kubelet as a standby.
Figures are printed (`pytest -s`). The plugin asks 20% of a CPU (the test node has 2, shared by every test).
"""

from __future__ import annotations

import base64
import calendar
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
from sysops.cli.contexts import ServerContext
from sysops.cli.remote import RemoteClient
from sysops.core.client import PROTOCOL_METADATA, InvocationResult, PluginClient, invocation_items
from sysops.errors import SysopsError
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops_sdk.protocol.v1 import plugin_pb2 as plugin_pb

from tests.e2e.test_kubernetes import (
    ROOT,
    SERVER_INSTALLATION,
    Cluster,
    installation_images,
    installed_chart,
    kubectl,
    remove_images,
)
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import Sysops, copy_example, wait_for

pytestmark = kubernetes_marks

#: 20% of a CPU: at 10% the pod's exec readiness probe (an interpreter started within its 2 s timeout) never passed
#: on the shared test node, and the new leader must find the pod Ready to adopt it; a lenient liveness probe; 64 MB
#: was OOMKilled under the load loops.
SMALL = "limits: {cpu_percent: 20, memory_mb: 128}\nliveness: {interval_s: 10, timeout_s: 15, failures: 6}"
LEASE = "sysops-leader"
#: The issue's bound: the standby Ready and answering within this many seconds of the leader pod's deletion.
TAKEOVER_BUDGET_S = 15.0
#: A released Lease is taken at the standby's next try (every 2 s) after the leader's drain; an unreleased one
#: only after its 10 s duration. Above this, the Lease was not released.
RELEASED_LEASE_TAKEN_WITHIN_S = 7.0
#: The standby must have lived longer than its liveness probe's grace (15 s delay + 3 failures x 10 s) before
#: the test relies on it: a standby with no liveness port would have been restarted by then.
STANDBY_ALIVE_S = 50.0
#: Bound of the load loops (they stop earlier when the test ends).
LOAD_BOUND_S = 240.0
CALL_TIMEOUT_S = 5.0
#: Pause between two calls of a load thread: a steady load with a fine time resolution, not a stress test.
CALL_PAUSE_S = 0.05


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with installed_chart() as installed:
        yield installed


@pytest.fixture(scope="module")
def hello(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sysops]:
    workdir = tmp_path_factory.mktemp("ha")
    plugin_dir = copy_example("hello", workdir)
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("limits: {cpu_percent: 50, memory_mb: 128, pids: 64}", SMALL))
    engine = docker.from_env()
    existing = installation_images(engine, SERVER_INSTALLATION, ["hello"])
    cli = cluster.cli(workdir / "home")
    up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes", timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        yield cli
    finally:
        cluster.cli(cli.home).run("plugin", "down", "hello", timeout=120)
        new_images = installation_images(engine, SERVER_INSTALLATION, ["hello"]) - existing
        wait_for(lambda: remove_images(engine, new_images), 60, "the hello images the tests built to go")


def _pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", selector, "-o", "json"))
    return [pod for pod in pods["items"] if pod["metadata"].get("deletionTimestamp") is None]


def _server_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return _pods(cluster, "app.kubernetes.io/component=server")


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _labelled_leader(pod: dict[str, Any]) -> bool:
    """The label the Service selects, which only the leader sets on its own pod."""
    return (pod["metadata"].get("labels") or {}).get("sysops.dev/leader") == "true"


def _serving(pod: dict[str, Any]) -> bool:
    return _ready(pod) and _labelled_leader(pod)


def _running_since(pod: dict[str, Any]) -> float | None:
    """Seconds the server container has been running (None when it is not running)."""
    [status] = pod["status"].get("containerStatuses") or [{}]
    started = (status.get("state") or {}).get("running", {}).get("startedAt")
    if not started:
        return None
    return time.time() - calendar.timegm(time.strptime(started, "%Y-%m-%dT%H:%M:%SZ"))


def _lease(cluster: Cluster) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(kubectl("-n", cluster.namespace, "get", "lease", LEASE, "-o", "json"))["spec"]
    return spec


def _holder(cluster: Cluster) -> str:
    out = kubectl("-n", cluster.namespace, "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return out.strip()


def _context(cluster: Cluster, directory: Path) -> ServerContext:
    """The CLI's view of the server through its Service, verified as `Cluster.cli` verifies it."""
    tls = cluster.tls_env(directory) if hasattr(cluster, "tls_env") else {"SYSOPS_INSECURE": "1"}
    return ServerContext(
        "ha",
        _service_address(cluster),
        cluster.token,
        ca=tls.get("SYSOPS_SERVER_CA", ""),
        server_name=tls.get("SYSOPS_SERVER_NAME", ""),
        insecure=tls.get("SYSOPS_INSECURE") == "1",
    )


def _service_address(cluster: Cluster) -> str:
    service = json.loads(kubectl("-n", cluster.namespace, "get", "service", "sysops", "-o", "json"))
    [port] = [port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc"]
    return f"{service['spec']['clusterIP']}:{port}"


def _pod_token(cluster: Cluster, pod: dict[str, Any]) -> str:
    """A plugin pod's token: its Secret `<pod>-token`, or its env where the pod still carries it in plain."""
    found = kubectl(
        "-n", cluster.namespace, "get", "secret", f"{pod['metadata']['name']}-token", "-o", "json", check=False
    )
    if found:
        return base64.b64decode(json.loads(found)["data"]["token"]).decode()
    [env] = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "SYSOPS_TOKEN"]
    return str(env["value"])


@dataclass
class Call:
    start: float
    end: float
    error: str = ""


@dataclass
class Load:
    """Calls of `greet` in a loop from `threads` threads, each timed; bounded by LOAD_BOUND_S."""

    connect: Any  # () -> (call, close): a call that raises on failure, on a channel of its own
    threads: int = 1
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_BOUND_S
        call, close = self.connect()
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    call()
                except (SysopsError, grpc.RpcError, OSError) as error:
                    text = " ".join(str(error).split())[:400] or type(error).__name__
                    self.calls.append(Call(start, time.monotonic(), text))
                    close()  # a fresh channel: no reconnect backoff of the old one stretches the window
                    call, close = self.connect()
                    time.sleep(0.05)
                    continue
                self.calls.append(Call(start, time.monotonic()))
                time.sleep(CALL_PAUSE_S)
        finally:
            close()

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def answered(self, after: float = 0.0) -> int:
        return sum(1 for call in self.calls if not call.error and call.start >= after)

    def failures(self) -> list[Call]:
        return [call for call in self.calls if call.error]


def _service_load(context: ServerContext) -> Load:
    request = pb.InvokeRequest(command="greet", arguments_json=json.dumps({"name": "ha"}), output_format="text")

    def connect() -> tuple[Any, Any]:
        client = RemoteClient(context)

        def call() -> None:
            chunks = client.stub.Invoke(
                request, metadata=(*client.metadata, *PROTOCOL_METADATA), timeout=CALL_TIMEOUT_S
            )
            events = (plugin_pb.InvokeEvent.FromString(chunk.event) for chunk in chunks)
            [result] = [item for item in invocation_items(events, "hello") if isinstance(item, InvocationResult)]
            assert result.text == "Hello, ha!", result.text

        return call, client.close

    return Load(connect=connect)


def _direct_load(endpoint: str, token: str) -> Load:
    def connect() -> tuple[Any, Any]:
        client = PluginClient(endpoint, "hello", token)

        def call() -> None:
            [result] = [
                item
                for item in client.invoke("greet", {"name": "direct"}, timeout=CALL_TIMEOUT_S)
                if isinstance(item, InvocationResult)
            ]
            assert result.text == "Hello, direct!", result.text

        return call, client.close

    return Load(connect=connect, threads=1)


def _refuses(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def _leader_and_standby(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two server pods once both are Ready: the one holding the Lease and labelled leader, and the standby
    (Ready, not labelled: the Service sends it nothing)."""
    found: list[dict[str, Any]] = []

    def settled() -> bool:
        pods = [pod for pod in _server_pods(cluster) if _ready(pod)]
        leaders = [pod for pod in pods if _labelled_leader(pod)]
        standby = [pod for pod in pods if not _labelled_leader(pod)]
        if len(leaders) == 1 and len(standby) == 1 and _holder(cluster) == leaders[0]["metadata"]["name"]:
            found[:] = [leaders[0], standby[0]]
            return True
        return False

    wait_for(settled, 180, "a Ready labelled leader holding the Lease and a Ready unlabelled standby")
    return found[0], found[1]


def _seen(cluster: Cluster) -> str:
    """What a failed wait saw: the Lease, each server pod (phase, Ready, labels, restarts) and its log's tail."""
    lines = [f"lease: {json.dumps(_lease(cluster))}"]
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", "app.kubernetes.io/component=server",
                              "-o", "json"))["items"]  # fmt: skip
    for pod in pods:
        name = pod["metadata"]["name"]
        statuses = pod["status"].get("containerStatuses") or [{}]
        lines.append(
            f"pod {name}: phase {pod['status'].get('phase')}, ready {_ready(pod)}, leader label "
            f"{_labelled_leader(pod)}, deleting {bool(pod['metadata'].get('deletionTimestamp'))}, "
            f"restarts {statuses[0].get('restartCount')}"
        )
        log = kubectl("-n", cluster.namespace, "logs", name, "--tail", "15", check=False)
        lines.extend(f"  | {line}" for line in log.splitlines())
    return "\n".join(lines)


def test_the_standby_takes_over_when_the_leader_pod_is_deleted(cluster: Cluster, hello: Sysops, tmp_path: Path) -> None:
    leader, standby = _leader_and_standby(cluster)
    leader_name, standby_name = leader["metadata"]["name"], standby["metadata"]["name"]
    # The standby does not listen on the control port (and, unlabelled, gets no Service traffic) ...
    assert _refuses(f"{standby['status']['podIP']}:7443")
    logs = kubectl("-n", cluster.namespace, "logs", standby_name)
    assert f"standby: lease {cluster.namespace}/{LEASE} is held by {leader_name}" in logs, logs
    assert "control API on" not in logs
    assert f"leading: {leader_name} holds lease" in kubectl("-n", cluster.namespace, "logs", leader_name)
    # ... yet it is alive and Ready: it outlives its liveness probe's grace without a restart.
    since = _running_since(standby) or 0.0
    time.sleep(max(0.0, STANDBY_ALIVE_S - since))
    [standby] = [pod for pod in _server_pods(cluster) if pod["metadata"]["name"] == standby_name]
    assert standby["status"]["containerStatuses"][0]["restartCount"] == 0
    transitions = int(_lease(cluster).get("leaseTransitions") or 0)

    wait_for(lambda: all(_ready(pod) for pod in _pods(cluster, "sysops.plugin=hello")), 120, "the plugin pod Ready")
    [plugin_pod] = _pods(cluster, "sysops.plugin=hello")
    plugin_before = {
        "uid": plugin_pod["metadata"]["uid"],
        "restarts": plugin_pod["status"]["containerStatuses"][0]["restartCount"],
    }
    endpoint = f"{plugin_pod['status']['podIP']}:50051"
    direct = _direct_load(endpoint, _pod_token(cluster, plugin_pod))
    service = _service_load(_context(cluster, tmp_path))
    with direct, service:
        wait_for(
            lambda: (
                (service.answered() >= 20 and direct.answered() >= 10)
                or len(service.failures() + direct.failures()) > 5
            ),
            60,
            "answers before the deletion",
        )
        assert service.failures() == [] and direct.failures() == [], (
            service.failures()[:2],
            direct.failures()[:2],
            [pod["status"] for pod in _pods(cluster, "sysops.plugin=hello")],
        )
        deleted = time.monotonic()
        kubectl("-n", cluster.namespace, "delete", "pod", leader_name, "--wait=false")
        lease_taken: list[float] = []
        standby_ready: list[float] = []

        def taken_over() -> bool:
            now = time.monotonic()
            if not lease_taken and _holder(cluster) == standby_name:
                lease_taken.append(now)
            if not standby_ready and any(
                pod["metadata"]["name"] == standby_name and _serving(pod) for pod in _server_pods(cluster)
            ):
                standby_ready.append(now)
            return bool(lease_taken and standby_ready)

        try:
            wait_for(taken_over, 60, "the standby to hold the Lease and be labelled leader")
        except AssertionError as exc:
            seen = f"lease_taken={lease_taken}, standby_ready={standby_ready}\n{_seen(cluster)}"
            raise AssertionError(f"{exc}; {seen}") from None
        wait_for(lambda: service.answered(after=standby_ready[0]) >= 1, 30, "a routed call answered by the new leader")
        answering = min(c.end for c in service.calls if not c.error and c.start >= standby_ready[0])
        mark = time.monotonic()
        wait_for(lambda: service.answered(after=mark) >= 20, 60, "answers after the takeover")
        direct_mark = time.monotonic()
        wait_for(lambda: direct.answered(after=direct_mark) >= 5, 30, "direct answers after the takeover")

    failed = service.failures()
    window = (min(c.start for c in failed) - deleted, max(c.end for c in failed) - deleted) if failed else (0.0, 0.0)
    sent = len(service.calls)
    print(
        f"\nHA takeover: lease to {standby_name} {lease_taken[0] - deleted:.2f}s, Ready "
        f"{standby_ready[0] - deleted:.2f}s, answering through the Service {answering - deleted:.2f}s after the "
        f"deletion of {leader_name}; routed calls {sent}, failed {len(failed)} within "
        f"[{window[0]:.2f}s, {window[1]:.2f}s]; direct calls {len(direct.calls)}, failed {len(direct.failures())}"
    )
    for call in failed[:5]:
        print(f"  failed at {call.start - deleted:+.2f}s..{call.end - deleted:+.2f}s: {call.error}")
    assert answering - deleted <= TAKEOVER_BUDGET_S
    # Released on the graceful deletion: taken at the standby's next try, not after the lease's 10 s.
    assert lease_taken[0] - deleted <= RELEASED_LEASE_TAKEN_WITHIN_S
    assert int(_lease(cluster)["leaseTransitions"]) == transitions + 1
    # Routed calls fail only within the takeover window; the plugin answered direct calls throughout.
    assert all(deleted - CALL_TIMEOUT_S <= call.start and call.end <= deleted + TAKEOVER_BUDGET_S for call in failed)
    assert direct.failures() == [], direct.failures()[:3]
    [plugin_after] = _pods(cluster, "sysops.plugin=hello")
    assert plugin_after["metadata"]["uid"] == plugin_before["uid"]
    assert plugin_after["status"]["containerStatuses"][0]["restartCount"] == plugin_before["restarts"]
    [listed] = json.loads(cluster.cli(hello.home).ok("plugin", "ls", "--output", "json"))
    assert (listed["name"], listed["state"], listed["container"]) == ("hello", "Active", plugin_pod["metadata"]["name"])
    # The Deployment's replacement pod becomes the new standby.
    wait_for(
        lambda: any(
            pod["metadata"]["name"] not in (leader_name, standby_name) and _ready(pod)
            and not _labelled_leader(pod)
            for pod in _server_pods(cluster)
        ),
        120,
        "a new standby (Ready, not labelled leader)",
    )  # fmt: skip


def test_a_leader_that_loses_the_lease_exits_and_comes_back_as_standby(cluster: Cluster, hello: Sysops) -> None:
    leader, standby = _leader_and_standby(cluster)
    leader_name = leader["metadata"]["name"]
    restarts = leader["status"]["containerStatuses"][0]["restartCount"]
    # Another holder, as if the Lease had expired and been taken: the leader must stop serving at once.
    kubectl("-n", cluster.namespace, "patch", "lease", LEASE, "--type", "merge", "-p",
            json.dumps({"spec": {"holderIdentity": "intruder"}}))  # fmt: skip
    changed = time.monotonic()

    def restarted() -> dict[str, Any] | None:
        for pod in _server_pods(cluster):
            status = pod["status"]["containerStatuses"][0]
            if pod["metadata"]["name"] == leader_name and status["restartCount"] > restarts:
                return dict(status)
        return None

    wait_for(lambda: restarted() is not None, 60, "the old leader's container to exit and restart")
    status = restarted()
    assert status is not None and status["lastState"]["terminated"]["exitCode"] == 5, status
    exited = time.monotonic() - changed
    # The intruder never renews: one of the two replicas takes the Lease after its 10 s and serves.
    wait_for(lambda: _holder(cluster) in (leader_name, standby["metadata"]["name"]), 60, "a replica to lead again")
    led = time.monotonic() - changed
    wait_for(lambda: any(_serving(pod) for pod in _server_pods(cluster)), 90, "the new leader Ready and labelled")
    serving = time.monotonic() - changed
    print(
        f"\nlease taken from {leader_name}: it exited (code 5) within {exited:.2f}s; "
        f"{_holder(cluster)} took the Lease {led:.2f}s and was Ready {serving:.2f}s after the change"
    )
    cli = cluster.cli(hello.home)
    wait_for(lambda: cli.run("greet", "again").stdout == "Hello, again!\n", 90, "the plugin through the new leader")


def test_helm_upgrade_wait_of_two_replicas_completes_and_the_plugin_keeps_serving(
    cluster: Cluster, hello: Sysops
) -> None:
    """One pod at a time (maxSurge 0, maxUnavailable 1): a new pod is a Ready standby while the old leader lives,
    so the Deployment goes on and `helm upgrade --wait` returns (it timed out when only the leader was Ready)."""
    before = {pod["metadata"]["name"] for pod in _server_pods(cluster)}
    started = time.monotonic()
    upgrade = subprocess.run(
        ["helm", "upgrade", "sysops", str(ROOT / "charts" / "sysops"), "-n", cluster.namespace, "--reuse-values",
         "--set-string", f"podAnnotations.sysops-e2e/roll={uuid.uuid4().hex[:8]}", "--wait", "--timeout", "240s"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    assert upgrade.returncode == 0, upgrade.stderr
    leader, standby = _leader_and_standby(cluster)
    assert not {leader["metadata"]["name"], standby["metadata"]["name"]} & before  # both replaced
    print(f"\nhelm upgrade --wait of 2 replicas: {took:.1f}s; leader {leader['metadata']['name']}")
    cli = cluster.cli(hello.home)
    wait_for(
        lambda: cli.run("greet", "upgraded").stdout == "Hello, upgraded!\n", 90, "the plugin through the new leader"
    )


def test_upgrading_a_single_server_release_to_ha_leads_only_once_the_old_server_stopped(tmp_path: Path) -> None:
    """The server of a release with one replica ignores the Lease; upgraded to 2 replicas, the new leader takes the
    Lease but serves only once that old pod (no sysops.dev/leader-elect label) stopped, and says it waits for it."""
    with installed_chart("--set", "server.replicas=1") as single:
        [old] = _server_pods(single)
        old_name = old["metadata"]["name"]
        assert "sysops.dev/leader-elect" not in old["metadata"]["labels"]
        upgrade = subprocess.run(
            ["helm", "upgrade", "sysops", str(ROOT / "charts" / "sysops"), "-n", single.namespace, "--reuse-values",
             "--set", "server.replicas=2", "--wait", "--timeout", "240s"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert upgrade.returncode == 0, upgrade.stderr
        leader, _ = _leader_and_standby(single)

        def leader_log() -> str:
            return kubectl("-n", single.namespace, "logs", leader["metadata"]["name"])

        wait_for(lambda: "control API on" in leader_log(), 90, "the new leader to listen")  # labelled before it
        logs = leader_log()
        print(f"\nleader after the upgrade to HA: {leader['metadata']['name']}; its log:\n{logs}")
        assert "without leader election" in logs and old_name in logs, logs
        waited = logs.index(f"gone ({old_name}): serving")
        assert waited < logs.index("control API on"), logs  # it listened only after the old server was gone
        wait_for(
            lambda: single.cli(tmp_path / "home").run("plugin", "ls").returncode == 0, 60, "the new leader to answer"
        )
