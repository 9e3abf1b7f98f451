"""The host's files and the launcher's checks, without starting a host (tests/integration/test_host.py does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sysops.host import launcher
from sysops.host.paths import host_paths
from sysops.settings import Settings


def test_sockets_are_inside_sysops_home_when_the_path_fits(tmp_path: Path) -> None:
    paths = host_paths(Settings(home=tmp_path / "home"))
    assert paths.control_socket == tmp_path / "home" / "host.sock"
    assert paths.call_socket.parent == paths.record.parent == tmp_path / "home"


def test_a_home_too_deep_for_a_socket_path_uses_the_private_run_directory(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ("deep-" * 20) / "home")
    paths = host_paths(settings)
    assert paths.control_socket.parent == settings.run_dir
    assert len(str(paths.control_socket)) < 108 and len(str(paths.call_socket)) < 108
    assert paths.record.parent == settings.home  # only the sockets move


def test_a_record_naming_a_process_that_is_not_a_host_is_never_signalled(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = {"pid": bystander.pid, "protocol": launcher.HOST_PROTOCOL, "started": 0, "runtime": "docker"}
        host_paths(settings).record.write_text(json.dumps(record))
        assert launcher.stop_host(settings) is None
        assert bystander.poll() is None, "stop_host signalled a process that is not a sysops host"
        assert launcher.running_host(settings) is None  # and it is not taken for a running host (no socket)
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("content", ["", "{", "[]", '{"pid": "x"}', '{"pid": 1}'])
def test_an_unreadable_record_means_no_host(tmp_path: Path, content: str) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    host_paths(settings).record.write_text(content)
    assert launcher.read_record(host_paths(settings)) is None


def test_the_last_log_line_is_capped_and_says_no_log_when_there_is_none(tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    assert launcher.last_log_line(log) == "no log"
    log.write_bytes(b"first\n" + b"x" * 5000 + b"\n\n")
    assert launcher.last_log_line(log) == "x" * 500
    assert os.path.exists(log)


def test_only_the_process_listening_on_the_control_socket_is_stopped_and_only_if_it_is_a_host(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    paths = host_paths(settings)
    # Listens on the control socket, but is no sysops host (argv has 'run' and 'host', not 'host run').
    script = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    impostor = subprocess.Popen(
        [sys.executable, "-c", script, str(paths.control_socket), "run", "--network", "host"], stdout=subprocess.PIPE
    )
    try:
        assert impostor.stdout is not None and impostor.stdout.readline() == b"ready\n"
        record = {"pid": impostor.pid, "protocol": launcher.HOST_PROTOCOL, "started": 0, "runtime": "docker"}
        paths.record.write_text(json.dumps(record))
        assert launcher.listener(paths.control_socket) == (impostor.pid, os.geteuid())
        assert launcher.stop_host(settings) is None
        assert impostor.poll() is None, "stop_host signalled a process that is not a sysops host"
    finally:
        impostor.kill()
        impostor.wait()


def test_a_host_started_with_other_settings_is_not_current(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in launcher.HOST_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYSOPS_READY_TIMEOUT", "20")
    monkeypatch.setenv("SYSOPS_RAW_OUTPUT", "1")  # the CLI's own: never a reason to replace the host
    record = launcher.HostRecord(1, launcher.HOST_PROTOCOL, 0.0, "docker", {"SYSOPS_READY_TIMEOUT": "20"})
    assert launcher._current(record)
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere.sock")
    assert not launcher._current(record)
    assert launcher._difference(record) == "DOCKER_HOST differ from the environment it was started with"


def test_the_holder_of_the_host_lock_is_found_in_the_kernels_lock_table(tmp_path: Path) -> None:
    lock = tmp_path / "host.lock"
    lock.touch()
    assert launcher.lock_holder(lock) is None
    script = (
        "import fcntl, sys, time\n"
        "f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
        "time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert launcher.lock_holder(lock) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert launcher.lock_holder(lock) is None
