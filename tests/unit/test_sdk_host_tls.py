"""The SDK's host channel (sysops_sdk/_host_client.py) over TLS, as a plugin pod calls the server's port: the
server's CA from SYSOPS_HOST_CA (PEM) and its name from SYSOPS_HOST_SERVER_NAME (the endpoint is an IP), a
wrong CA fails the call, and without a CA the channel stays plaintext (a Unix socket on Docker)."""

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
    server = grpc.server(futures.ThreadPoolExecutor(2))
    service, method = CALL_METHOD.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(
        _answer,
        request_deserializer=host_pb2.ServiceCall.FromString,
        response_serializer=host_pb2.ServiceReply.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    credentials = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


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
