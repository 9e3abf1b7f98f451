"""A TCP port that accepts and closes connections: the kubelet's liveness probe of an HA server replica.

With leader election the standby replica does not listen on the control port (so its readiness probe fails
and the Service sends it nothing), yet it is alive: its liveness probe connects here instead, and the
kubelet does not restart a standby that is only waiting for the Lease.
"""

from __future__ import annotations

import socket
import threading


def serve_liveness(port: int, host: str = "0.0.0.0") -> socket.socket:  # the kubelet probes the pod IP
    """Listen on `host:port` and accept-and-close every connection in a daemon thread; return the socket."""
    listener = socket.create_server(
        (host, port),
    )

    def accept_forever() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            connection.close()

    threading.Thread(target=accept_forever, name="sysops-liveness", daemon=True).start()
    return listener
