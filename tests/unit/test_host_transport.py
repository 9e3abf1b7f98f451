"""The host services transport (services/transport.py): per-instance listeners on host.sock, token checks,
error statuses, size cap, re-creation by sync, and the cluster's identification by token from the store."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from sysops.services.call import Caller, ServiceCallError
from sysops.services.transport import (
    HOST_SOCKET,
    MAX_REQUEST_BYTES,
    InstanceListeners,
    ListenerError,
    store_identify,
)
from sysops.store import InstanceRecord, Store
from sysops_sdk.protocol.v1 import host_pb2 as pb
from sysops_sdk.protocol.v1 import host_pb2_grpc as pb_grpc

from tests.unit.dispatcher_fakes import AnswersNothingFromMemory

TOKEN = "instance-token-1"


class Recorder(AnswersNothingFromMemory):
    """A dispatcher that answers state.get with the caller and fails on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[Caller, str, str, dict[str, Any]]] = []

    def call(self, caller: Caller, service: str, method: str, arguments: dict[str, Any]) -> Any:
        self.calls.append((caller, service, method, arguments))
        if service == "denied":
            raise ServiceCallError("permission_denied", "plugin 'p' needs permission 'x.y' for denied.call")
        if service == "broken":
            raise RuntimeError("a bug")
        if service == "nothing":
            return None
        return {"plugin": caller.plugin, "instance": caller.instance_id, "arguments": arguments}


def instance(socket_dir: Path, instance_id: str = "abc123", token: str = TOKEN) -> InstanceRecord:
    return InstanceRecord(
        id=instance_id,
        plugin="demo",
        revision=3,
        version="1.0.0",
        handle="h-" + instance_id,
        image="img",
        image_id="img",
        endpoint=f"unix://{socket_dir}/plugin.sock",
        socket_dir=str(socket_dir),
        created=time.time(),
        active=True,
        token=token,
    )


def call(path: Path, service: str, arguments_json: str = "{}", token: str | None = TOKEN, timeout: float = 5) -> Any:
    with grpc.insecure_channel(f"unix:{path}") as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        reply = pb_grpc.HostStub(channel).Call(
            pb.ServiceCall(service=service, method="get", arguments_json=arguments_json),
            timeout=timeout,
            metadata=metadata,
        )
    return json.loads(reply.result_json) if reply.result_json else None


@pytest.fixture
def listeners() -> Any:
    recorder = Recorder()
    served = InstanceListeners(recorder, workers=4)
    served.recorder = recorder  # type: ignore[attr-defined]
    yield served
    served.stop()


def socket_dir(tmp_path: Path, name: str = "i1") -> Path:
    directory = tmp_path / name
    directory.mkdir(mode=0o700)
    return directory


def test_a_call_with_the_instance_token_reaches_the_services_as_that_instance(tmp_path: Path, listeners: Any) -> None:
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    path = directory / HOST_SOCKET
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert call(path, "state", '{"key": "k"}') == {"plugin": "demo", "instance": "abc123", "arguments": {"key": "k"}}
    caller = listeners.recorder.calls[0][0]
    assert caller == Caller(plugin="demo", instance_id="abc123", revision=3)
    assert call(path, "nothing") is None


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_unauthenticated_and_reaches_nothing(
    tmp_path: Path, listeners: Any, token: str | None
) -> None:
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    with pytest.raises(grpc.RpcError) as caught:
        call(directory / HOST_SOCKET, "state", token=token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert listeners.recorder.calls == []


def test_another_instances_token_is_refused_on_this_instances_socket(tmp_path: Path, listeners: Any) -> None:
    first, second = socket_dir(tmp_path, "a"), socket_dir(tmp_path, "b")
    listeners.attach(instance(first, "a1", "token-a"))
    listeners.attach(instance(second, "b1", "token-b"))
    with pytest.raises(grpc.RpcError) as caught:
        call(first / HOST_SOCKET, "state", token="token-b")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert call(second / HOST_SOCKET, "state", token="token-b")["instance"] == "b1"


@pytest.mark.parametrize(
    ("service", "arguments_json", "status", "words"),
    [
        ("denied", "{}", grpc.StatusCode.PERMISSION_DENIED, "needs permission 'x.y'"),
        ("state", "{not json", grpc.StatusCode.INVALID_ARGUMENT, "not valid JSON"),
        ("state", "[1, 2]", grpc.StatusCode.INVALID_ARGUMENT, "not a JSON object"),
        ("broken", "{}", grpc.StatusCode.INTERNAL, "internal error in the sysops host"),
        ("state", json.dumps({"value": "x" * MAX_REQUEST_BYTES}), grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes"),
    ],
)
def test_errors_are_grpc_statuses_with_one_line(
    tmp_path: Path, listeners: Any, service: str, arguments_json: str, status: grpc.StatusCode, words: str
) -> None:
    directory = socket_dir(tmp_path)
    listeners.attach(instance(directory))
    with pytest.raises(grpc.RpcError) as caught:
        call(directory / HOST_SOCKET, service, arguments_json)
    assert caught.value.code() == status
    assert words in caught.value.details()
    assert "\n" not in caught.value.details()


def test_detach_removes_the_socket_and_sync_recreates_a_lost_one_and_drops_the_gone(
    tmp_path: Path, listeners: Any
) -> None:
    first, second = socket_dir(tmp_path, "a"), socket_dir(tmp_path, "b")
    one, two = instance(first, "a1", "token-a"), instance(second, "b1", "token-b")
    listeners.sync([one, two])
    assert listeners.attached() == {"a1", "b1"}
    (first / HOST_SOCKET).unlink()  # e.g. the socket tmpfs was mounted again after a reboot
    listeners.sync([one, two])
    assert call(first / HOST_SOCKET, "state", token="token-a")["instance"] == "a1"
    listeners.sync([one])
    assert listeners.attached() == {"a1"}
    assert not (second / HOST_SOCKET).exists()
    listeners.detach("a1")
    assert not (first / HOST_SOCKET).exists()


def test_a_stale_file_in_the_way_is_replaced(tmp_path: Path, listeners: Any) -> None:
    directory = socket_dir(tmp_path)
    (directory / HOST_SOCKET).write_text("planted")
    listeners.attach(instance(directory))
    assert call(directory / HOST_SOCKET, "state")["instance"] == "abc123"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the socket to the plugin's uid needs root")
def test_the_socket_belongs_to_the_owner_of_the_socket_directory(tmp_path: Path, listeners: Any) -> None:
    directory = socket_dir(tmp_path)
    os.chown(directory, 61234, 61234)
    listeners.attach(instance(directory))
    info = os.lstat(directory / HOST_SOCKET)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (61234, 61234, 0o600)


def test_a_missing_socket_directory_is_a_listener_error(tmp_path: Path, listeners: Any) -> None:
    from sysops.services.transport import ListenerError

    with pytest.raises(ListenerError, match="gone"):
        listeners.attach(instance(tmp_path / "missing"))
    listeners.sync([instance(tmp_path / "missing")])  # logged, not raised
    assert listeners.attached() == set()


def test_the_cluster_finds_the_caller_by_token_among_the_stores_instances(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_instance(instance(tmp_path, "a1", "token-a"))
    store.add_instance(instance(tmp_path, "b1", "token-b"))
    store.close()
    identify = store_identify(tmp_path / "state.db")
    found = identify("token-b")
    assert found == Caller(plugin="demo", instance_id="b1", revision=3)
    assert identify("token-c") is None
    assert identify("") is None


def test_listeners_share_one_event_loop_thread_and_stop_ends_it(tmp_path: Path) -> None:
    """A threaded gRPC server per instance kept a thread that woke every 200 ms even when idle (grpcio's poll):
    fifty instances, fifty such threads, a third of the host's idle CPU. The listeners are asyncio servers on
    one event loop, so attaching instances adds no thread per instance until one calls."""
    served = InstanceListeners(Recorder(), workers=4)
    before = {thread.ident for thread in threading.enumerate()}
    try:
        directories = [socket_dir(tmp_path, f"i{n}") for n in range(10)]
        for n, directory in enumerate(directories):
            served.attach(instance(directory, f"id{n}", f"token-{n}"))
        added = [thread for thread in threading.enumerate() if thread.ident not in before]
        assert len(added) <= 2, [thread.name for thread in added]  # the event loop's (and grpc's shared poller)
        assert all(call(directory / HOST_SOCKET, "state", token=f"token-{n}")["instance"] == f"id{n}"
                   for n, directory in enumerate(directories))  # fmt: skip
    finally:
        served.stop()
    deadline = time.monotonic() + 5
    while any(thread.name == "sysops-host-services-io" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the event loop's thread outlived stop()"
        time.sleep(0.02)


def test_an_attach_after_stop_is_refused_and_starts_no_thread(tmp_path: Path) -> None:
    """A roll or reconcile still attaching while the host stops must not leave a socket nobody serves, nor a
    new event loop thread nothing ends."""
    served = InstanceListeners(Recorder(), workers=1)
    served.attach(instance(socket_dir(tmp_path, "before")))
    served.stop()
    with pytest.raises(ListenerError, match="stopped"):
        served.attach(instance(socket_dir(tmp_path, "after"), "late1"))
    served.sync([instance(tmp_path / "after", "late1")])  # the host services' sync thread, one last time
    assert served.attached() == set()
    assert not (tmp_path / "after" / HOST_SOCKET).exists()
    assert not [thread for thread in threading.enumerate() if thread.name == "sysops-host-services-io"]
