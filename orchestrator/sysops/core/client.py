"""The orchestrator's side of sysops.plugin.v1: one channel per plugin instance endpoint.

Used both on the routed-command hot path (Invoke) and by the rollout (health, Describe, Snapshot,
Restore, Shutdown). gRPC's reconnect backoff is shortened, because readiness probing would otherwise
wait up to a second after the socket appears.

An Invoke the plugin's gRPC server cancelled before sending anything never ran (DROPPED_UNSTARTED): a server
that stops (a drained instance's Shutdown) cancels, at once and with status CANCELLED, each call it had
accepted on a connection but not yet handed to a handler (a call in a handler still running when the stop's
grace ends is cancelled as UNAVAILABLE "Cancelling all calls" instead). A call whose stream the server's
GOAWAY refused (UNAVAILABLE "Stream removed (GOAWAY received ...)", nothing sent: its stream id was above the
last one the stopping server said it would process), or whose request could not be written because the server
had closed the connection (UNAVAILABLE "Stream removed (sendmsg: Broken pipe ...)"), never reached it either.
The router re-sends such calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as pb
from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc
from sysops_sdk.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Reassembler,
    ReplyTooLargeError,
    WholeResult,
    protocol_compatible,
)

from sysops.errors import (
    CallInterruptedError,
    CommandFailedError,
    DeadlineExceededError,
    PluginUnavailableError,
    ProtocolMismatchError,
)
from sysops.runtime.base import PLUGIN_UID, is_plugin_uid

PROTOCOL_METADATA = (("sysops-protocol", PROTOCOL_VERSION),)
#: A Result's kind as InvocationResult names it ("text", "data", "none"), by its number (an unknown one: "none").
_RESULT_KINDS = {number: name.lower() for name, number in pb.Result.Kind.items()}
#: How the error of an Invoke that the plugin's server dropped before running it reads (module docstring).
DROPPED_UNSTARTED = "dropped by its stopping server before it ran"
#: How long a plugin socket that passed check_socket_owner is trusted before a call asks again.
SOCKET_RECHECK_SECONDS = 0.25
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    # Also the time one connection attempt may take (gRPC's MIN_CONNECT_TIMEOUT): at 20 ms, a call to a
    # busy plugin (a handler filling its CPU quota) failed with "connection attempt timed out before
    # receiving SETTINGS frame" instead of waiting, within its deadline, for the handshake.
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 200),
    ("grpc.enable_retries", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class InvocationResult:
    """The final Result of an invocation."""

    kind: str
    text: str
    data: Any
    exit_code: int
    error: str


class Abandon:
    """Lets another thread abandon a routed call: its gRPC call to the plugin is cancelled, now or as it starts.

    `sysops serve` registers one as the termination callback of its own Invoke, so a client that goes
    away (Ctrl-C, its deadline) cancels the plugin's call too. Calling it after the call ended is harmless.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[grpc.Future] = set()
        self.abandoned = False

    def __call__(self) -> None:
        """Abandon the call: cancel what is in flight, and what starts later."""
        with self._lock:
            self.abandoned = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def track(self, call: grpc.Future) -> None:
        """Cancel `call` when the caller abandons it (at once if it already did)."""
        with self._lock:
            self._calls.add(call)
            abandoned = self.abandoned
        if abandoned:
            call.cancel()

    def untrack(self, call: grpc.Future) -> None:
        """`call` is over."""
        with self._lock:
            self._calls.discard(call)


def _invocation_item(whole: str | WholeResult, plugin: str) -> str | InvocationResult:
    """A whole line or result as the CLI handles it; a result that is not JSON is the plugin's fault."""
    if isinstance(whole, str):
        return whole
    try:
        data = json.loads(whole.data_json) if whole.data_json else None
    except (ValueError, RecursionError) as exc:
        raise PluginUnavailableError(f"plugin {plugin!r} sent a result that is not JSON ({exc})") from None
    kind = _RESULT_KINDS.get(whole.kind, "none")
    return InvocationResult(kind=kind, text=whole.text, data=data, exit_code=whole.exit_code, error=whole.error)


def invocation_items(events: Iterable[pb.InvokeEvent], plugin: str) -> Iterator[str | InvocationResult]:
    """Streamed lines, then the result, of an Invoke stream whose large parts may come in pieces.

    Stops after the result; more than MAX_REPLY_BYTES in one line or result is a CommandFailedError.
    """
    pieces = Reassembler()
    for event in events:
        try:
            whole = pieces.feed(event)
        except ReplyTooLargeError as exc:
            raise CommandFailedError(f"plugin {plugin!r} sent a {exc}") from None
        if whole is None:
            continue
        item = _invocation_item(whole, plugin)
        yield item
        if isinstance(item, InvocationResult):
            return


def check_socket_owner(path: str, plugin: str) -> bool:
    """Refuse a plugin socket another local user could have put there, before a token is sent to it.

    The socket must be a socket owned by root, us, or the plugin, in a directory only its owner can write
    to. The plugin's uid is its own (`plugin_uid`), so it is trusted as the owner of the socket's directory
    when that directory sits in one of ours (root's or ours, writable by nobody else): only sysops could
    have made it and given it to the plugin. Anything else may be an impostor waiting for the next bearer
    token. A missing socket passes (the call then fails to connect, and sends nothing): False, where a socket
    that passed is True.

    Once a socket passed, nobody but its plugin, root or us can replace it, or loosen its directory, until
    one of those does (and the plugin's own token is the only one sent to its socket); so a client asks again
    only every SOCKET_RECHECK_SECONDS (three system calls per call cost the host's interpreter lock hand-offs).
    """
    try:
        info = os.lstat(path)
        directory = os.lstat(os.path.dirname(path) or ".")
        parent = os.lstat(os.path.dirname(os.path.dirname(path)) or ".")
    except FileNotFoundError:
        return False
    ours = {0, os.geteuid()}
    trusted = ours | ({directory.st_uid} if _plugin_owned(directory, parent, ours) else set())
    problem = ""
    if not stat.S_ISSOCK(info.st_mode):
        problem = "it is not a socket"
    elif info.st_uid not in trusted:
        problem = f"it is owned by uid {info.st_uid}, not by the plugin, root or you"
    elif not _private(directory, trusted):
        problem = f"its directory is a symlink, writable by others, or owned by uid {directory.st_uid}"
    if problem:
        raise PluginUnavailableError(
            f"plugin {plugin!r}: refusing to send its token to {path}: {problem}",
            hint=f"another local user may have replaced it; `sysops plugin down {plugin}` and up again",
        )
    return True


def _private(directory: os.stat_result, owners: set[int]) -> bool:
    """A real directory owned by one of `owners` that group and others cannot write to."""
    return stat.S_ISDIR(directory.st_mode) and not directory.st_mode & 0o022 and directory.st_uid in owners


def _plugin_owned(directory: os.stat_result, parent: os.stat_result, ours: set[int]) -> bool:
    """A plugin's socket directory: owned by a plugin uid (or 10001 of instances started before per-plugin
    uids), inside a private directory of ours."""
    plugin_owner = is_plugin_uid(directory.st_uid) or directory.st_uid == PLUGIN_UID
    return plugin_owner and _private(parent, ours)


def _never_reached_a_handler(exc: grpc.RpcError) -> bool:
    """Whether a failed call with nothing received was dropped unstarted by a stopping server (module docstring)."""
    if exc.code() == grpc.StatusCode.CANCELLED:
        return True
    detail = str((exc.details() if hasattr(exc, "details") else "") or "")
    # "sendmsg: Broken pipe": writing the request failed because the server had closed the connection; a
    # handler of Invoke (one request message) starts only once it has read that whole message.
    return exc.code() == grpc.StatusCode.UNAVAILABLE and ("GOAWAY received" in detail or "(sendmsg: " in detail)


class PluginClient:
    """A connection to one plugin instance."""

    def __init__(self, endpoint: str, plugin: str = "", token: str = "") -> None:
        self.endpoint = endpoint
        self.plugin = plugin or endpoint
        self._metadata = PROTOCOL_METADATA + ((("authorization", f"Bearer {token}"),) if token else ())
        self._socket = endpoint.removeprefix("unix://") if token and endpoint.startswith("unix://") else ""
        self._socket_passed = -SOCKET_RECHECK_SECONDS  # when the socket last passed check_socket_owner
        self.channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.PluginServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata of every call but health checks; checks first that the socket may be sent the token (a socket
        that passed less than SOCKET_RECHECK_SECONDS ago is not asked again)."""
        if self._socket:
            now = time.monotonic()
            if now - self._socket_passed >= SOCKET_RECHECK_SECONDS and check_socket_owner(self._socket, self.plugin):
                self._socket_passed = now
        return self._metadata

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unavailable(self, exc: grpc.RpcError, action: str) -> PluginUnavailableError:
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        return PluginUnavailableError(f"plugin {self.plugin!r} did not answer {action} ({detail})")

    def healthy(self, timeout: float = 0.5) -> bool:
        """Say whether the instance answers the standard health check with SERVING."""
        return self.health(timeout) == "SERVING"

    def health(self, timeout: float = 0.5) -> str:
        """The instance's answer to the standard health check ("SERVING", "NOT_SERVING"), or why there is none."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no answer within {timeout:g}s"
            return f"no answer: {exc.code().name}"
        names = health_pb2.HealthCheckResponse.ServingStatus
        return str(names.Name(reply.status)) if reply.status in names.values() else f"status {reply.status}"

    def describe(self, timeout: float = 5.0) -> pb.PluginDescriptor:
        """Fetch the plugin's descriptor and check its protocol version."""
        try:
            descriptor = self.stub.Describe(
                pb.DescribeRequest(protocol_version=PROTOCOL_VERSION), timeout=timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise ProtocolMismatchError(f"plugin {self.plugin!r}: {exc.details()}") from exc
            raise self._unavailable(exc, "Describe") from exc
        if not protocol_compatible(descriptor.protocol_version):
            raise ProtocolMismatchError(
                f"plugin {self.plugin!r} speaks sysops protocol {descriptor.protocol_version}, "
                f"this sysops speaks {PROTOCOL_VERSION}",
                hint="rebuild the plugin on a matching sysops-sdk",
            )
        return cast(pb.PluginDescriptor, descriptor)

    def invoke(
        self,
        command: str,
        arguments: dict[str, Any],
        output_format: str = "text",
        timeout: float | None = None,
        abandon: Abandon | None = None,
        caller: pb.CallerIdentity | None = None,
    ) -> Iterator[str | InvocationResult]:
        """Run a command: yield streamed output lines, then its InvocationResult.

        The deadline (`timeout`) travels with the call, so the plugin cancels it too; its expiry is a
        DeadlineExceededError. A caller that stops before the result (Ctrl-C, an error, `abandon`)
        cancels the call in the plugin. `caller` (who calls, what its plugin was granted) goes with it.
        """
        request = pb.InvokeRequest(
            command=command, arguments_json=json.dumps(arguments), output_format=output_format, caller=caller
        )
        call = self.stub.Invoke(request, timeout=timeout, metadata=self.metadata)
        if abandon is not None:
            abandon.track(call)
        finished = False
        received = False

        def events() -> Iterator[pb.InvokeEvent]:
            nonlocal received
            for event in call:
                received = True
                yield event

        try:
            for item in invocation_items(events(), self.plugin):
                yield item
                if isinstance(item, InvocationResult):
                    finished = True
                    return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise ProtocolMismatchError(f"plugin {self.plugin!r}: {exc.details()}") from exc
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
                raise DeadlineExceededError(
                    f"plugin {self.plugin!r}: command {command!r} did not finish within {timeout:g}s"
                ) from exc
            if exc.code() == grpc.StatusCode.CANCELLED and abandon is not None and abandon.abandoned:
                message = f"plugin {self.plugin!r}: command {command!r} abandoned by its caller"
                raise CallInterruptedError(message) from exc
            if not received and _never_reached_a_handler(exc):
                message = f"plugin {self.plugin!r}: command {command!r} {DROPPED_UNSTARTED}"
                raise PluginUnavailableError(message) from exc
            raise self._unavailable(exc, f"command {command!r}") from exc
        finally:
            if not finished:
                call.cancel()  # the caller stopped reading (or it failed): stop the command in the plugin
            if abandon is not None:
                abandon.untrack(call)
        raise PluginUnavailableError(f"plugin {self.plugin!r} ended command {command!r} without a result")

    def deliver(self, event: pb.EventDelivery, timeout: float = 30.0) -> None:
        """Hand one bus event to the plugin's `@on_event` handlers and wait until they ran.

        PluginUnavailableError when the instance did not take it (unreachable, shutting down: safe to send
        again), CommandFailedError when a handler failed (or the event was refused as malformed).
        """
        try:
            self.stub.Deliver(event, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise self._unavailable(exc, f"event {event.id}") from exc
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise CommandFailedError(f"plugin {self.plugin!r}: handling event {event.id} failed: {detail}") from exc

    def snapshot(self, timeout: float = 5.0) -> bytes:
        """Fetch the state to hand to the next version."""
        return bytes(self.stub.Snapshot(pb.SnapshotRequest(), timeout=timeout, metadata=self.metadata).state)

    def restore(self, state: bytes, timeout: float = 5.0) -> None:
        """Hand state from the previous version."""
        self.stub.Restore(pb.RestoreRequest(state=state), timeout=timeout, metadata=self.metadata)

    def shutdown(self, grace_seconds: float, timeout: float = 2.0) -> None:
        """Ask the instance to drain and exit; ignore an instance that is already gone."""
        with contextlib.suppress(grpc.RpcError):
            self.stub.Shutdown(pb.ShutdownRequest(grace_seconds=grace_seconds), timeout=timeout, metadata=self.metadata)
