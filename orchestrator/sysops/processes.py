"""Whether a process still runs, for the things sysops leaves named after the process that made them.

The host launcher waits for a host process to go; `sysops plugin test` sweeps the test containers and test
copies of runs that were killed before they could clean up. Standard library only.
"""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie counts as gone, but only once every thread of it has ended.

    The main thread of a process that exits turns zombie while its other threads may still be exiting, and they
    hold the process's open files (the host's sockets in a plugin's socket directory) until the last one ends:
    a caller that then unmounted that directory found it busy (CI: `umount` after `sysops host stop`).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _state(f"/proc/{pid}/stat")
    if state != "Z":
        return state != ""  # gone between the two looks
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_state(f"/proc/{pid}/task/{thread}/stat") not in ("Z", "X", "") for thread in threads)


def _state(stat_path: str) -> str:
    """The state letter of a /proc stat file ("" when it is gone or unreadable)."""
    try:
        with open(stat_path) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
