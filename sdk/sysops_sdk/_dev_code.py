"""Development mode (`sysops plugin up --dev`): import the plugin's code from the host's read-only snapshot.

The orchestrator mounts the plugin's code snapshots read-only at /plugin-dev (one directory per code
fingerprint) and names the one to run in SYSOPS_DEV_CODE. A *spare* instance is started before its code
exists, with SYSOPS_DEV_CODE=claim: it gets as far as it can without the code (the interpreter, gRPC and the
SDK imported) and then blocks, using no CPU, in the open of a FIFO in its socket directory until the host
claims it by writing the fingerprint there. The fingerprint is then kept in the socket directory (its
tmpfs outlives a restart of the process), so a restarted spare runs the same code without a second claim.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import threading

DEV_CODE_ENV = "SYSOPS_DEV_CODE"
#: Where the orchestrator mounts the plugin's code snapshots (read-only).
DEV_ROOT = "/plugin-dev"
#: SYSOPS_DEV_CODE of a spare: wait for the host to say which code to run.
CLAIM = "claim"
#: The FIFO a spare waits on; the host writes the fingerprint into it.
CLAIM_FIFO = "claim"
#: Where a claimed spare keeps its fingerprint (for a restart of its process).
CLAIMED_FILE = "claimed"
_FINGERPRINT = re.compile(r"dev-[0-9a-f]{64}")
_MAX_CLAIM_BYTES = 256


class DevCodeError(Exception):
    """The development-mode code to run is not valid (a malformed fingerprint, a missing snapshot)."""


def use_dev_code(socket_dir: str) -> str | None:
    """Put the development-mode code first on sys.path (after a claim, for a spare); return its directory, or
    None when the image carries the code (production)."""
    wanted = os.environ.get(DEV_CODE_ENV, "")
    if not wanted:
        return None
    fingerprint = _claimed(socket_dir) if wanted == CLAIM else wanted
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise DevCodeError(f"development-mode code {fingerprint[:80]!r} is not a code fingerprint")
    directory = f"{DEV_ROOT}/{fingerprint}"
    if not os.path.isdir(directory):
        raise DevCodeError(f"development-mode code {fingerprint[:16]} is not mounted at {DEV_ROOT}")
    sys.path[0:0] = [directory, f"{directory}/src"]
    return directory


def _exit_at_once(signum: int, frame: object) -> None:
    os._exit(0)


def _claimed(socket_dir: str) -> str:
    """The fingerprint this spare was claimed for: kept from an earlier claim, or waited for."""
    kept = os.path.join(socket_dir, CLAIMED_FILE)
    try:
        with open(kept, encoding="ascii") as handle:
            return handle.read(_MAX_CLAIM_BYTES).strip()
    except FileNotFoundError:
        pass
    fifo = os.path.join(socket_dir, CLAIM_FIFO)
    try:
        os.mkfifo(fifo, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
            raise DevCodeError(f"{fifo} is not a FIFO") from None
    os.chmod(fifo, 0o622)  # the host may run as another user than the plugin; its directory keeps others out
    # PID 1 of its container: without a handler, SIGTERM would be ignored and removing a spare would wait for SIGKILL.
    handles = threading.current_thread() is threading.main_thread()  # only the main thread sets handlers
    previous = signal.signal(signal.SIGTERM, _exit_at_once) if handles else None
    try:
        with open(fifo, "rb") as claim:  # blocks until the host opens it to write
            fingerprint = claim.read(_MAX_CLAIM_BYTES).decode("ascii", "replace").strip()
    finally:
        if handles:
            signal.signal(signal.SIGTERM, previous)
    os.unlink(fifo)  # claimed once: nothing answers a second writer
    staged = f"{kept}.tmp"
    with open(staged, "w", encoding="ascii") as handle:
        handle.write(fingerprint)
    os.replace(staged, kept)
    return fingerprint
