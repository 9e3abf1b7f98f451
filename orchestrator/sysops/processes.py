"""Whether a process still runs, for the things sysops leaves named after the process that made them.

The host launcher waits for a host process to go; `sysops plugin test` sweeps the test containers and test
copies of runs that were killed before they could clean up. Standard library only.
"""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie child of ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
