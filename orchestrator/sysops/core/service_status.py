"""What `plugin status` says about a service plugin's loop: `running`, or `stopped (why)`.

The SDK's plugin server reports the loop on its gRPC health service's `sysops.service` entry (SERVING while
`run()` runs) and, when the loop ends, prints one line starting `sysops-plugin: service loop stopped: `
(sysops_sdk/_service.py). This module asks the entry and, when the loop is not running, takes the reason
from that line in the instance's recent log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sysops_sdk.wire import SERVICE_HEALTH, SERVICE_STOPPED_PREFIX

from sysops.core.client import PluginClient
from sysops.store import InstanceRecord

_STOPPED_LINE = f"sysops-plugin: {SERVICE_STOPPED_PREFIX}"


def service_state(instance: InstanceRecord, serving: bool, recent_logs: Callable[[], Iterable[str]]) -> str:
    """`running` or `stopped (reason)` for the instance's service loop (`serving`: the instance answers)."""
    if not serving:
        return "stopped (the instance is not serving)"
    with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
        try:
            reply = health_pb2_grpc.HealthStub(client.channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_HEALTH), timeout=1.0
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "unknown (the plugin reports no service loop: subclass sysops_sdk.ServicePlugin)"
            return f"unknown (no answer: {exc.code().name})"
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return "running"
    return f"stopped ({stop_reason(recent_logs()) or 'run() ended'})"


def stop_reason(lines: Iterable[str]) -> str:
    """The reason of the last `service loop stopped` line in `lines` ("" when there is none)."""
    reason = ""
    for line in lines:
        text = line.strip()
        if text.startswith(_STOPPED_LINE):
            reason = text.removeprefix(_STOPPED_LINE).split("; restart ", 1)[0]
    return reason
