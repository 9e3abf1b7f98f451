"""Spare instances of development mode: a save is served by a process that is already up.

After each development-mode roll (`plugin up --dev`, imaging/dev_code.py) the rollout starts one spare
instance of the plugin: the same image, limits and mounts, started with no code to run
(SYSOPS_DEV_CODE=claim), so its container, interpreter, gRPC and SDK are up and it waits, using no CPU, in
the open of a FIFO in its socket directory (sysops_sdk/_dev_code.py). The next development roll claims it
by writing the new code's fingerprint there instead of starting a container: what is left is importing the
plugin's code, `initialize()` and the readiness checks every new instance passes. A spare is claimed only by
a roll whose image, manifest and host endpoint are the ones it was started for (its `sysops.spare` label);
any other is removed, and so are a plugin's spares once it rolls out of development mode. In the store a
spare is an inactive instance of revision 0 (no revision has that number) whose container carries the
label; reconciliation keeps it while it runs and never adopts one as a serving instance. A claim is
recorded (`Store.claim`: the instance's revision and the code's fingerprint, which its container's labels
cannot say) before the spare is told, and told again by reconciliation if a reboot emptied the socket
directory that kept it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from sysops_sdk.wire import CLAIM_FIFO, CLAIMED_FILE

from sysops.store import InstanceRecord

#: The revision number of a spare instance in the store (real revisions start at 1).
SPARE_REVISION = 0
#: The label of a spare's container: the key of what it was started for (`spare_key`).
LABEL_SPARE = "sysops.spare"
_CLAIM_RETRY_SECONDS = 0.005


def is_spare(instance: InstanceRecord) -> bool:
    """Whether a stored instance is an unclaimed spare."""
    return instance.revision == SPARE_REVISION and not instance.active


def spare_key(image_id: str, manifest: dict[str, Any], host_endpoint: str) -> str:
    """What a spare was started for: a roll with another image, manifest or host endpoint cannot claim it."""
    described = json.dumps([image_id, manifest, host_endpoint], sort_keys=True, default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:32]


def send_claim(socket_dir: Path, fingerprint: str, timeout: float) -> None:
    """Tell a spare which code to run, waiting up to `timeout` seconds for it to reach its FIFO (a spare started
    moments ago is still importing); raise OSError if it does not, or if what is there is not a FIFO."""
    fifo = socket_dir / CLAIM_FIFO
    deadline = time.monotonic() + timeout
    while True:
        try:
            # Non-blocking: ENXIO while no reader has it open; never follows a link the plugin could have put there.
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            break
        except OSError as exc:
            # No reader yet (ENXIO), no FIFO yet (ENOENT), or not yet opened to the host's user (EACCES, between
            # the spare's mkfifo and chmod): a spare still starting.
            if exc.errno not in (errno.ENXIO, errno.ENOENT, errno.EACCES) or time.monotonic() > deadline:
                raise
            time.sleep(_CLAIM_RETRY_SECONDS)
    try:
        if not stat.S_ISFIFO(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, f"{fifo} is not a FIFO")
        os.write(descriptor, fingerprint.encode("ascii") + b"\n")
    finally:
        os.close(descriptor)


def reclaim(socket_dir: Path, fingerprint: str) -> None:
    """Give a claimed spare its code again if it waits for it: its socket directory was made anew (a reboot
    empties the tmpfs that kept its claim) and its process restarted as a spare. Best effort, never waits:
    reconciliation calls it on every pass."""
    if (socket_dir / CLAIMED_FILE).exists():
        return
    with contextlib.suppress(OSError):
        send_claim(socket_dir, fingerprint, timeout=0)
