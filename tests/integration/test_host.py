"""The resident host on the real engine (issue 9 item 1): started by the first command, one per installation,
private sockets, managed by `sysops host`, and after `kill -9` started again by the next command, which
re-adopts what runs: no duplicate, no orphan, history kept.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    host_processes,
    installation_containers,
    plugin_code,
    wait_for,
    write_plugin,
)

pytestmark = pytest.mark.integration


def host_pid(sysops: Sysops) -> int:
    return int(json.loads((sysops.home / "host.json").read_text())["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_first_command_starts_one_private_host_that_outlives_it(fresh_sysops: Sysops) -> None:
    assert fresh_sysops.run("host", "status").returncode == 8  # nothing started it yet
    fresh_sysops.ok("plugin", "ls")
    pid = host_pid(fresh_sysops)
    assert alive(pid), "the host stopped with the CLI that started it"
    home = fresh_sysops.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("host.sock", "call.sock"):
        info = (home / name).lstat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, name
    assert stat.S_IMODE((home / "host.json").stat().st_mode) == 0o600
    status = json.loads(fresh_sysops.ok("host", "status", "--output", "json"))
    assert status["state"] == "running" and status["pid"] == pid
    fresh_sysops.ok("plugin", "ls")
    assert host_pid(fresh_sysops) == pid, "a second command started a second host"
    assert "serving" in fresh_sysops.ok("host", "logs", "--tail", "5")
    fresh_sysops.ok("host", "stop")
    assert not alive(pid)
    assert not (home / "host.sock").exists() and not (home / "host.json").exists()
    assert fresh_sysops.run("host", "status").returncode == 8
    stopped = fresh_sysops.run("host", "stop")
    assert stopped.returncode == 8 and stopped.stderr.startswith("error: no sysops host runs"), stopped.stderr


def test_clis_started_at_once_start_one_host(fresh_sysops: Sysops) -> None:
    processes = [
        subprocess.Popen([SYSOPS, "plugin", "ls"], env=fresh_sysops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert len(host_processes(fresh_sysops.home.parent)) == 1
    second = subprocess.run(
        [SYSOPS, "host", "run"], env=fresh_sysops.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert second.returncode != 0 and "already runs" in second.stderr, second.stderr


def test_after_kill_9_the_next_command_starts_the_host_again_and_it_re_adopts(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugin = write_plugin(tmp_path / "src", name="steady", code=plugin_code("steady", command="steady-ping"))
    fresh_sysops.ok("plugin", "up", str(plugin))
    before = {c.id for c in installation_containers(engine, fresh_sysops.installation_id, running_only=True)}
    first = host_pid(fresh_sysops)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), 10, "the host to die")
    assert fresh_sysops.ok("steady-ping") == "pong\n"  # the routed path starts the host again
    second = host_pid(fresh_sysops)
    assert second != first and alive(second)
    after = {c.id for c in installation_containers(engine, fresh_sysops.installation_id, running_only=True)}
    assert after == before, "the new host replaced or duplicated the running plugin"
    listed = json.loads(fresh_sysops.ok("plugin", "ls", "--output", "json"))
    assert [(p["name"], p["state"]) for p in listed] == [("steady", "Active")]
    assert len(json.loads(fresh_sysops.ok("plugin", "history", "steady", "--output", "json"))) == 1
    assert len(host_processes(fresh_sysops.home.parent)) == 1


def test_a_host_of_another_protocol_is_replaced(fresh_sysops: Sysops) -> None:
    fresh_sysops.ok("plugin", "ls")
    old = host_pid(fresh_sysops)
    record = json.loads((fresh_sysops.home / "host.json").read_text())
    (fresh_sysops.home / "host.json").write_text(json.dumps({**record, "protocol": "0"}))
    fresh_sysops.ok("plugin", "ls")
    assert not alive(old) and host_pid(fresh_sysops) != old


def test_a_host_whose_installation_is_removed_stops_by_itself(fresh_sysops: Sysops) -> None:
    fresh_sysops.ok("plugin", "ls")
    pid = host_pid(fresh_sysops)
    (fresh_sysops.home / "host.sock").unlink()
    wait_for(lambda: not alive(pid), 15, "the orphaned host to stop")


def test_a_cli_with_other_settings_replaces_the_host_and_says_so(fresh_sysops: Sysops) -> None:
    fresh_sysops.ok("plugin", "ls")
    first = host_pid(fresh_sysops)
    other = fresh_sysops.run("plugin", "ls", env={"SYSOPS_READY_TIMEOUT": "21"})
    assert other.returncode == 0, other.stderr
    assert "restarting the sysops host: SYSOPS_READY_TIMEOUT differ" in other.stderr
    assert not alive(first) and host_pid(fresh_sysops) != first
    environment = json.loads((fresh_sysops.home / "host.json").read_text())["environment"]
    assert environment["SYSOPS_READY_TIMEOUT"] == "21"


def test_a_lost_record_is_written_again_and_a_lost_call_socket_ends_the_host(fresh_sysops: Sysops) -> None:
    fresh_sysops.ok("plugin", "ls")
    pid = host_pid(fresh_sysops)
    (fresh_sysops.home / "host.json").unlink()
    wait_for(lambda: (fresh_sysops.home / "host.json").exists(), 10, "the host to write host.json again")
    assert host_pid(fresh_sysops) == pid
    (fresh_sysops.home / "call.sock").unlink()
    wait_for(lambda: not alive(pid), 15, "the host without its call socket to stop")
    fresh_sysops.ok("plugin", "ls")  # and the next command starts a whole one
    assert host_pid(fresh_sysops) != pid and (fresh_sysops.home / "call.sock").exists()
