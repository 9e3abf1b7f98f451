"""Command deadlines and cancellation on the real engine (issue 9, item 3).

A routed call ends by its deadline (declared in code, in the manifest, or the operator's default) with
one line naming the plugin, the command and the cause, exit code 10; the plugin cancels the handler
(it can see it, a `while True` loop is interrupted, a `time.sleep` ends early), so 24 abandoned calls
leave the worker threads free and the CPU idle; Ctrl-C does the same and exits 130, locally and through
`sysops serve`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container
from sysops.core.client import PluginClient
from sysops.errors import DeadlineExceededError
from sysops.runtime.docker.cgroups import CgroupLocator
from sysops.settings import Settings
from sysops.store import Route, Store

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    installation_containers,
    remove_installation,
    unmount_installation,
    wait_for,
    write_plugin,
)
from tests.integration.test_server import TOKEN, Server, _free_port

pytestmark = pytest.mark.integration

CODE = """
import threading
import time

from sysops_sdk import Plugin, cancel_event, cancelled, plugin_command

SEEN: list[str] = []


class P(Plugin):
    name = "slowpoke"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"

    @plugin_command("spin", timeout=2)
    def spin(self) -> str:
        SEEN.append("spin started")
        while True:
            pass

    @plugin_command("nap")
    def nap(self) -> str:
        started = time.monotonic()
        try:
            time.sleep(8)
            SEEN.append("nap finished its side effect")
            return "rested"
        finally:
            SEEN.append(f"nap ended after {time.monotonic() - started:.1f}s")

    @plugin_command("polite")
    def polite(self) -> str:
        SEEN.append("polite started")
        while not cancelled():
            pass
        SEEN.append("polite saw its cancellation")
        return "bye"

    @plugin_command("crowd", timeout=2)
    def crowd(self) -> str:
        stop = cancel_event()
        try:
            while True:
                threading.Thread(target=stop.wait, daemon=True).start()
        except RuntimeError:  # the pids limit refused a thread
            SEEN.append("crowd hit the pids limit")
        while True:
            pass

    @plugin_command("seen")
    def seen(self) -> list[str]:
        return SEEN
"""
MANIFEST = "limits:\n  pids: 64\ncommands:\n  nap:\n    timeout_seconds: 2\n"


@pytest.fixture(scope="module")
def slowpoke(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Sysops:
    plugin_dir = write_plugin(tmp_path_factory.mktemp("deadlines"), name="slowpoke", code=CODE, manifest_extra=MANIFEST)
    result = sysops.run("plugin", "up", str(plugin_dir), timeout=180)
    assert result.returncode == 0, result.stderr
    return sysops


def seen(sysops: Sysops) -> list[str]:
    result: list[str] = json.loads(sysops.ok("seen", "-o", "json", timeout=30))
    return result


def timed(
    sysops: Sysops, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = sysops.run(*args, timeout=60, env=env)
    return result, time.monotonic() - started


def plugin_container(engine: docker.DockerClient, sysops: Sysops) -> Container:
    containers = installation_containers(engine, sysops.installation_id, running_only=True)
    found: list[Container] = [
        c for c in containers if c.labels.get("sysops.plugin") == "slowpoke" and not c.labels.get("sysops.role")
    ]
    assert len(found) == 1, [c.name for c in containers]
    return found[0]


def test_a_declared_deadline_ends_the_call_and_stops_the_loop(slowpoke: Sysops, engine: docker.DockerClient) -> None:
    result, took = timed(slowpoke, "spin")
    assert result.returncode == 10, result.stderr
    assert 2 <= took < 8, took
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "plugin 'slowpoke': command 'spin' overran its 2s deadline: did not answer within 2s" in lines[0]
    assert "(health: SERVING" in lines[0], lines[0]
    # The loop was interrupted in the plugin: it does not keep its CPU quota.
    container = plugin_container(engine, slowpoke)
    time.sleep(1.5)  # the 1 s grace, then the interruption
    cores = CgroupLocator().sample_cpu_cores(container.attrs["State"]["Pid"], str(container.id), 1.0)
    assert cores is not None and cores < 0.2, cores
    assert "ignored its cancellation for 1s: interrupted" in container.logs().decode()


def test_the_manifest_deadline_ends_a_sleep_early_without_its_side_effect(slowpoke: Sysops) -> None:
    result, took = timed(slowpoke, "nap")
    assert result.returncode == 10, result.stderr
    assert "command 'nap' overran its 2s deadline" in result.stderr and took < 8, (took, result.stderr)
    wait_for(lambda: any(line.startswith("nap ended") for line in seen(slowpoke)), 10, "the nap to end")
    naps = [line for line in seen(slowpoke) if line.startswith("nap")]
    assert "nap finished its side effect" not in naps
    ended = float(naps[-1].split()[-1].rstrip("s"))
    assert ended < 4, naps  # the 8 s sleep ended at the deadline, not 8 s later


def test_the_default_deadline_is_settable_and_the_handler_sees_the_cancellation(slowpoke: Sysops) -> None:
    bad = slowpoke.run("polite", env={"SYSOPS_COMMAND_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "SYSOPS_COMMAND_TIMEOUT='soon' is not a number of seconds" in bad.stderr
    result, took = timed(slowpoke, "polite", env={"SYSOPS_COMMAND_TIMEOUT": "2"})
    assert result.returncode == 10 and "overran its 2s deadline" in result.stderr and took < 8, result.stderr
    wait_for(lambda: "polite saw its cancellation" in seen(slowpoke), 10, "the handler to see its cancellation")


def interruptions(engine: docker.DockerClient, sysops: Sysops) -> int:
    """How many handlers the plugin interrupted so far, from its log ("interrupted (N so far)")."""
    counts = re.findall(r"interrupted \((\d+) so far\)", plugin_container(engine, sysops).logs().decode())
    return max((int(count) for count in counts), default=0)


def abandon_spin(route: Route, outcomes: list[str]) -> None:
    """Call `spin` straight on the instance's socket with a 3 s deadline, as a routed call does."""
    endpoint = route.endpoints[0]
    with PluginClient(endpoint, route.plugin, route.token_for(endpoint)) as client:
        try:
            list(client.invoke("spin", {}, timeout=3))
        except DeadlineExceededError as error:
            outcomes.append(type(error).__name__)


def test_two_dozen_abandoned_loops_leave_the_plugin_answering(slowpoke: Sysops, engine: docker.DockerClient) -> None:
    store = Store(Settings(home=slowpoke.home).store_path)
    try:
        route = store.route("spin")
    finally:
        store.close()
    assert route is not None
    before, started = interruptions(engine, slowpoke), seen(slowpoke).count("spin started")
    # 24 at once (threads, not CLI processes, so they really are concurrent): up to 16 fill the worker threads
    # of the plugin server, the rest wait for one until their deadline passes and never run. On a loaded
    # machine a call can reach the server late (or a health probe holds a worker for a moment), so fewer
    # than 16 may run; never more, since a call whose deadline passed while it waited is never started.
    outcomes: list[str] = []
    calls = [threading.Thread(target=abandon_spin, args=(route, outcomes)) for _ in range(24)]
    for call in calls:
        call.start()
    for call in calls:
        call.join(timeout=30)
    assert outcomes == ["DeadlineExceededError"] * 24
    ran = seen(slowpoke).count("spin started") - started
    assert 0 < ran <= 16, ran
    # After the 1 s grace each loop is interrupted and its worker thread free.
    wait_for(lambda: interruptions(engine, slowpoke) - before == ran, 10, f"all {ran} loops to be interrupted")
    result, took = timed(slowpoke, "ping")
    assert result.returncode == 0 and result.stdout.strip() == "pong", result.stderr
    assert took < 3, took


def test_a_hit_pids_limit_is_named(slowpoke: Sysops) -> None:
    result = slowpoke.run("crowd", timeout=60)
    assert result.returncode == 10, result.stderr
    assert "command 'crowd' overran its 2s deadline" in result.stderr
    assert "pids limit 64 hit" in result.stderr, result.stderr
    time.sleep(1.5)
    assert slowpoke.ok("ping", timeout=30).strip() == "pong"  # the threads waited on the cancellation: gone


def interrupt(sysops: Sysops, command: str, started: int) -> subprocess.CompletedProcess[str]:
    """Run `command`, Ctrl-C it once the plugin runs it (the `started`-th time), and collect what it printed."""
    process = subprocess.Popen(
        [SYSOPS, command], env=sysops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: seen(sysops).count(f"{command} started") >= started, 30, f"{command} to start")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_cancels_the_call_in_the_plugin(slowpoke: Sysops) -> None:
    before = seen(slowpoke).count("polite saw its cancellation")
    result = interrupt(slowpoke, "polite", seen(slowpoke).count("polite started") + 1)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: slowpoke: polite: interrupted (Ctrl-C); the call was cancelled in the plugin"
    ], result.stderr
    wait_for(lambda: seen(slowpoke).count("polite saw its cancellation") > before, 10, "the handler to see the Ctrl-C")


def test_a_killed_client_cancels_the_call_in_the_plugin(slowpoke: Sysops) -> None:
    before = seen(slowpoke).count("polite saw its cancellation")
    started = seen(slowpoke).count("polite started") + 1
    process = subprocess.Popen([SYSOPS, "polite"], env=slowpoke.env, stderr=subprocess.DEVNULL)
    wait_for(lambda: seen(slowpoke).count("polite started") >= started, 30, "polite to start")
    process.kill()  # no Ctrl-C handler runs: the closed connection is what cancels the call
    process.wait(timeout=10)
    wait_for(lambda: seen(slowpoke).count("polite saw its cancellation") > before, 10, "the plugin to see it")


@pytest.fixture
def served(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Sysops]:
    server = Server(tmp_path / "server-home", _free_port())
    server.start()
    env = {
        **os.environ,
        "SYSOPS_HOME": str(tmp_path / "client-home"),
        "SYSOPS_SERVER": f"127.0.0.1:{server.port}",
        "SYSOPS_TOKEN": TOKEN,
        "SYSOPS_INSECURE": "1",  # the test server is plaintext
    }
    try:
        yield Sysops(home=tmp_path / "client-home", env=env)
    finally:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            assert server.process is not None
            server.process.kill()  # still remove what it started
        remote = Sysops(home=server.home, env={})
        remove_installation(engine, remote.installation_id)
        unmount_installation(remote)


def test_through_the_server_deadline_and_ctrl_c_cancel_the_plugin_call(served: Sysops, tmp_path: Path) -> None:
    plugin_dir = write_plugin(tmp_path / "plugin", name="slowpoke", code=CODE, manifest_extra=MANIFEST)
    up = served.run("plugin", "up", str(plugin_dir), timeout=180)
    assert up.returncode == 0, up.stderr
    result, took = timed(served, "spin")
    assert result.returncode == 10 and took < 10, (took, result.stderr)
    assert "plugin 'slowpoke': command 'spin' overran its 2s deadline" in result.stderr
    interrupted = interrupt(served, "polite", 1)
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stderr, interrupted.stderr
    wait_for(lambda: "polite saw its cancellation" in seen(served), 10, "the server to cancel the plugin's call")
