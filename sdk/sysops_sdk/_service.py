"""A service plugin's loop inside the plugin server: its thread, its health entry and its restart policy.

The plugin server starts `run()` in a thread once the instance serves, and reports the loop on the gRPC
health service's `sysops.service` entry: SERVING while run() runs, NOT_SERVING once it ended. The manifest's
`service.restart` reaches the plugin as env SYSOPS_SERVICE_RESTART (set by the orchestrator):

- `on-failure` (the default): run() raising ends the process with EXIT_SERVICE, so the runtime (the Docker
  engine's restart policy, the kubelet) starts the instance again and counts the restart; run() returning
  leaves the instance serving its commands with the service stopped.
- `always`: run() raising or returning ends the process with EXIT_SERVICE.
- `never`: the instance stays; its overall health stays SERVING (commands answer) and `sysops.service` is
  NOT_SERVING.

Either way the server prints one line saying why (`SERVICE_STOPPED_PREFIX`), which `plugin status` shows. A
loop that ends because the instance shuts down (`stopping` set) is the normal end and changes nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from sysops_sdk._types import ServicePlugin

#: The health service entry that reflects the service loop.
SERVICE_HEALTH = "sysops.service"
#: The env variable carrying the manifest's `service.restart`.
RESTART_ENV = "SYSOPS_SERVICE_RESTART"
RESTART_POLICIES = ("always", "on-failure", "never")
DEFAULT_RESTART = "on-failure"
#: Exit code of a plugin server whose service loop ended and whose policy restarts it.
EXIT_SERVICE = 6
#: How the server's line about a stopped loop starts (after "sysops-plugin: "); the orchestrator looks for it.
SERVICE_STOPPED_PREFIX = "service loop stopped: "


def restart_policy() -> str:
    """The restart policy from the environment (an unknown value is the default, said once on stderr)."""
    value = os.environ.get(RESTART_ENV, "") or DEFAULT_RESTART
    if value not in RESTART_POLICIES:
        allowed = ", ".join(RESTART_POLICIES)
        line = f"sysops-plugin: {RESTART_ENV}={value!r} is not one of {allowed}; using {DEFAULT_RESTART}"
        print(line, file=sys.stderr, flush=True)
        return DEFAULT_RESTART
    return value


class ServiceLoop:
    """Runs a ServicePlugin's `run()` in a daemon thread and applies the restart policy when it ends."""

    def __init__(
        self, plugin: ServicePlugin, health_servicer: health.HealthServicer, exit_process: Callable[[int], None]
    ) -> None:
        self.plugin = plugin
        self.health = health_servicer
        self.exit_process = exit_process
        self.policy = restart_policy()
        #: Why the loop ended ("" while it runs or before it started).
        self.reason = ""
        self._thread = threading.Thread(target=self._run, name="sysops-service", daemon=True)

    def start(self) -> None:
        """Report the service SERVING and start the loop."""
        self.health.set(SERVICE_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the loop to end (`stopping`) and wait up to `timeout` seconds for it."""
        self.plugin.stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.plugin.run()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = str(exc).strip().splitlines()
            self._ended(f"run() raised {type(exc).__name__}" + (f": {message[0]}" if message else ""), failed=True)
        else:
            self._ended("run() returned", failed=False)

    def _ended(self, reason: str, failed: bool) -> None:
        if self.plugin.stopping.is_set():
            return  # the instance is shutting down: the loop did what it was asked
        self.reason = reason
        self.health.set(SERVICE_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING)
        restart = self.policy == "always" or (failed and self.policy == "on-failure")
        then = (
            "exiting so the runtime restarts the instance"
            if restart
            else "the instance keeps serving its commands without it"
        )
        line = f"sysops-plugin: {SERVICE_STOPPED_PREFIX}{reason}; restart {self.policy}: {then}"
        print(line, file=sys.stderr, flush=True)
        if restart:
            self.exit_process(EXIT_SERVICE)
