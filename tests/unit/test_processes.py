"""process_alive: a process whose main thread is a zombie still runs while another thread of it does."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sysops.processes import process_alive

#: The exit system call (one thread), not exit_group: the main thread ends and the process goes on.
_SYS_EXIT = {"x86_64": 60, "aarch64": 93}


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_a_zombie_main_thread_with_a_thread_still_running_is_alive() -> None:
    """As a host's main thread after it returned while its other threads still ran their exit: its files (the
    sockets in a plugin's socket directory) stay open until the last thread ends, so it is not gone yet."""
    number = _SYS_EXIT.get(os.uname().machine)
    if number is None or not os.path.isdir("/proc/self/task"):
        pytest.skip(f"the exit system call of {os.uname().machine} is not known to this test (Linux x86_64, aarch64)")
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        f"ctypes.CDLL(None).syscall({number}, 0)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(child.pid) == "Z"  # the main thread ended ...
        assert process_alive(child.pid)  # ... the other one has not
        child.kill()
        deadline = time.monotonic() + 10
        while process_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not process_alive(child.pid)  # a zombie with no thread left (not reaped yet) is gone
        assert child.poll() is not None
    finally:
        child.kill()
        child.wait()


def test_gone_and_running_processes() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)


@pytest.mark.parametrize("pid", [2**22 + 7])
def test_a_pid_nobody_has_is_gone(pid: int) -> None:
    assert not process_alive(pid)
