"""The CLI as people expect on the real engine (issue 14 item 3): rich progress and tables on a terminal,
plain lines and columns to a pipe, and completion of a running plugin's command from the stored routes with
the host stopped, starting neither the host nor a container."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.conftest import SYSOPS, Sysops, copy_example, installation_containers

#: A live rich display hides the cursor while it draws.
LIVE_DISPLAY = "\x1b[?25l"


def on_terminal(
    argv: list[str], env: dict[str, str], *, no_color: bool = False, timeout: float = 300
) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal; its exit code and everything it showed."""
    leader, follower = pty.openpty()
    terminal_env = {**env, "TERM": "xterm", "COLUMNS": "160"}
    terminal_env.pop("NO_COLOR", None)
    if no_color:
        terminal_env["NO_COLOR"] = "1"
    process = subprocess.Popen(argv, env=terminal_env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                shown += data
            elif process.poll() is not None:
                break
            assert time.monotonic() < deadline, f"{argv} did not end in {timeout}s"
        return process.wait(timeout=30), shown.decode(errors="replace")
    finally:
        process.kill()
        os.close(leader)


@pytest.fixture(scope="module")
def hello(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/hello brought up from a terminal (what it showed is checked by the first test)."""
    plugin_dir = copy_example("hello", tmp_path_factory.mktemp("plugins"))
    code, shown = on_terminal([SYSOPS, "plugin", "up", str(plugin_dir)], sysops.env)
    assert code == 0, shown
    (plugin_dir.parent / "up-on-a-terminal.txt").write_text(shown)
    return plugin_dir


def test_up_on_a_terminal_shows_a_live_spinner_and_every_line(hello: Path) -> None:
    shown = (hello.parent / "up-on-a-terminal.txt").read_text()
    assert LIVE_DISPLAY in shown
    assert "• building image" in shown and "hello 1.0.0 ready" in shown


def test_down_to_a_pipe_is_plain_lines(sysops: Sysops, hello: Path) -> None:
    sysops.ok("plugin", "up", str(hello))  # already running: one line
    done = sysops.run("plugin", "rollback", "hello")  # a single revision: refused, one plain error line
    assert "\x1b" not in done.stderr
    listed = sysops.run("plugin", "ls")
    assert listed.returncode == 0 and "\x1b" not in listed.stdout
    assert listed.stdout.splitlines()[0].split()[:2] == ["NAME", "STATE"]


def test_ls_on_a_terminal_is_a_rich_table_and_no_color_is_plain(sysops: Sysops, hello: Path) -> None:
    code, shown = on_terminal([SYSOPS, "plugin", "ls", "-o", "wide"], sysops.env)
    assert code == 0 and "\x1b[1m" in shown and "IMAGE" in shown and "hello" in shown
    code, shown = on_terminal([SYSOPS, "plugin", "ls"], sysops.env, no_color=True)
    assert code == 0 and "\x1b" not in shown and shown.split()[:2] == ["NAME", "STATE"]


def test_ls_as_yaml(sysops: Sysops, hello: Path) -> None:
    [row] = yaml.safe_load(sysops.ok("plugin", "ls", "-o", "yaml"))
    assert row["name"] == "hello" and "greet" in row["commands"]


def test_completion_of_a_plugin_command_starts_no_host_and_no_container(
    sysops: Sysops, hello: Path, engine: docker.DockerClient
) -> None:
    sysops.stop_host()
    assert sysops.run("host", "status").returncode == 8
    before = sorted(c.id for c in installation_containers(engine, sysops.installation_id))
    completing = {"_SYSOPS_COMPLETE": "bash_complete", "COMP_WORDS": "sysops greet World --", "COMP_CWORD": "3"}
    done = sysops.run(env=completing)
    assert done.returncode == 0, done.stderr
    assert {"plain,--greeting", "plain,--times", "plain,--shout"} <= set(done.stdout.split())
    done = sysops.run(env={**completing, "COMP_WORDS": "sysops gr", "COMP_CWORD": "1"})
    assert done.stdout.split() == ["plain,greet"]
    assert sysops.run("host", "status").returncode == 8  # still stopped
    assert sorted(c.id for c in installation_containers(engine, sysops.installation_id)) == before
