"""The SDK's host channel (sysops_sdk/_host_client.py) over TLS, as a plugin pod calls the server's port: the
server's CA from SYSOPS_HOST_CA (PEM) and its name from SYSOPS_HOST_SERVER_NAME (the endpoint is an IP), a
wrong CA fails the call, and without a CA the channel stays plaintext (a Unix socket on Docker) unless
SYSOPS_HOST_TLS=required, which refuses before sending anything."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from sysops_sdk import HostUnavailableError
from sysops_sdk._host_client import CALL_METHOD, HostClient
from sysops_sdk.protocol.v1 import host_pb2

from tests.unit.tls_pki import make_pki, needs_openssl

pytestmark = needs_openssl


def _answer(request: host_pb2.ServiceCall, context: grpc.ServicerContext) -> host_pb2.ServiceReply:
    return host_pb2.ServiceReply(result_json=f'"{request.service}.{request.method}"')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_host(pki: Path) -> Iterator[str]:
    """A host answering Call on 127.0.0.1 with the server certificate; its address."""
    credentials = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())])
    server, port = _host_server(_answer, credentials)
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _host_server(answer: Any, credentials: grpc.ServerCredentials | None) -> tuple[grpc.Server, int]:
    """A started host server whose Call is `answer`, on 127.0.0.1 (TLS with `credentials`, else plaintext)."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    service, method = CALL_METHOD.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(
        answer,
        request_deserializer=host_pb2.ServiceCall.FromString,
        response_serializer=host_pb2.ServiceReply.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def test_a_pod_calls_the_host_over_tls_with_its_ca_and_server_name(
    tls_host: str, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSOPS_HOST_CA", (pki / "ca.crt").read_text())
    monkeypatch.setenv("SYSOPS_HOST_SERVER_NAME", "sysops.ns.svc")
    client = HostClient(tls_host, token="t", timeout=5)
    try:
        assert client.call("state", "get") == "state.get"
    finally:
        client.close()


def test_a_wrong_ca_fails_the_call(tls_host: str, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSOPS_HOST_CA", (pki / "other-ca.crt").read_text())
    monkeypatch.setenv("SYSOPS_HOST_SERVER_NAME", "sysops.ns.svc")
    client = HostClient(tls_host, token="t", timeout=1)
    try:
        with pytest.raises(HostUnavailableError):
            client.call("state", "get")
    finally:
        client.close()


def test_without_a_ca_the_channel_is_plaintext(tls_host: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("SYSOPS_HOST_CA", raising=False)
    client = HostClient(tls_host, token="t", timeout=1)
    try:
        with pytest.raises(HostUnavailableError):  # a TLS port does not answer plaintext
            client.call("state", "get")
    finally:
        client.close()


def test_tls_required_without_a_ca_refuses_before_sending_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plaintext host (what a pod without its CA would reach) never sees the call nor the token."""
    seen: list[tuple[tuple[str, str | bytes], ...]] = []

    def _record(request: host_pb2.ServiceCall, context: grpc.ServicerContext) -> host_pb2.ServiceReply:
        seen.append(tuple(context.invocation_metadata()))
        return _answer(request, context)

    server, port = _host_server(_record, None)
    monkeypatch.delenv("SYSOPS_HOST_CA", raising=False)
    monkeypatch.setenv("SYSOPS_HOST_TLS", "required")
    client = HostClient(f"127.0.0.1:{port}", token="secret-token", timeout=2)
    try:
        with pytest.raises(HostUnavailableError, match="SYSOPS_HOST_TLS=required but SYSOPS_HOST_CA is empty"):
            client.call("state", "get")
        assert seen == []
    finally:
        client.close()
        server.stop(0)
