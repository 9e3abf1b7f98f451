"""Live usage of a plugin pod, as its own plugin server reads it from its cgroup.

The server cannot read a pod's cgroup files (they are on the node) and the kubelet's summary API needs the
cluster-wide `nodes/proxy` permission, which the chart does not grant. So the plugin SDK reads its own
cgroup and attaches the reading to each Describe reply (sysops_sdk/usage.py); this module asks the pod for
one (two, `sample_seconds` apart, for the CPU) with the pod's token, and reports it with the keys the Docker
driver uses (runtime/usage.py). A pod that does not answer gives no usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as pb
from sysops_sdk.usage import USAGE_METADATA_KEY
from sysops_sdk.wire import PROTOCOL_VERSION

from sysops.core.client import PluginClient
from sysops.runtime.usage import usage_report

_TIMEOUT_SECONDS = 3.0


def _reading(client: PluginClient) -> Mapping[str, int | None] | None:
    """One reading of the pod's cgroup (None when it does not answer or its SDK does not send one)."""
    try:
        _, call = client.stub.Describe.with_call(
            pb.DescribeRequest(protocol_version=PROTOCOL_VERSION), timeout=_TIMEOUT_SECONDS, metadata=client.metadata
        )
    except grpc.RpcError:
        return None
    raw = dict(call.trailing_metadata() or ()).get(USAGE_METADATA_KEY)
    if not isinstance(raw, str):
        return None
    try:
        reading = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(reading, dict):
        return None
    return {str(key): value if isinstance(value, int) else None for key, value in reading.items()}


def pod_usage(endpoint: str, token: str, started: float | None, sample_seconds: float) -> dict[str, object]:
    """The usage of the pod at `endpoint` (IP:port): CPU over `sample_seconds`, or since `started` (epoch
    seconds) when that is 0; {} when the pod gives none."""
    with PluginClient(endpoint, token=token) as client:
        first, at = _reading(client), time.monotonic()
        if first is None:
            return {}
        cores: float | None = None
        used = first.get("cpu_usage_ns")
        if sample_seconds > 0:
            time.sleep(sample_seconds)
            second = _reading(client)
            later = second.get("cpu_usage_ns") if second is not None else None
            if second is not None and used is not None and later is not None:
                cores = (later - used) / 1e9 / (time.monotonic() - at)
                first = second
        elif started is not None and used is not None and time.time() > started:
            cores = used / 1e9 / (time.time() - started)
    return usage_report(first, cores, f"{sample_seconds:g}s" if sample_seconds > 0 else "since start")
