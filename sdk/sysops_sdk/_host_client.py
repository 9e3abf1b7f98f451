"""The plugin's connection back to the sysops host that runs it (sysops.host.v1.Host/Call).

Every host service (state, config, metrics, ...) is one `Call(service, method, arguments_json)`. This
module owns the one channel a plugin needs for that: created on first use (the host creates its socket just
after the container starts, so nothing connects at import time), authenticated with the instance token,
with a deadline on every call and `wait_for_ready` so a socket that appears a moment late is waited for
rather than failed. gRPC statuses become the SDK's exceptions, each with one line naming service and method;
a host that is down gives HostUnavailableError within the deadline, never a hang.

On Kubernetes the host is the server's TCP port, which speaks TLS: the pod gets the server's CA as
SYSOPS_HOST_CA (PEM, from its token Secret) and the name the certificate carries as SYSOPS_HOST_SERVER_NAME,
checked through `grpc.ssl_target_name_override` because the endpoint is an IP address (no cluster DNS needed).
A Unix socket (the resident host on Docker) and a TCP endpoint without a CA stay plaintext, unless
SYSOPS_HOST_TLS=required (the driver sets it on pods when the server speaks TLS): then a missing CA fails
the call with one clear error before anything, the token least of all, is sent in plaintext.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import grpc

from sysops_sdk._errors import HostUnavailableError, PermissionDeniedError, ServiceCallError, ServiceUnavailableError
from sysops_sdk.protocol.v1 import host_pb2

ENDPOINT_ENV = "SYSOPS_HOST_ENDPOINT"
DEFAULT_ENDPOINT = "unix:///run/sysops/host.sock"
TOKEN_ENV = "SYSOPS_TOKEN"
CA_ENV = "SYSOPS_HOST_CA"
SERVER_NAME_ENV = "SYSOPS_HOST_SERVER_NAME"
#: "required": never call the host in plaintext (no CA is an error, not a plaintext fallback).
TLS_ENV = "SYSOPS_HOST_TLS"
TIMEOUT_ENV = "SYSOPS_HOST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 5.0
CALL_METHOD = "/sysops.host.v1.Host/Call"


class HostCaller(Protocol):
    """Anything that performs host service calls: the real HostClient, or testing.FakeHost."""

    def call(self, service: str, method: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Call `service`.`method` with JSON-able `arguments`; return the decoded result."""
        ...


def timeout_from_env() -> float:
    """The deadline of every host call, in seconds: SYSOPS_HOST_TIMEOUT, else 5."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds above 0")
    return seconds


def host_channel(endpoint: str) -> grpc.Channel:
    """The channel to the host: TLS verified with SYSOPS_HOST_CA (for SYSOPS_HOST_SERVER_NAME when set) on a
    TCP endpoint that has one, else plaintext (a Unix socket); HostUnavailableError, before any connection,
    when SYSOPS_HOST_TLS=required and there is no CA."""
    ca = os.environ.get(CA_ENV, "")
    if os.environ.get(TLS_ENV, "").strip() == "required" and not ca.strip():
        raise HostUnavailableError(
            f"{TLS_ENV}=required but {CA_ENV} is empty: not calling the sysops host at {endpoint} in plaintext "
            "(the token would travel in the clear); the pod's token Secret should carry ca.crt"
        )
    if endpoint.startswith("unix:") or not ca.strip():
        return grpc.insecure_channel(endpoint)
    server_name = os.environ.get(SERVER_NAME_ENV, "").strip()
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=ca.encode()), options=options)


class HostClient:
    """A lazily connected, thread-safe client of the sysops host's service calls."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, timeout: float | None = None) -> None:
        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        token = os.environ.get(TOKEN_ENV, "") if token is None else token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout if timeout is not None else timeout_from_env()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._call: Any = None

    def _callable(self) -> Any:
        with self._lock:
            if self._call is None:
                self._channel = host_channel(self.endpoint)
                self._call = self._channel.unary_unary(
                    CALL_METHOD,
                    request_serializer=host_pb2.ServiceCall.SerializeToString,
                    response_deserializer=host_pb2.ServiceReply.FromString,
                )
            return self._call

    def call(self, service: str, method: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Call `service`.`method` on the host; return its decoded JSON result.

        Raises PermissionDeniedError (a grant is missing), HostUnavailableError (no answer within the
        deadline), ServiceUnavailableError (unknown service or method), ServiceCallError (bad arguments).
        """
        try:
            arguments_json = json.dumps(dict(arguments or {}))
        except (TypeError, ValueError) as exc:
            raise ServiceCallError(
                f"host service {service!r} method {method!r}: arguments are not JSON: {exc}"
            ) from None
        request = host_pb2.ServiceCall(service=service, method=method, arguments_json=arguments_json)
        try:
            reply = self._callable()(request, timeout=self.timeout, metadata=self._metadata, wait_for_ready=True)
        except grpc.RpcError as error:
            raise self._mapped(service, method, error) from None
        if not reply.result_json:
            return None
        try:
            return json.loads(reply.result_json)
        except json.JSONDecodeError as exc:
            raise ServiceUnavailableError(
                f"the sysops host answered service {service!r} method {method!r} with invalid JSON: {exc}"
            ) from None

    def _mapped(self, service: str, method: str, error: grpc.RpcError) -> Exception:
        """The SDK exception for a failed call: one line naming the service, the method and why."""
        code = error.code()
        details = (error.details() or "").strip().splitlines()
        reason = details[0] if details else code.name
        what = f"service {service!r} method {method!r}"
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return PermissionDeniedError(f"host refused {what}: {reason}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return HostUnavailableError(
                f"the sysops host did not answer {what} within {self.timeout:g}s at {self.endpoint}"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return HostUnavailableError(f"the sysops host could not serve {what} at {self.endpoint}: {reason}")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return ServiceCallError(f"host refused {what}: {reason}")
        if code == grpc.StatusCode.NOT_FOUND:
            return ServiceUnavailableError(f"the sysops host has no {what}: {reason}")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ServiceUnavailableError(
                f"the sysops host did not accept this instance's token ({TOKEN_ENV}) for {what}: {reason}"
            )
        return ServiceUnavailableError(f"the sysops host failed {what}: {code.name}: {reason}")

    def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel, self._call = None, None
