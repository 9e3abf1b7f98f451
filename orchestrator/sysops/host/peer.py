"""Who is at the other end of a Unix socket (SO_PEERCRED), for the host and its clients alike.

Both sides of the host's sockets check it: the host refuses callers that are neither its user nor root,
the CLI refuses a socket served by another user, and the launcher finds the host's pid by the process
listening on its control socket. Kept free of heavy imports: the routed-command path uses it.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(connection: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of the connected Unix socket `connection`."""
    pid, uid, _gid = _CREDENTIALS.unpack(
        connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    )
    return pid, uid


def listener(path: Path, timeout: float = 1.0) -> tuple[int, int] | None:
    """(pid, uid) of the process listening on the Unix socket `path`, or None if none answers."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
        return peer_credentials(probe)
    except OSError:
        return None
    finally:
        probe.close()
