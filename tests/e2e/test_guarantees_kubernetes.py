"""Kubernetes end to end: the guarantees `sysops serve` gives on Docker hold for plugin pods too.

Through the chart's server: no routed call fails while a plugin is rolled, rolled back, or a broken version is
refused (a bounded load loop counts them); `plugin up --watch --runtime kubernetes` rolls on a save; a crash, an
OOM kill and an unresponsive pod (killed by its livenessProbe) are named in the command's error, in
`plugin status` and in `sysops events`; `plugin status` shows the pod's live usage from its cgroup.
Plugins ask 10% of a CPU (the test node has 2, shared by every test).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.test_kubernetes import (
    SERVER_INSTALLATION,
    Cluster,
    installation_images,
    installed_chart,
    kubectl,
    remove_images,
)
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import SYSOPS, Sysops, copy_example, interrupt, wait_for, write_plugin
from tests.integration.test_hardening_callpath import ServerLoad
from tests.integration.test_hot_reload import _set_greeting

pytestmark = kubernetes_marks

#: The load keeps hello's pod busy and its exec probes start an interpreter each, within the pod's limits: at 10%
#: of a CPU they overran their timeout on the loaded test node, and at 64 MiB a probe next to the plugin got the
#: serving pod OOM-killed (neither a roll's doing); so 20%, 128 MiB and patient probes.
SMALL = "limits: {cpu_percent: 20, memory_mb: 128}\nliveness: {interval_s: 10, timeout_s: 10, failures: 3}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with installed_chart() as installed:
        yield installed


@pytest.fixture(scope="module")
def built_images() -> Iterator[None]:
    """Remove the plugin images this module's ups built (by the server's installation), whatever happens."""
    engine = docker.from_env()
    plugins = ("hello", "faulty")
    existing = installation_images(engine, SERVER_INSTALLATION, plugins)
    yield
    new_images = installation_images(engine, SERVER_INSTALLATION, plugins) - existing
    wait_for(lambda: remove_images(engine, new_images), 60, "the images the tests built to go")


@pytest.fixture
def hello(cluster: Cluster, built_images: None, tmp_path: Path) -> Iterator[tuple[Sysops, Path]]:
    plugin_dir = copy_example("hello", tmp_path)
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("limits: {cpu_percent: 50, memory_mb: 128, pids: 64}", SMALL))
    cli = cluster.cli(tmp_path / "home")
    up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes", timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        yield cli, plugin_dir
    finally:
        cli.run("plugin", "down", "hello", timeout=120)


def _wait_answer(load: ServerLoad, greeting: str, after: int) -> None:
    wait_for(lambda: any(a.startswith(greeting) for a in load.answers[after:]), 120, f"{greeting!r} to answer")


def test_rolls_rollbacks_and_a_refused_version_fail_no_call(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, plugin_dir = hello
    source = plugin_dir / "hello_plugin" / "plugin.py"
    failed: dict[str, int] = {}
    with ServerLoad(cli, clients=2, seconds=600, pause=0.05) as load:
        wait_for(lambda: len(load.answers) >= 10, 60, "the first answers")
        failed["before"] = len(load.failures)
        _set_greeting(plugin_dir, "Howdy")
        mark = len(load.answers)
        rolled = cli.run("plugin", "up", str(plugin_dir), timeout=300)
        assert rolled.returncode == 0, rolled.stderr
        _wait_answer(load, "Howdy", mark)
        failed["roll"] = len(load.failures) - sum(failed.values())
        mark = len(load.answers)
        back = cli.run("plugin", "rollback", "hello", "--to", "1", timeout=300)
        assert back.returncode == 0, back.stderr
        _wait_answer(load, "Hello", mark)
        failed["rollback"] = len(load.failures) - sum(failed.values())
        good = source.read_text()
        source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('no database')"))
        refused = cli.run("plugin", "up", str(plugin_dir), timeout=300)
        source.write_text(good)
        assert refused.returncode == 6, refused.stderr
        mark = len(load.answers)
        wait_for(lambda: len(load.answers) >= mark + 10, 60, "answers after the refused roll")
        failed["refused"] = len(load.failures) - sum(failed.values())
    sent = len(load.answers) + len(load.failures)
    print(f"calls sent {sent}, failed {len(load.failures)} {failed}")
    if load.failures:
        print(kubectl("-n", cluster.namespace, "get", "pods", "-o", "wide"))
        print(cli.run("plugin", "status", "hello").stdout)
    assert load.failures == []
    assert all(answer.startswith("Hello") for answer in load.answers[mark:])
    history = json.loads(cli.ok("plugin", "history", "hello", "--output", "json"))
    assert {1, 2} <= {r["revision"] for r in history}


def test_watch_rolls_the_pod_on_a_save(cluster: Cluster, hello: tuple[Sysops, Path], tmp_path: Path) -> None:
    cli, plugin_dir = hello
    log = tmp_path / "watch.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [SYSOPS, "plugin", "up", str(plugin_dir), "--watch", "--runtime", "kubernetes"],
            env=cli.env,
            stderr=sink,
            stdout=sink,
        )
    try:
        wait_for(lambda: "watching" in log.read_text() or process.poll() is not None, 180, "the watch to start")
        assert process.poll() is None, log.read_text()
        _set_greeting(plugin_dir, "Ahoy")
        wait_for(lambda: cli.run("greet", "k8s").stdout == "Ahoy, k8s!\n", 240, f"the new version: {log}")
        wait_for(lambda: "hello 1.0.0 serving (revision " in log.read_text(), 120, f"the watch to report: {log}")
    finally:
        interrupt(process, 30)


FAULTY = """
import ctypes
import os

from sysops_sdk import Plugin, plugin_command


class P(Plugin):
    name = "faulty"
    version = "1.0.0"

    def initialize(self) -> None:
        self.hoard: list[bytes] = []

    def cleanup(self) -> None:
        pass

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"

    @plugin_command("crash")
    def crash(self) -> str:
        os._exit(3)

    @plugin_command("hog")
    def hog(self) -> str:
        while True:
            self.hoard.append(b"\\x01" * (8 << 20))

    @plugin_command("wedge")
    def wedge(self) -> str:
        ctypes.PyDLL(None).sleep(600)  # holds the GIL: not even a health check answers
        return "woke"
"""
#: Probes spawn an interpreter in the pod, within its limits: 20% of a CPU and a 5 s answer keep them honest, and
#: 160 MiB leave room for two probes next to a wedged plugin (at 96 MiB they got it OOM-killed before the kubelet
#: killed it for its liveness).
FAULTY_MANIFEST = (
    "types: [command]\n"
    "limits: {cpu_percent: 20, memory_mb: 160}\n"
    "liveness: {interval_s: 5, timeout_s: 5, failures: 2}\n"
    "commands: {wedge: {timeout_seconds: 120}}\n"
)


def _fault_events(cli: Sysops, kind: str) -> list[str]:
    lines = cli.ok("events", "--plugin", "faulty", "--output", "json").splitlines()  # JSON Lines
    return [event["message"] for event in map(json.loads, lines) if event["kind"] == kind]


def _wait_serving(cli: Sysops) -> None:
    wait_for(lambda: cli.run("ping").stdout == "pong\n", 180, "faulty to serve again")


def test_crash_oom_and_unresponsive_are_named(cluster: Cluster, built_images: None, tmp_path: Path) -> None:
    plugin_dir = write_plugin(tmp_path / "faulty", name="faulty", code=FAULTY, manifest_extra=FAULTY_MANIFEST)
    cli = cluster.cli(tmp_path / "home")
    up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes", timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        crashed = cli.run("crash", timeout=120)
        assert crashed.returncode != 0
        assert "plugin 'faulty' died during command 'crash': exited with code 3" in crashed.stderr, crashed.stderr
        _wait_serving(cli)
        status = json.loads(cli.ok("plugin", "status", "faulty", "--output", "json"))
        assert status["fault"].startswith("crashed, restarted 1 time"), status
        assert _fault_events(cli, "restarted"), status["events"]

        hogged = cli.run("hog", timeout=120)
        assert "died during command 'hog': OOMKilled (memory limit 160 MiB" in hogged.stderr, hogged.stderr
        _wait_serving(cli)
        status = json.loads(cli.ok("plugin", "status", "faulty", "--output", "json"))
        assert status["fault"].startswith("OOMKilled (memory limit 160 MiB"), status
        assert any("OOMKilled (memory limit 160 MiB" in message for message in _fault_events(cli, "oom-killed"))
        last_fault = kubectl("-n", cluster.namespace, "get", "plugin", "faulty", "-o", "jsonpath={.status.lastFault}")
        assert "OOMKilled" in last_fault, last_fault

        wedged = cli.run("wedge", timeout=180)
        assert "plugin 'faulty' died during command 'wedge': unresponsive: " in wedged.stderr, wedged.stderr
        _wait_serving(cli)
        status = json.loads(cli.ok("plugin", "status", "faulty", "--output", "json"))
        assert status["fault"].startswith("unresponsive: 2 liveness probes in a row"), status
        assert status["last_error"].startswith("unresponsive: "), status
        assert any(message.startswith("unresponsive: ") for message in _fault_events(cli, "unresponsive"))
        print(f"faults: {status['fault']!r}; events: {[e['kind'] for e in status['events']]}")
    finally:
        cli.run("plugin", "down", "faulty", timeout=120)


def test_status_shows_the_pods_live_usage(cluster: Cluster, hello: tuple[Sysops, Path]) -> None:
    cli, _ = hello
    usage = json.loads(cli.ok("plugin", "status", "hello", "--output", "json"))["limits"]["usage"]
    print(f"usage of the hello pod: {usage}")
    assert usage["cpu_window"] == "0.5s" and isinstance(usage["cpu_percent"], float)
    assert 5 < usage["memory_mb"] <= 128 and usage["memory_peak_mb"] >= usage["memory_mb"]
    assert usage["pids"] >= 1 and usage["oom_kills"] == 0
    shown = cli.ok("plugin", "status", "hello")
    assert "usage         cpu_percent " in shown and "memory_mb " in shown, shown
