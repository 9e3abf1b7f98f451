"""A TCP port that accepts and closes connections: the kubelet's liveness and readiness probes of an HA replica.

With leader election the standby replica does not listen on the control port, yet it is alive and Ready: its
probes connect here instead, so the kubelet does not restart a standby that is only waiting for the Lease and a
rolling update can go on while a new pod waits on standby. The Service sends calls only to the leader, by the
label it sets on its own pod (leader_label.py), not by readiness.
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
