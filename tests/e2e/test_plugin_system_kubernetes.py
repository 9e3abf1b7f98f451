"""The plugin system on the Kubernetes test cluster (issue 11): dependencies and a service plugin, through the
chart's `sysops serve` (the CLI plans and builds with the local engine, the server starts pods).

- `plugin up chain-c` (chain-c requires chain-b requires chain-a; a and b found by discovery through
  SYSOPS_PLUGIN_PATH) starts chain-a, chain-b, chain-c in that order, each pod ready before the next one is
  created; `plugin down chain-a` is refused with exit 7 naming its dependents and no pod removed; `--cascade`
  takes chain-c, chain-b, chain-a down in that order; `plugin up chain-c` again without discovery starts
  chain-a and chain-b from their built revisions; `--force` takes chain-b alone down and chain-c's status names
  the missing requirement;
- two major versions run side by side as pods (twin 2.0.0 under its name, twin 1.0.0 as `twin--v1`), only the
  plain name's commands routed;
- a requirement nothing provides (two levels down) is refused with exit 7 naming the chain: no pod created, no
  image built;
- a service plugin (types [service], a run() loop) shows `service: running`; its loop crashing with
  `restart: on-failure` makes the kubelet restart the container in the same pod (restartCount 1), and status
  says so; with `never` the pod keeps serving its commands with the service stopped and no restart.
Small plugins written in the test's tmp directory, each with 20% of a CPU (the node has 2) and a liveness
timeout of 15 s. Own namespace (test_kubernetes.installed_chart), everything removed afterwards, including the
images the CLI built; skipped without a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e import test_kubernetes as chart
from tests.e2e.test_kubernetes import Cluster, kubectl
from tests.integration.conftest import Sysops, plugin_code, wait_for, write_plugin
from tests.integration.test_plugin_types_docker import SERVICE_CODE

pytestmark = chart.pytestmark
CHAIN = ("chain-a", "chain-b", "chain-c")
UNMET = ("needy", "middle")
SIDE_BY_SIDE = ("twin", "twin--v1", "old-user", "new-user")
SERVICES = ("crasher", "stayer")
PLUGINS = (*CHAIN, *UNMET, *SIDE_BY_SIDE, *SERVICES)
#: The test node has 2 CPUs; the kubelet's exec liveness probe starts a Python process inside these limits.
SMALL = "limits: {cpu_percent: 20, memory_mb: 64}\nliveness: {interval_s: 10, timeout_s: 15, failures: 6}\n"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with chart.installed_chart() as installed:
        yield installed


def built_images(engine: docker.DockerClient, plugins: tuple[str, ...]) -> set[str]:
    """Ids of the images the CLI built for `plugins` (labelled with the chart server's installation)."""
    return chart.installation_images(engine, chart.SERVER_INSTALLATION, plugins)


@pytest.fixture(scope="module")
def cli(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sysops]:
    """The CLI against the chart's server; afterwards the test plugins are down and the images it built gone."""
    engine = docker.from_env()
    existing = built_images(engine, PLUGINS)
    sysops = cluster.cli(tmp_path_factory.mktemp("k8s-plugin-system") / "home")
    try:
        yield sysops
    finally:
        for name in reversed(PLUGINS):
            sysops.run("plugin", "down", name, "--force")
        wait_for(lambda: cluster.plugin_objects() == [], 90, "the plugins' pods, policies and state to be deleted")
        built = built_images(engine, PLUGINS) - existing
        wait_for(lambda: chart.remove_images(engine, built), 60, "the plugin images the tests built to go")


def small_plugin(directory: Path, name: str, extra: str = "", code: str = "", version: str = "1.0.0") -> Path:
    """A plugin in directory/name with command `<name>-ping-v<major>` (or `code`), small limits and `extra`
    manifest keys."""
    command = f"{name}-ping-v{version.split('.')[0]}"
    path = write_plugin(
        directory / name,
        name=name,
        code=code or plugin_code(name, command=command),
        manifest_extra=SMALL + extra,
        command=command,
    )
    manifest = path / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    return path


def with_plugin_path(cli: Sysops, *plugins: Path) -> Sysops:
    """The same CLI, with `plugins` as discovery directories."""
    return Sysops(home=cli.home, env={**cli.env, "SYSOPS_PLUGIN_PATH": os.pathsep.join(map(str, plugins))})


def pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    """The live plugin pods of the namespace that `selector` (a label selector) picks."""
    listed = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", selector, "-o", "json"))
    return [pod for pod in listed["items"] if pod["metadata"].get("deletionTimestamp") is None]


def plugin_pods(cluster: Cluster) -> list[str]:
    """The plugin of each live plugin pod of the namespace, sorted."""
    return sorted(pod["metadata"]["labels"]["sysops.plugin"] for pod in pods(cluster, "sysops.plugin"))


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def created(pod: dict[str, Any]) -> float:
    """When the API server created the pod (whole seconds, as it keeps them)."""
    return timestamp(pod["metadata"]["creationTimestamp"]).timestamp()


def started(pod: dict[str, Any]) -> float:
    """When the pod's container last started running."""
    return timestamp(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]).timestamp()


def event_records(cli: Sysops) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli.ok("events", "-o", "json").splitlines()]


def events(cli: Sysops) -> list[tuple[str, str]]:
    return [(event["plugin"], event["kind"]) for event in event_records(cli)]


def status(cli: Sysops, name: str) -> dict[str, Any]:
    return dict(json.loads(cli.ok("plugin", "status", name, "--output", "json")))


def test_up_starts_the_chain_in_order_and_down_is_refused_then_cascaded(
    cluster: Cluster, cli: Sysops, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    small_plugin(plugins, "chain-a")
    small_plugin(plugins, "chain-b", 'requires: ["chain-a>=1"]\n')
    root = small_plugin(tmp_path / "own", "chain-c", 'requires: ["chain-b"]\n')
    sysops = with_plugin_path(cli, plugins)

    up = sysops.run("plugin", "up", str(root), "--runtime", "kubernetes")
    assert up.returncode == 0, up.stderr
    for name in CHAIN:
        assert f"plan: {name} 1.0.0: start" in up.stderr, up.stderr
    started_events = events(sysops)
    order = [started_events.index((name, kind)) for name in CHAIN for kind in ("loaded", "active")]
    assert order == sorted(order), f"not started one after the other, each ready first: {started_events}"
    # On the cluster: each pod was created only after the server found the previous one ready (its `active`
    # event), and the previous pod's container was running by then.
    active = {event["plugin"]: event["time"] for event in event_records(sysops) if event["kind"] == "active"}
    chain_pods = [pod for name in CHAIN for pod in pods(cluster, f"sysops.plugin={name}")]
    assert len(chain_pods) == 3, chain_pods
    for name, previous, pod in zip(CHAIN, chain_pods, chain_pods[1:], strict=False):
        ready_at = timestamp(active[name]).timestamp()
        assert created(pod) >= ready_at and created(pod) >= started(previous), (name, chain_pods)
    assert [sysops.ok(f"{name}-ping-v1") for name in CHAIN] == ["pong\n"] * 3

    refused = sysops.run("plugin", "down", "chain-a")
    assert refused.returncode == 7, refused.stderr
    assert "plugin chain-a is required by running plugins: chain-c 1.0.0, chain-b 1.0.0" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert plugin_pods(cluster) == list(CHAIN)

    sysops.ok("plugin", "down", "chain-a", "--cascade")
    assert [plugin for plugin, kind in events(sysops) if kind == "unloaded"] == ["chain-c", "chain-b", "chain-a"]
    wait_for(lambda: plugin_pods(cluster) == [], 60, "the chain's pods to be deleted")
    assert json.loads(sysops.ok("plugin", "ls", "--output", "json")) == []

    again = cli.run("plugin", "up", str(root))  # no discovery: chain-a and chain-b only as built revisions
    assert again.returncode == 0, again.stderr
    assert "plan: chain-a 1.0.0: start (revision 1 of chain-a)" in again.stderr, again.stderr
    assert plugin_pods(cluster) == list(CHAIN)
    cli.ok("plugin", "down", "chain-b", "--force")  # only chain-b: chain-c keeps serving, missing it
    wait_for(lambda: plugin_pods(cluster) == ["chain-a", "chain-c"], 60, "chain-b's pod to be deleted")
    forced = status(cli, "chain-c")
    assert forced["state"] == "Active" and "chain-c 1.0.0 requires chain-b" in " ".join(forced["missing"]), forced
    assert cli.ok("chain-c-ping-v1") == "pong\n"
    cli.ok("plugin", "down", "chain-c")
    cli.ok("plugin", "down", "chain-a")
    wait_for(lambda: plugin_pods(cluster) == [], 60, "the chain's pods to be deleted again")


def test_a_missing_requirement_is_refused_with_nothing_started(cluster: Cluster, cli: Sysops, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    small_plugin(plugins, "middle", 'requires: ["absent>=2"]\n')
    root = small_plugin(tmp_path / "own", "needy", 'requires: ["middle"]\n')
    engine = docker.from_env()
    images_before = built_images(engine, UNMET)

    refused = with_plugin_path(cli, plugins).run("plugin", "up", str(root), "--runtime", "kubernetes")
    assert refused.returncode == 7, refused.stderr
    [line] = refused.stderr.splitlines()
    assert "middle 1.0.0 requires absent>=2" in line and "Traceback" not in line, line
    assert plugin_pods(cluster) == [] and cluster.plugin_objects() == []
    assert built_images(engine, UNMET) == images_before  # nothing was even built
    assert json.loads(cli.ok("plugin", "ls", "--output", "json")) == []


def test_two_major_versions_run_side_by_side_as_pods(cluster: Cluster, cli: Sysops, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    small_plugin(plugins / "v1", "twin")
    small_plugin(plugins / "v2", "twin", version="2.0.0")
    old_user = small_plugin(tmp_path / "own", "old-user", 'requires: ["twin<2"]\n')
    new_user = small_plugin(tmp_path / "own", "new-user", 'requires: ["twin>=2"]\n')
    sysops = with_plugin_path(cli, plugins / "v1", plugins / "v2")

    sysops.ok("plugin", "up", str(new_user), "--runtime", "kubernetes")
    result = sysops.run("plugin", "up", str(old_user), "--runtime", "kubernetes")
    assert result.returncode == 0, result.stderr
    assert "plan: twin 1.0.0 as twin--v1: start" in result.stderr, result.stderr
    rows = json.loads(sysops.ok("plugin", "ls", "-o", "json"))
    listed = {row["name"]: (row["version"], row["state"]) for row in rows}
    assert listed["twin"] == ("2.0.0", "Active") and listed["twin--v1"] == ("1.0.0", "Active"), listed
    assert plugin_pods(cluster) == sorted(SIDE_BY_SIDE), plugin_pods(cluster)
    assert sysops.ok("twin-ping-v2") == "pong\n"  # the version under the plain name serves its commands
    assert sysops.run("twin-ping-v1").returncode != 0  # a side-by-side version's commands are not routed
    sysops.ok("plugin", "down", "twin", "--cascade")
    sysops.ok("plugin", "down", "twin--v1", "--cascade")
    wait_for(lambda: plugin_pods(cluster) == [], 60, "the side-by-side pods to be deleted")


def service_plugin(directory: Path, name: str, restart: str) -> Path:
    extra = f"types: [service, command]\nservice: {{restart: {restart}}}\nnetwork: none\n"
    return small_plugin(directory, name, extra, code=SERVICE_CODE.format(name=name))


def restart_count(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["restartCount"])


def test_a_crashed_service_loop_is_restarted_by_the_kubelet_and_status_says_so(
    cluster: Cluster, cli: Sysops, tmp_path: Path
) -> None:
    cli.ok("plugin", "up", str(service_plugin(tmp_path, "crasher", "on-failure")), "--runtime", "kubernetes")
    assert status(cli, "crasher")["service"] == "running"
    [before] = pods(cluster, "sysops.plugin=crasher")
    assert restart_count(before) == 0
    assert cli.ok("crasher-break") == "breaking\n"

    def restarted() -> bool:
        [pod] = pods(cluster, "sysops.plugin=crasher")
        return restart_count(pod) == 1 and status(cli, "crasher")["service"] == "running"

    wait_for(restarted, 90, "the kubelet to start the crashed container again")
    [after] = pods(cluster, "sysops.plugin=crasher")
    assert after["metadata"]["name"] == before["metadata"]["name"]  # the same pod, its container restarted
    now = status(cli, "crasher")
    assert "restarted 1 time" in now["fault"], now
    assert "service loop stopped: run() raised RuntimeError: asked to break" in now["last_error"], now
    wait_for(lambda: cli.run("crasher-ping").stdout == "pong\n", 30, "the restarted container to answer")
    cli.ok("plugin", "down", "crasher")


def test_restart_never_keeps_the_pod_serving_with_the_service_stopped(
    cluster: Cluster, cli: Sysops, tmp_path: Path
) -> None:
    cli.ok("plugin", "up", str(service_plugin(tmp_path, "stayer", "never")), "--runtime", "kubernetes")
    assert status(cli, "stayer")["service"] == "running"
    cli.ok("stayer-break")
    wait_for(lambda: status(cli, "stayer")["service"] != "running", 30, "the service loop to stop")
    after = status(cli, "stayer")
    assert after["service"] == "stopped (run() raised RuntimeError: asked to break)", after
    assert (after["state"], after["health"], after["fault"]) == ("Active", "SERVING", "")
    assert cli.ok("stayer-ping") == "pong\n"
    [pod] = pods(cluster, "sysops.plugin=stayer")
    assert restart_count(pod) == 0
    cli.ok("plugin", "down", "stayer")
