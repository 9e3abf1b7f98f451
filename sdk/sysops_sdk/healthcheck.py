"""`python -m sysops_sdk.healthcheck [ADDRESS [TIMEOUT]]`: exit 0 when the plugin answers SERVING within
TIMEOUT seconds (default 1), else 1.

For platforms without native gRPC probes (Kubernetes before 1.24): the exec readiness and liveness probes.
Called with a TIMEOUT (the livenessProbe's form), it also keeps its verdict in the container's termination
log (/dev/termination-log, which the kubelet reads when the container ends): the failures in a row and why,
emptied by an answer. So when the kubelet kills a wedged plugin, the pod's last termination says it was
unresponsive (`lastState.terminated.message`), which the orchestrator names in status, events and the error
of the call it broke; a crash or an OOM kill is told apart by its exit code and reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Where the kubelet reads a container's termination message (the pod's terminationMessagePath default).
TERMINATION_LOG = Path("/dev/termination-log")
#: How the termination message of a plugin its livenessProbe found unresponsive begins.
UNRESPONSIVE = "unresponsive: "


def check(address: str, timeout: float = 1.0) -> bool:
    """Say whether the plugin at `address` reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def record(healthy: bool, timeout: float, log: Path = TERMINATION_LOG) -> None:
    """Keep a liveness verdict in `log`: empty after an answer, else the failures in a row and why."""
    if not log.exists():  # not in a Kubernetes container
        return
    try:
        if healthy:
            if log.stat().st_size:
                log.write_text("")
            return
        previous = log.read_text(errors="replace")
        count = previous.removeprefix(UNRESPONSIVE).split(" ", 1)[0] if previous.startswith(UNRESPONSIVE) else ""
        failures = int(count) + 1 if count.isdecimal() else 1
        log.write_text(
            f"{UNRESPONSIVE}{failures} liveness probe{'s' * (failures != 1)} in a row "
            f"found no SERVING answer within {timeout:g}s"
        )
    except OSError:  # the probe's verdict stands without its record
        return


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SYSOPS_LISTEN", "127.0.0.1:50051")
    deadline = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    serving = check(target.replace("0.0.0.0", "127.0.0.1"), deadline)
    if len(sys.argv) > 2:
        record(serving, deadline)
    sys.exit(0 if serving else 1)
