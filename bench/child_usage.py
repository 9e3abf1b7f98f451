"""The CPU seconds and peak RSS of one command's own process, not those of the process that started it.

`os.wait4` of a child started by `subprocess.Popen` reports as its peak RSS the larger of the child's own and the
RSS of its parent when it forked: Linux keeps the high-water mark of the memory an exec replaces, and Popen
forks (or vforks, sharing the parent's memory) before it execs. A benchmark runner that had grown to 229 MiB
therefore reported 229 MiB for `sysops plugin logs` and for `docker logs` alike (bench/results of session 6).
`start_measured` starts the command through a small launcher (`python -S`, about 10 MiB: the floor of the
figure) that forks and execs it and reports its rusage; `finish_measured` waits and reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}".encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Usage:
    """A command's exit code, its own CPU seconds (user + system) and its peak RSS in KiB."""

    returncode: int
    cpu: float
    max_rss_kib: int


@dataclass
class Measured:
    """A command started by `start_measured`: its process (the launcher) and where its usage will be written."""

    process: subprocess.Popen[bytes]
    report: int


def start_measured(argv: Sequence[str], env: Mapping[str, str], **popen: Any) -> Measured:
    """Start `argv` through the launcher; `popen` is passed to Popen (stdout=, stderr=...)."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(write_end), *argv],
            env=dict(env),
            pass_fds=(write_end,),
            **popen,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return Measured(process, read_end)


def finish_measured(measured: Measured) -> Usage:
    """Wait for the command; its exit code and usage (CPU 0 and RSS 0 if the launcher could not report it)."""
    returncode = measured.process.wait()
    with os.fdopen(measured.report, "rb") as report:
        fields = report.read().split()
    if len(fields) != 2:
        return Usage(returncode, 0.0, 0)
    return Usage(returncode, float(fields[0]), int(fields[1]))
