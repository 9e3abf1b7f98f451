"""The Host servicer runs a few calls of one instance at once and refuses more at once: in a cluster all plugin
pods share the server's worker threads with the operators, so a flooding pod must not take them all (real gRPC
server on loopback, as the cluster server carries the servicer)."""

from __future__ import annotations

import json
import threading
from concurrent import futures
from typing import Any

import grpc
from sysops.services.call import Caller
from sysops.services.transport import CALLS_RUNNING_PER_INSTANCE, HostServicer
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

from tests.unit.dispatcher_fakes import AnswersNothingFromMemory

CALLERS = {"flood-token": Caller("flood", "f-1", 1), "calm-token": Caller("calm", "c-1", 1)}


class SlowForFlood(AnswersNothingFromMemory):
    """Holds every call of `flood` until released; answers others at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        if caller.plugin == "flood":
            self.entered.release()
            self.release.wait(20)
        return {"plugin": caller.plugin}


def _call(stub: pb_grpc.HostStub, token: str) -> Any:
    reply = stub.Call(
        pb.ServiceCall(service="state", method="get", arguments_json='{"key": "k"}'),
        timeout=10,
        metadata=(("authorization", f"Bearer {token}"),),
    )
    return json.loads(reply.result_json)


def test_a_flooding_instance_gets_a_few_threads_and_another_is_still_answered() -> None:
    services = SlowForFlood()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=CALLS_RUNNING_PER_INSTANCE + 4))
    pb_grpc.add_HostServicer_to_server(HostServicer(services, CALLERS.get), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    pool = futures.ThreadPoolExecutor(max_workers=CALLS_RUNNING_PER_INSTANCE + 3)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.HostStub(channel)
            held = [pool.submit(_call, stub, "flood-token") for _ in range(CALLS_RUNNING_PER_INSTANCE)]
            for _ in held:
                assert services.entered.acquire(timeout=10)  # all of them are running now
            extra = [pool.submit(_call, stub, "flood-token") for _ in range(2)]
            for refused in extra:
                error = refused.exception(timeout=10)
                assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"already has {CALLS_RUNNING_PER_INSTANCE} host calls running" in error.details()
            assert _call(stub, "calm-token") == {"plugin": "calm"}  # another instance is served meanwhile
            services.release.set()
            assert [future.result(timeout=10) for future in held] == [{"plugin": "flood"}] * len(held)
            assert _call(stub, "flood-token") == {"plugin": "flood"}  # its slots came back
    finally:
        services.release.set()
        pool.shutdown(wait=True)
        server.stop(0).wait(5)
