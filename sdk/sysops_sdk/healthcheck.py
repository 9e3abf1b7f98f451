"""`python -m sysops_sdk.healthcheck [ADDRESS [TIMEOUT]]`: exit 0 when the plugin answers SERVING within
TIMEOUT seconds (default 1), else 1.

For platforms without native gRPC probes (Kubernetes before 1.24): the exec readiness and liveness probes.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, timeout: float = 1.0) -> bool:
    """Say whether the plugin at `address` reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SYSOPS_LISTEN", "127.0.0.1:50051")
    deadline = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    sys.exit(0 if check(target.replace("0.0.0.0", "127.0.0.1"), deadline) else 1)
