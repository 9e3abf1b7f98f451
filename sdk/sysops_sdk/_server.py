"""The plugin server: runs inside every plugin container and serves sysops.plugin.v1 plus gRPC health.

Start-up order is what readiness means: import the entrypoint, create the plugin, run `initialize()`,
and only then report SERVING on the standard health service. A failure before that exits with a
distinct code and one clear line on stderr, which the orchestrator shows as the reason the plugin failed.
Shutdown (the RPC or SIGTERM) stops new invocations, lets in-flight ones finish within a grace period,
runs `cleanup()` and exits. A call its caller abandons (deadline, Ctrl-C) is cancelled in its handler
(`_cancel.py`). Events the host delivers (Deliver) run the plugin's `@on_event` handlers (`_events.py`).
A caller that names itself (CallerIdentity.principal) also says which permissions the plugin was granted;
a command needing one that is missing is refused here too (`_permissions.py`), whatever the host did.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sysops_sdk._cancel import Cancellation, CommandCancelled, install_interruptible_sleep, start_reaper
from sysops_sdk._chunks import (
    MAX_REPLY_BYTES,
    batch_events,
    output_events,
    result_events,
    speaks_batches,
    speaks_chunks,
    too_large_message,
    utf8_size,
)
from sysops_sdk._commands import CommandDefinition, collect_commands
from sysops_sdk._dev_code import use_dev_code
from sysops_sdk._errors import PermissionDeniedError
from sysops_sdk._events import Event, collect_handlers, subscriptions
from sysops_sdk._line_batches import LineBatcher
from sysops_sdk._permissions import first_missing
from sysops_sdk._plugin import Plugin
from sysops_sdk._service import ServiceLoop
from sysops_sdk._types import TYPES_ENV, ServicePlugin, check_declared_types, check_event_plugin
from sysops_sdk._version import PROTOCOL_VERSION, SDK_VERSION, protocol_compatible
from sysops_sdk.protocol.v1 import plugin_pb2 as pb
from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc
from sysops_sdk.usage import usage_metadata

SERVICE_NAME = "sysops.plugin.v1.PluginService"
PROTOCOL_METADATA_KEY = "sysops-protocol"

#: Process exit codes of the plugin server, read by the orchestrator to name the failure.
EXIT_ENTRYPOINT = 3
EXIT_INITIALIZE = 4
EXIT_SERVE = 5

#: Exit code of a command refused because a permission it needs was not granted (the CLI's POLICY_DENIED).
EXIT_PERMISSION_DENIED = 9

log = logging.getLogger("sysops_sdk.server")


class EntrypointError(Exception):
    """The manifest's entrypoint cannot be imported or is not a Plugin subclass."""


def load_plugin_class(entrypoint: str) -> type[Plugin]:
    """Import `module.path:ClassName` and check that it names a Plugin subclass."""
    module_name, _, class_name = entrypoint.partition(":")
    if not module_name or not class_name:
        raise EntrypointError(f"entrypoint {entrypoint!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise EntrypointError(f"entrypoint {entrypoint!r} does not import: {type(exc).__name__}: {exc}") from exc
    candidate = getattr(module, class_name, None)
    if not (isinstance(candidate, type) and issubclass(candidate, Plugin)):
        raise EntrypointError(f"entrypoint {entrypoint!r}: {class_name} is not a sysops_sdk.Plugin subclass")
    return candidate


@dataclass
class InvocationOutcome:
    """What running a command produced, before it is put on the wire."""

    kind: int
    text: str = ""
    data_json: str = ""
    exit_code: int = 0
    error: str = ""
    error_type: str = ""


class PluginRuntime:
    """A created plugin and its commands; runs invocations and tracks the ones in flight."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.commands: dict[str, CommandDefinition] = {c.name: c for c in collect_commands(plugin)}
        self.handlers = collect_handlers(plugin)
        check_event_plugin(plugin, list(self.commands), self.handlers)
        check_declared_types(plugin, os.environ.get(TYPES_ENV))
        self._in_flight = 0
        self._idle = threading.Condition()
        self._draining = False

    def describe(self) -> pb.PluginDescriptor:
        """Describe the plugin and its commands for the orchestrator."""
        plugin = self.plugin
        return pb.PluginDescriptor(
            protocol_version=PROTOCOL_VERSION,
            sdk_version=SDK_VERSION,
            name=plugin.name,
            version=plugin.version,
            description=plugin.description,
            commands=[_command_spec(command) for command in self.commands.values()],
            subscriptions=subscriptions(self.handlers),
        )

    def refusal(self, command_name: str, caller: pb.CallerIdentity) -> str:
        """Why `caller` may not run `command_name` ("" when it may): a needed permission was not granted.

        Only a caller that names itself (principal set) vouches for its granted_permissions; one that
        does not (an older host) is not checked here: the host remains the authority.
        """
        command = self.commands.get(command_name)
        if command is None or not caller.principal:
            return ""
        missing = first_missing(command.permissions, caller.granted_permissions)
        if missing is None:
            return ""
        return (
            f"command {command_name!r} needs permission {missing!r}, "
            f"which was not granted to plugin {self.plugin.name!r}"
        )

    def deliver(self, event: Event) -> str:
        """Run every handler whose pattern matches the event's topic, in order; "" or why one failed.

        The first handler that raises stops the delivery (its traceback goes to stderr): the host
        re-sends the event, so handlers should be idempotent.
        """
        for handler in self.handlers:
            if not handler.matches(event.topic):
                continue
            try:
                handler.function(event)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                name = getattr(handler.function, "__qualname__", repr(handler.function))
                reason = ": ".join(filter(None, (type(exc).__name__, _first_line(exc))))
                return f"handler {name} of event {event.id} on topic {event.topic!r} failed: {reason}"
        return ""

    @property
    def draining(self) -> bool:
        """Whether new invocations are refused (a drain, or a Snapshot quiescing the instance)."""
        with self._idle:
            return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        with self._idle:
            self._draining = value

    def enter(self) -> bool:
        """Count one invocation in flight, unless draining: one lock, so none starts after a drain saw idle."""
        with self._idle:
            if self._draining:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """An invocation counted by `enter` is over."""
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def run(self, command_name: str, arguments: dict[str, Any]) -> Iterator[str | InvocationOutcome]:
        """Run a command (counted in flight by `enter`), yielding streamed lines and finally its outcome.

        A result, or one streamed item, over MAX_REPLY_BYTES becomes a failure that says so.
        """
        command = self.commands.get(command_name)
        if command is None:
            yield InvocationOutcome(pb.Result.NONE, exit_code=2, error=f"unknown command {command_name!r}")
            return
        try:
            result = command.function(**command.convert(arguments))
            if isinstance(result, Iterator):
                for item in result:
                    line = str(item)
                    if (size := utf8_size(line)) > MAX_REPLY_BYTES:
                        yield _too_large(size)
                        return
                    yield line
                result = None
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = _first_line(exc) or type(exc).__name__
            # A host service the plugin has no grant for: the same exit code as a command the host refused.
            code = EXIT_PERMISSION_DENIED if isinstance(exc, PermissionDeniedError) else 1
            yield InvocationOutcome(pb.Result.NONE, exit_code=code, error=message, error_type=type(exc).__name__)
            return
        if result is None:
            yield InvocationOutcome(pb.Result.NONE)
            return
        outcome = (
            InvocationOutcome(pb.Result.TEXT, text=result)
            if isinstance(result, str)
            else InvocationOutcome(pb.Result.DATA, data_json=json.dumps(result, default=str))
        )
        size = utf8_size(outcome.text or outcome.data_json)
        yield _too_large(size) if size > MAX_REPLY_BYTES else outcome

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is in flight; say whether that happened within `timeout`."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message ("" when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _too_large(size: int) -> InvocationOutcome:
    return InvocationOutcome(pb.Result.NONE, exit_code=1, error=too_large_message(size), error_type="ReplyTooLarge")


def _command_spec(command: CommandDefinition) -> pb.CommandSpec:
    return pb.CommandSpec(
        name=command.name,
        help=command.help,
        permissions=command.permissions,
        timeout_seconds=command.timeout or 0.0,
        read_only=command.read_only,
        params=[
            pb.ParamSpec(
                name=param.name,
                kind=pb.ParamSpec.ARGUMENT if param.kind == "argument" else pb.ParamSpec.OPTION,
                flags=list(param.flags),
                type=param.type,
                help=param.help,
                default_json=json.dumps(param.default) if param.has_default else "",
                required=bool(param.required),
                is_flag=param.is_flag,
                choices=list(param.choices),
                multiple=param.multiple,
                metavar=param.metavar,
            )
            for param in command.params
        ],
    )


def _outcome_events(outcome: InvocationOutcome, chunked: bool) -> Iterator[pb.InvokeEvent]:
    return result_events(
        chunked,
        kind=outcome.kind,
        text=outcome.text,
        data_json=outcome.data_json,
        exit_code=outcome.exit_code,
        error=outcome.error,
        error_type=outcome.error_type,
    )


def _hook_failure(hook: str, plugin: Plugin, exc: Exception) -> str:
    """Log a failed snapshot()/restore() with its traceback; return the one line the orchestrator reports."""
    traceback.print_exc(file=sys.stderr)
    return f"{hook}() of plugin {plugin.name!r} failed: {type(exc).__name__}: {exc}"


class PluginServicer(pb_grpc.PluginServiceServicer):
    """gRPC face of a PluginRuntime."""

    def __init__(self, runtime: PluginRuntime, on_shutdown: Any) -> None:
        self.runtime = runtime
        self.on_shutdown = on_shutdown
        #: Snapshot (not Shutdown) stopped the calls, so a Restore may re-open the instance.
        self._quiesced = False

    def _check_protocol(self, context: grpc.ServicerContext, version: str = "") -> None:
        if not version:
            version = dict(context.invocation_metadata()).get(PROTOCOL_METADATA_KEY, PROTOCOL_VERSION)
        if not protocol_compatible(version):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"plugin speaks sysops protocol {PROTOCOL_VERSION}, caller speaks {version}",
            )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.PluginDescriptor:
        """Describe the plugin; its live usage (usage.py) goes with the reply as trailing metadata."""
        self._check_protocol(context, request.protocol_version)
        context.set_trailing_metadata(usage_metadata())
        return self.runtime.describe()

    def Invoke(self, request: pb.InvokeRequest, context: grpc.ServicerContext) -> Iterator[pb.InvokeEvent]:
        """Run a command and stream its output; large lines and results go in pieces to callers of 1.1+."""
        self._check_protocol(context)
        try:
            arguments = json.loads(request.arguments_json or "{}")
        except json.JSONDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"arguments_json is not JSON: {exc}")
        if not isinstance(arguments, dict):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "arguments_json is not a JSON object")
        version = dict(context.invocation_metadata()).get(PROTOCOL_METADATA_KEY, "")
        chunked, batched = speaks_chunks(version), speaks_batches(version)
        if refusal := self.runtime.refusal(request.command, request.caller):
            log.warning("refused: %s", refusal)
            yield from result_events(
                chunked,
                kind=pb.Result.NONE,
                exit_code=EXIT_PERMISSION_DENIED,
                error=refusal,
                error_type="PermissionDenied",
            )
            return
        if not self.runtime.enter():
            context.abort(grpc.StatusCode.UNAVAILABLE, "plugin is shutting down")
        try:
            with Cancellation(request.command) as call:
                # Runs when the call ends (a no-op once `call` finished). A call that waited for a worker
                # may have ended already: then it is cancelled before the handler starts.
                if not context.add_callback(call.cancel):
                    call.cancel()
                try:
                    yield from self._events(request.command, arguments, (chunked, batched), call)
                except CommandCancelled:
                    log.info("command %r stopped after its caller abandoned it", request.command)
        finally:
            self.runtime.leave()

    def _events(
        self, command: str, arguments: dict[str, Any], speaks: tuple[bool, bool], call: Cancellation
    ) -> Iterator[pb.InvokeEvent]:
        """The events of one command; the handler runs (and may be interrupted) only inside `next`.

        `speaks` is whether the caller joins continued pieces (1.1) and takes batched lines (1.4). For a
        caller that takes batches, a command that streams sends its first line at once, then runs on in a
        thread of its own whose lines go out in batches (`_line_batches.py`).
        """
        chunked, batched = speaks
        items = self.runtime.run(command, arguments)
        while True:
            call.enter_handler()
            try:
                item = next(items, None)
            finally:
                call.leave_handler()
            if item is None:
                return
            if isinstance(item, str):
                lines = item.splitlines() or [""]
                if batched:
                    yield from batch_events(lines)
                    for batch in LineBatcher(items, call).batches():
                        if isinstance(batch, list):
                            yield from batch_events(batch)
                        else:
                            yield from _outcome_events(batch, chunked)
                    return
                for line in lines:
                    yield from output_events(line, chunked)
            else:
                yield from _outcome_events(item, chunked)

    def Deliver(self, request: pb.EventDelivery, context: grpc.ServicerContext) -> pb.DeliveryReply:
        """Run the handlers of one event; fail (INTERNAL) when one raises, so the host re-sends it."""
        try:
            payload = json.loads(request.payload_json) if request.payload_json else None
        except json.JSONDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"payload_json of event {request.id} is not JSON: {exc}")
        event = Event(
            id=request.id, topic=request.topic, payload=payload, publisher=request.publisher, time=request.time
        )
        if not self.runtime.enter():
            context.abort(grpc.StatusCode.UNAVAILABLE, "plugin is shutting down")
        try:
            failure = self.runtime.deliver(event)
        finally:
            self.runtime.leave()
        if failure:
            context.abort(grpc.StatusCode.INTERNAL, failure)
        return pb.DeliveryReply()

    def Snapshot(self, request: pb.SnapshotRequest, context: grpc.ServicerContext) -> pb.SnapshotReply:
        """Quiesce, then return the plugin's state for the next version.

        New calls are refused as "shutting down" (callers re-send them to the next version) and the calls
        in flight are waited for, so no write lands after the snapshot. The instance stays quiesced until
        it is shut down, or re-opened by a Restore (an empty one when the hand-over failed). If the calls
        do not finish before the caller's deadline, or snapshot() raises, it re-opens and the call fails.
        """
        was_draining = self.runtime.draining
        self.runtime.draining = True
        remaining = context.time_remaining()
        wait = max(0.0, remaining - 0.5) if remaining is not None else 30.0
        if not self.runtime.wait_idle(wait):
            self.runtime.draining = was_draining
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"calls still running after {wait:.1f}s, no snapshot")
        try:
            state = json.dumps(self.runtime.plugin.snapshot(), default=str).encode()
        except Exception as exc:
            self.runtime.draining = was_draining
            context.abort(grpc.StatusCode.INTERNAL, _hook_failure("snapshot", self.runtime.plugin, exc))
        self._quiesced = self._quiesced or not was_draining
        return pb.SnapshotReply(state=state)

    def Restore(self, request: pb.RestoreRequest, context: grpc.ServicerContext) -> pb.RestoreReply:
        """Receive the previous version's state (an empty one is none); re-open an instance Snapshot quiesced."""
        if request.state:
            try:
                self.runtime.plugin.restore(json.loads(request.state.decode()))
            except Exception as exc:
                context.abort(grpc.StatusCode.INTERNAL, _hook_failure("restore", self.runtime.plugin, exc))
        if self._quiesced:
            self._quiesced = False
            self.runtime.draining = False
        return pb.RestoreReply()

    def Shutdown(self, request: pb.ShutdownRequest, context: grpc.ServicerContext) -> pb.ShutdownReply:
        """Drain in the background and exit."""
        threading.Thread(target=self.on_shutdown, args=(request.grace_seconds or 5.0,), daemon=True).start()
        return pb.ShutdownReply()


AUTHORIZATION_METADATA_KEY = "authorization"


class TokenAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every call but health checks unless it carries `authorization: Bearer <token>`.

    Over a Unix socket the directory permissions already limit who can connect; over TCP (a pod in a
    cluster) the token the orchestrator generated for this instance is what authenticates it.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

        def deny(request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong sysops instance token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        """Let health checks and authenticated calls through."""
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if hmac.compare_digest(str(metadata.get(AUTHORIZATION_METADATA_KEY, "")), self._expected):
            return continuation(handler_call_details)
        return self._deny


class PluginServer:
    """Owns the gRPC server, the health status and the orderly shutdown of one plugin instance."""

    def __init__(self, runtime: PluginRuntime, listen: str, token: str = "") -> None:
        self.runtime = runtime
        self.listen = listen
        self.health = health.HealthServicer()
        interceptors = [TokenAuthInterceptor(token)] if token else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), interceptors=interceptors)
        self._stopped = threading.Event()
        self._shutdown_lock = threading.Lock()
        #: The process exit code `serve` returns (non-zero when a service loop's policy restarts the instance).
        self.exit_code = 0
        plugin = runtime.plugin
        self.service = ServiceLoop(plugin, self.health, self.exit_with) if isinstance(plugin, ServicePlugin) else None
        pb_grpc.add_PluginServiceServicer_to_server(PluginServicer(runtime, self.shutdown), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def start(self) -> None:
        """Bind, start serving and report SERVING."""
        socket_path = self.listen.removeprefix("unix://") if self.listen.startswith("unix://") else ""
        if socket_path and os.path.exists(socket_path):
            os.unlink(socket_path)
        previous_umask = os.umask(0o077)  # the socket is 0600 from the moment it exists
        try:
            if self.server.add_insecure_port(self.listen) == 0:
                raise OSError(f"cannot listen on {self.listen}")
            self.server.start()
        finally:
            os.umask(previous_umask)
        if socket_path:
            os.chmod(socket_path, 0o600)  # only the plugin's uid and root (the orchestrator) may connect
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def start_service(self) -> None:
        """Start a service plugin's loop (nothing for other plugins)."""
        if self.service is not None:
            self.service.start()

    def exit_with(self, code: int) -> None:
        """Shut down in the background and make the process exit with `code`."""
        self.exit_code = code
        threading.Thread(target=self.shutdown, args=(0.8,), daemon=True).start()

    def shutdown(self, grace_seconds: float) -> None:
        """Stop taking invocations and a service loop, wait for in-flight calls, clean up, stop the server."""
        with self._shutdown_lock:
            if self._stopped.is_set():
                return
            self.runtime.draining = True
            self.health.enter_graceful_shutdown()
            deadline = time.monotonic() + grace_seconds  # one grace for the loop and the calls together
            if self.service is not None:
                self.service.stop(grace_seconds)
            self.runtime.wait_idle(max(0.0, deadline - time.monotonic()))
            try:
                self.runtime.plugin.cleanup()
            except Exception:
                traceback.print_exc(file=sys.stderr)
            self.server.stop(grace=min(grace_seconds, 0.5)).wait()
            self._stopped.set()

    def wait(self) -> None:
        """Block until shut down."""
        self._stopped.wait()


def _fail(code: int, message: str) -> int:
    print(f"sysops-plugin: {message}", file=sys.stderr, flush=True)
    return code


def serve(entrypoint: str, listen: str, token: str = "") -> int:
    """Run a plugin until it is shut down; return the process exit code."""
    install_interruptible_sleep()  # before the plugin's `from time import sleep` binds the original
    try:
        use_dev_code(os.path.dirname(listen.removeprefix("unix://")) if listen.startswith("unix://") else "")
        plugin_class = load_plugin_class(entrypoint)
        plugin = plugin_class()
        runtime = PluginRuntime(plugin)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _fail(EXIT_ENTRYPOINT, str(exc))
    try:
        plugin.initialize()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return _fail(EXIT_INITIALIZE, f"initialize() of plugin {plugin.name!r} failed: {type(exc).__name__}: {exc}")
    server = PluginServer(runtime, listen, token)
    try:
        start_reaper()
        server.start()
    except Exception as exc:
        return _fail(EXIT_SERVE, f"cannot serve on {listen}: {exc}")

    def on_signal(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, args=(0.8,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"sysops-plugin: {plugin.name} {plugin.version} serving on {listen}", file=sys.stderr, flush=True)
    server.start_service()  # after the serving line: a loop's stop line follows it in the log
    server.wait()
    return server.exit_code


def main() -> int:
    """Entry point of the plugin container: configuration comes from the environment."""
    entrypoint = os.environ.get("SYSOPS_ENTRYPOINT", "")
    listen = os.environ.get("SYSOPS_LISTEN", "unix:///run/sysops/plugin.sock")
    if not entrypoint:
        return _fail(EXIT_ENTRYPOINT, "SYSOPS_ENTRYPOINT is not set (expected 'package.module:ClassName')")
    return serve(entrypoint, listen, os.environ.get("SYSOPS_TOKEN", ""))
