"""Host services on the Kubernetes test cluster (issue 10): plugin pods call the server's Host service over TCP
(SYSOPS_HOST_ENDPOINT = the server Service's ClusterIP and port), with grants from the chart's `policy` value.

- `state` survives a reload (new code), a rollback and a pod replacement (the pod deleted, reconciliation
  starts another), since the server keeps it, not the pod;
- a service call without its grant is refused in the plugin naming the grant while a granted one works, and a
  `@requires_permission` command not granted is refused with exit 9 before it runs;
- a plugin without `events.publish` cannot publish, one with it can, and a subscriber being rolled receives
  every event published during the roll;
- `sysops metrics` through the server shows the host's metrics and a plugin's.
Plugins: tests/integration/plugins/keeper, tests/e2e/plugins/herald and listener. Own namespace (the chart
installed by test_kubernetes.installed_chart), everything removed afterwards; skipped without a cluster.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_kubernetes import (
    SERVER_INSTALLATION,
    Cluster,
    installation_images,
    installed_chart,
    kubectl,
    remove_images,
)
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import Sysops, wait_for

pytestmark = kubernetes_marks
PLUGINS = {
    "keeper": Path(__file__).parents[1] / "integration" / "plugins" / "keeper",
    "herald": Path(__file__).parent / "plugins" / "herald",
    "listener": Path(__file__).parent / "plugins" / "listener",
}
#: Each plugin gets part of what it asks for: keeper not config.read nor deploy.run, listener not events.publish.
POLICY = {
    "plugins": {
        "keeper": {"grants": ["state.*"]},
        "herald": {"grants": ["events.publish", "metrics.write"]},
        "listener": {"grants": ["events.subscribe", "state.*"]},
    }
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-services")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[Cluster]:
    values = workdir / "values.yaml"
    values.write_text(json.dumps({"policy": POLICY}))  # the chart's values -> ConfigMap -> SYSOPS_POLICY
    with installed_chart("-f", str(values)) as installed:
        yield installed


def plugin_images(engine: docker.DockerClient) -> set[str]:
    """Ids of the test plugins' images (the CLI builds them, labelled with the server's installation)."""
    return installation_images(engine, SERVER_INSTALLATION, PLUGINS)


@pytest.fixture(scope="module")
def cli(cluster: Cluster, workdir: Path) -> Iterator[Sysops]:
    engine = docker.from_env()
    existing = plugin_images(engine)
    sysops = cluster.cli(workdir / "home")
    try:
        yield sysops
    finally:
        remove_plugins(sysops, cluster, engine, existing)


def remove_plugins(cli: Sysops, cluster: Cluster, engine: docker.DockerClient, existing: set[str]) -> None:
    """Take the test plugins down and remove their images but `existing` (those there before the tests)."""
    for name in PLUGINS:
        cli.run("plugin", "down", name)
    wait_for(lambda: cluster.plugin_objects() == [], 60, "the plugins' pods, policies and state to be deleted")
    # The kubelet stops a deleted pod's container within its grace period; until then its image is in use.
    wait_for(lambda: remove_images(engine, plugin_images(engine) - existing), 60, "the plugin images to go")


def plugin_up(cli: Sysops, workdir: Path, name: str) -> Path:
    """A copy of the test plugin `name` in `workdir`, up on the kubernetes runtime."""
    plugin_dir = workdir / name
    shutil.copytree(PLUGINS[name], plugin_dir)
    cli.ok("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
    return plugin_dir


def rewrite(plugin_dir: Path, version: str, mark: str) -> None:
    """Another build of a copied test plugin: `version` in its manifest, MARK in its code."""
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    [code] = plugin_dir.glob("*_plugin/plugin.py")
    code.write_text(code.read_text().replace('MARK = "A"', f'MARK = "{mark}"'))


def plugin_pods(cluster: Cluster, plugin: str) -> list[dict[str, Any]]:
    pods = json.loads(kubectl("-n", cluster.namespace, "get", "pods", "-l", f"sysops.plugin={plugin}", "-o", "json"))
    return [pod for pod in pods["items"] if pod["metadata"].get("deletionTimestamp") is None]


@pytest.fixture(scope="module")
def keeper(cli: Sysops, workdir: Path) -> Path:
    return plugin_up(cli, workdir, "keeper")


def test_state_over_tcp_survives_a_reload_a_rollback_and_a_pod_replacement(
    cluster: Cluster, cli: Sysops, keeper: Path
) -> None:
    [pod] = plugin_pods(cluster, "keeper")
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    service = json.loads(kubectl("-n", cluster.namespace, "get", "service", "sysops", "-o", "json"))
    assert env["SYSOPS_HOST_ENDPOINT"] == f"{service['spec']['clusterIP']}:7443"  # the server's Service, by IP
    assert cli.ok("remember", "colour", "blue") == "version 1\n"
    assert cli.ok("recall", "colour") == "A:blue\n"
    rewrite(keeper, "1.0.1", "B")
    cli.ok("plugin", "up", str(keeper))
    assert cli.ok("recall", "colour") == "B:blue\n"  # new code, same state
    cli.ok("plugin", "rollback", "keeper")
    assert cli.ok("recall", "colour") == "A:blue\n"
    [before] = plugin_pods(cluster, "keeper")
    kubectl("-n", cluster.namespace, "delete", "pod", before["metadata"]["name"], "--wait=true")
    wait_for(
        lambda: (
            [p["metadata"]["name"] for p in plugin_pods(cluster, "keeper")] not in ([], [before["metadata"]["name"]])
            and cli.run("recall", "colour").stdout == "A:blue\n"
        ),
        90,
        "a new keeper pod, brought by reconciliation, to recall the value",
    )


def test_a_call_without_its_grant_is_refused_naming_it_while_a_granted_one_works(cli: Sysops, keeper: Path) -> None:
    refused = cli.run("peek-config")
    assert refused.returncode == 9, refused.stderr
    assert "config.read" in refused.stderr and "plugins.keeper.grants" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert cli.ok("recall", "colour") == "A:blue\n"  # state is granted


def test_a_command_needing_an_ungranted_permission_is_refused_before_it_runs(cli: Sysops, keeper: Path) -> None:
    refused = cli.run("guarded")
    assert refused.returncode == 9, refused.stderr
    assert "needs permission 'deploy.run'" in refused.stderr and "plugins.keeper.grants" in refused.stderr
    assert cli.ok("recall", "guarded-ran") == "A:(none)\n"  # it never ran


def heard(cli: Sysops) -> set[int]:
    return {int(number) for number in cli.ok("heard").split()}


def test_publish_needs_its_grant_and_a_rolled_subscriber_receives_what_was_published_meanwhile(
    cluster: Cluster, cli: Sysops, workdir: Path
) -> None:
    plugin_up(cli, workdir, "herald")
    listener = plugin_up(cli, workdir, "listener")
    refused = cli.run("shout", "news.loud")
    assert refused.returncode != 0
    assert "events.publish" in refused.stderr and "plugins.listener.grants" in refused.stderr, refused.stderr
    # The host subscribes the listener once it serves (its sync loop): publish until one arrives.
    probes = iter(range(90000, 91000))
    wait_for(lambda: cli.ok("announce", "news.probe", str(next(probes))) and bool(heard(cli)), 60, "a first event")
    [old_pod] = plugin_pods(cluster, "listener")
    rewrite(listener, "1.0.1", "B")
    published: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        rolling = pool.submit(cli.run, "plugin", "up", str(listener))
        while not rolling.done():
            number = len(published) + 1
            assert cli.ok("announce", "news.rolling", str(number)).startswith("event ")
            published.append(number)
        rolled = rolling.result()
    assert rolled.returncode == 0, rolled.stderr
    assert len(published) >= 2, published
    [new_pod] = plugin_pods(cluster, "listener")
    assert new_pod["metadata"]["name"] != old_pod["metadata"]["name"]
    wait_for(lambda: set(published) <= heard(cli), 60, f"the listener to have heard {published}")


def test_metrics_through_the_server_show_the_host_and_the_plugin(cli: Sysops) -> None:
    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(cli.ok("metrics"))
            for sample in family.samples
        }

    announced = ("sysops_plugin_herald_announced_total", (("plugin", "herald"),))
    before = samples().get(announced, 0.0)
    cli.ok("announce", "news.metrics", "0")
    after = samples()
    assert after[announced] == before + 1
    assert after[("sysops_calls_total", (("command", "recall"), ("outcome", "ok"), ("plugin", "keeper")))] >= 1
    assert any(name == "sysops_host_service_calls_total" and ("plugin", "keeper") in labels for name, labels in after)
