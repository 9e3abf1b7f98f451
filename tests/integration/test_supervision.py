"""Supervision through `sysops serve` on the real engine (issue 9 item 2).

A command that wedges its plugin's whole process (a catastrophic regular expression holds the interpreter
lock, so the gRPC health service never answers) gets the instance restarted in place within
`interval_s * failures` plus slack, with an `unresponsive` then a `restarted` event; another plugin answers
all along, and the wedged plugin's commands route again afterwards to the same container.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    installation_containers,
    plugin_code,
    remove_installation,
    unmount_installation,
    write_plugin,
)
from tests.integration.test_hardening_gaps import LoggedServer
from tests.integration.test_server import TOKEN, _free_port

pytestmark = pytest.mark.integration
LIVENESS = "liveness:\n  interval_s: 1\n  timeout_s: 1\n  failures: 2\n"
#: Seconds from the wedge to the restart the test allows: interval * failures, the probe timeout, the
#: SIGTERM grace of the restart (1 s), and slack for a loaded machine.
WINDOW = 1 * 2 + 1 + 1 + 8

# The template's class body ends with its `wedge-ping` command; the wedging command is appended to it.
WEDGE_CODE = (
    "import re\n"
    + plugin_code("wedge", command="wedge-ping")
    + """
    @plugin_command("wedge-hang")
    def hang(self) -> str:
        # Exponential backtracking in C: the interpreter lock is never released, so nothing else in the
        # process runs, the gRPC health service included.
        re.match(r"(a+)+$", "a" * 64 + "b")
        return "never"
"""
)
STEADY_CODE = plugin_code("steady", command="steady-ping", answer="steady")
#: Wedges on command, and again half a second after every start once it did: restarts cannot help.
RELAPSE_CODE = (
    "import re, threading, time\nfrom pathlib import Path\n"
    + plugin_code(
        "relapse",
        command="relapse-ping",
        initialize='if Path("/data/wedged").exists(): threading.Thread(target=self._wedge, daemon=True).start()',
    )
    + """
    def _wedge(self) -> None:
        time.sleep(0.5)
        re.match(r"(a+)+$", "a" * 64 + "b")

    @plugin_command("relapse-wedge")
    def wedge(self) -> str:
        Path("/data/wedged").touch()
        re.match(r"(a+)+$", "a" * 64 + "b")
        return "never"
"""
)


@dataclass
class Supervised:
    server: LoggedServer
    cli: Sysops
    installation: str


@pytest.fixture
def supervised(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Supervised]:
    server = LoggedServer(tmp_path / "server-home", _free_port(), tmp_path / "server.log")
    server.start()
    env = {**os.environ, "SYSOPS_HOME": str(tmp_path / "client-home"), "SYSOPS_SERVER": f"127.0.0.1:{server.port}"}
    cli = Sysops(home=tmp_path / "client-home", env={**env, "SYSOPS_TOKEN": TOKEN, "SYSOPS_INSECURE": "1"})  # plaintext
    backend = Sysops(home=server.home, env={})
    try:
        for name, code in (("wedge", WEDGE_CODE), ("steady", STEADY_CODE)):
            directory = write_plugin(tmp_path / name, name=name, code=code, manifest_extra=LIVENESS)
            up = cli.run("plugin", "up", str(directory), timeout=180)
            assert up.returncode == 0, up.stderr
        yield Supervised(server, cli, backend.installation_id)
    finally:
        server.stop()
        remove_installation(engine, backend.installation_id)
        unmount_installation(backend)


def _events(cli: Sysops, plugin: str) -> list[dict[str, object]]:
    listed = cli.run("events", "--plugin", plugin, "--output", "json", timeout=30)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def _containers(engine: docker.DockerClient, installation: str, plugin: str) -> list[str]:
    return [
        c.id
        for c in installation_containers(engine, installation)
        if c.labels.get("sysops.plugin") == plugin and not c.labels.get("sysops.role")
    ]


def test_a_wedged_plugin_is_restarted_in_place_while_another_keeps_serving(
    supervised: Supervised, engine: docker.DockerClient
) -> None:
    cli = supervised.cli
    assert cli.ok("wedge-ping").strip() == "pong"
    before = _containers(engine, supervised.installation, "wedge")
    earlier = _events(cli, "wedge")
    assert "unresponsive" not in [e["kind"] for e in earlier], earlier
    mark = max(int(str(e["id"])) for e in earlier)
    hang = subprocess.Popen(
        [SYSOPS, "wedge-hang"], env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wedged_at = time.monotonic()
    steady_answers: list[str] = []
    try:
        restarted: list[dict[str, object]] = []
        while time.monotonic() - wedged_at < WINDOW + 10:
            steady = cli.run("steady-ping", timeout=30)
            assert steady.returncode == 0 and steady.stdout.strip() == "steady", steady.stderr
            steady_answers.append(steady.stdout)
            kinds = [e for e in _events(cli, "wedge") if int(str(e["id"])) > mark]
            restarted = [e for e in kinds if e["kind"] == "restarted"]
            if restarted:
                break
        took = time.monotonic() - wedged_at
        assert restarted, f"no restart within {took:.1f}s; events: {kinds}"
        assert took < WINDOW, f"restarted after {took:.1f}s, the window is {WINDOW}s"
        print(f"restarted {took:.1f}s after the wedge; steady answered {len(steady_answers)} times; {kinds}")
        assert [e["kind"] for e in kinds][:2] == ["unresponsive", "restarted"]
        assert "health check failed 2 times in a row (no answer within 1s)" in str(kinds[0]["message"])
        deadline = time.monotonic() + 30
        while (again := cli.run("wedge-ping", timeout=30)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert again.returncode == 0 and again.stdout.strip() == "pong", again.stderr
        assert _containers(engine, supervised.installation, "wedge") == before, "the same container, restarted"
        _, hang_error = hang.communicate(timeout=30)
        errors = [line for line in hang_error.splitlines() if not line.startswith("warning: talking plaintext")]
        assert hang.returncode not in (0, None) and len(errors) == 1, hang_error  # one line beside the warning
        print(f"the wedged call ended with exit {hang.returncode}: {hang_error.strip()}")
        assert cli.ok("steady-ping").strip() == "steady"
        assert len(steady_answers) >= 2
    finally:
        hang.kill()
        hang.wait(timeout=10)


def test_a_plugin_that_wedges_again_after_each_restart_ends_failed_with_the_reason(
    supervised: Supervised, engine: docker.DockerClient, tmp_path: Path
) -> None:
    """Three restarts (each after the 3 s start window and the backoff) do not help: the instance is removed
    and the plugin is Failed, saying why; the other plugins keep serving."""
    cli = supervised.cli
    readiness = "readiness:\n  timeout_seconds: 3\n"
    directory = write_plugin(
        tmp_path / "relapse", name="relapse", code=RELAPSE_CODE, manifest_extra=LIVENESS + readiness
    )
    assert cli.run("plugin", "up", str(directory), timeout=180).returncode == 0
    hang = subprocess.Popen([SYSOPS, "relapse-wedge"], env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 90:
            kinds = [e["kind"] for e in _events(cli, "relapse")]
            if "failed" in kinds:
                break
            assert cli.ok("steady-ping").strip() == "steady"
            time.sleep(1)
        took = time.monotonic() - started
        assert kinds[-8:] == ["unresponsive", "restarted"] * 3 + ["unresponsive", "failed"], kinds
        status = json.loads(cli.ok("plugin", "status", "relapse", "--output", "json"))
        assert status["state"] == "Failed", status
        assert str(status["last_error"]).startswith(
            "Failed after 3 restarts: unresponsive: health check failed 2 times"
        )
        assert _containers(engine, supervised.installation, "relapse") == []
        assert cli.ok("wedge-ping").strip() == "pong"
        print(f"Failed {took:.1f}s after the wedge: {status['last_error']}")
    finally:
        hang.kill()
        hang.wait(timeout=10)
