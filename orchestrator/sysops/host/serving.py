"""What the resident host serves: the control API and the routed-command socket, over one driver and store.

The control server (server/service.py, the same code `sysops serve` runs in a cluster) re-adopts what
runs, reconciles in the background and supervises every plugin; the call server answers routed commands
(`sysops <command>`) for a CLI that imports no gRPC. Both listen on Unix sockets inside SYSOPS_HOME.
"""

from __future__ import annotations

from dataclasses import dataclass

from sysops.host.call_server import CallServer, start_call_server
from sysops.host.paths import HostPaths
from sysops.server.service import ControlServer, serve
from sysops.settings import Settings


@dataclass
class HostServers:
    """The host's running servers; `stop` ends them (in-flight calls get `grace` seconds)."""

    control: ControlServer
    calls: CallServer

    def stop(self, grace: float) -> None:
        """Stop taking calls, then stop the control server and its loops."""
        self.calls.stop()
        self.control.stop(grace).wait(grace + 1)


def start_host_servers(settings: Settings, paths: HostPaths, runtime: str) -> HostServers:
    """Start the control server (after re-adoption) and then the call server."""
    control = serve(None, runtime, "", settings, unix_socket=paths.control_socket)
    try:
        servicer = control.servicer
        lister = servicer.plugin_list_json if servicer is not None else None
        calls = start_call_server(settings, paths.call_socket, lister=lister)
    except BaseException:
        control.stop(0)
        raise
    return HostServers(control, calls)
